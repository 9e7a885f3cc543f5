import type { User } from 'oidc-client-ts';
import { useEffect, useState } from 'react';
import { login, logout, onUserChange, type WebConfig } from './auth';
import { ProjectsPage } from './pages/Projects';
import { StudiesPage } from './pages/Studies';
import { StudyPage } from './pages/Study';
import { AuditPage } from './pages/Audit';
import { JobsPage } from './pages/Jobs';
import { NewProjectPage } from './pages/NewProject';
import { QuarantinePage } from './pages/Quarantine';
import { RoutingPage } from './pages/Routing';
import { RunsPage } from './pages/Runs';
import { SharesPage } from './pages/Shares';
import { UploadPage } from './pages/Upload';
import { RecordsPage, SubjectPage } from './pages/Records';
import { CohortPage, CohortsPage, CohortWizardPage } from './pages/Cohorts';

/**
 * Routes live in the hash and hold only project ids and UIDs: search filters (patient names) stay in page state, so
 * nothing identifying lands in the browser history, the address bar or a Referer.
 */
type Route =
  | { page: 'projects' }
  | { page: 'studies'; project?: string }
  | { page: 'study'; project?: string; study: string }
  | { page: 'upload'; project: string }
  | { page: 'shares'; project: string; study?: string }
  | { page: 'audit'; project?: string }
  | { page: 'quarantine' }
  | { page: 'new-project' }
  | { page: 'jobs' }
  | { page: 'routing'; project: string }
  | { page: 'runs'; project: string }
  | { page: 'shared'; token: string; study?: string }
  | { page: 'cohorts'; project: string }
  | { page: 'cohort-new'; project: string }
  | { page: 'cohort'; cohort: string }
  | { page: 'records'; project: string }
  | { page: 'subject'; project: string; subject: string }
  | { page: 'unknown' };

function parseRoute(hash: string): Route {
  const parts = hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  if (parts.length === 0) return { page: 'projects' };
  if (parts[0] === 'studies' && parts.length === 1) return { page: 'studies' };
  if (parts[0] === 'studies' && parts.length === 2) return { page: 'study', study: parts[1] };
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'studies')
    return { page: 'studies', project: parts[1] };
  if (parts[0] === 'quarantine' && parts.length === 1) return { page: 'quarantine' };
  if (parts[0] === 'new-project' && parts.length === 1) return { page: 'new-project' };
  if (parts[0] === 'jobs' && parts.length === 1) return { page: 'jobs' };
  if (parts[0] === 'audit' && parts.length === 1) return { page: 'audit' };
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'audit')
    return { page: 'audit', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'routing')
    return { page: 'routing', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'runs')
    return { page: 'runs', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'cohorts')
    return { page: 'cohorts', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 4 && parts[2] === 'cohorts' && parts[3] === 'new')
    return { page: 'cohort-new', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'records')
    return { page: 'records', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 5 && parts[2] === 'records' && parts[3] === 'subjects')
    return { page: 'subject', project: parts[1], subject: parts[4] };
  if (parts[0] === 'cohorts' && parts.length === 2) return { page: 'cohort', cohort: parts[1] };
  if (parts[0] === 'share' && parts.length === 2) return { page: 'shared', token: parts[1] };
  if (parts[0] === 'share' && parts.length === 4 && parts[2] === 'studies') {
    return { page: 'shared', token: parts[1], study: parts[3] };
  }
  if (parts[0] === 'p' && parts[2] === 'shares' && parts.length <= 4) {
    return { page: 'shares', project: parts[1], study: parts[3] };
  }
  if (parts[0] === 'p' && parts.length === 3 && parts[2] === 'upload')
    return { page: 'upload', project: parts[1] };
  if (parts[0] === 'p' && parts.length === 4 && parts[2] === 'studies') {
    return { page: 'study', project: parts[1], study: parts[3] };
  }
  return { page: 'unknown' };
}

/**
 * Whether the access token carries the realm role the gateway treats as global administrator. Only decides which
 * links to show: the API decides what is allowed. (The ID token has no roles; the access token's payload does.)
 */
function isGlobalAdmin(user: User | null): boolean {
  try {
    const part = user?.access_token.split('.')[1] ?? '';
    const json = atob(part.replace(/-/g, '+').replace(/_/g, '/'));
    const roles = (JSON.parse(json) as { realm_access?: { roles?: unknown } }).realm_access?.roles;
    return Array.isArray(roles) && roles.includes('aperture-admin');
  } catch {
    return false;
  }
}

export function App({ config, initialUser }: { config: WebConfig; initialUser: User | null }) {
  const [user, setUser] = useState<User | null>(initialUser);
  const [route, setRoute] = useState<Route>(() => parseRoute(location.hash));
  useEffect(() => onUserChange(setUser), []);
  useEffect(() => {
    const onHash = () => setRoute(parseRoute(location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);

  if (route.page === 'shared') {
    // A share link needs no account: it opens read-only what it covers, in any (private) window.
    return (
      <>
        <header>
          <span className="brand">Aperture</span>
          <nav>
            <a href={`#/share/${route.token}`}>Shared studies</a>
          </nav>
        </header>
        <main>
          {route.study ? (
            <StudyPage share={route.token} study={route.study} />
          ) : (
            <StudiesPage key={route.token} share={route.token} />
          )}
        </main>
      </>
    );
  }
  if (config.authEnabled && !user) {
    return (
      <main className="signin">
        <h1>Aperture</h1>
        <p>Research imaging archive. Sign in with your institution account to see your projects.</p>
        <button id="sign-in" onClick={() => void login()}>
          Sign in
        </button>
      </main>
    );
  }
  const name = String(user?.profile.preferred_username ?? '');
  return (
    <>
      <header>
        <a href="#/" className="brand">
          Aperture
        </a>
        <nav>
          <a href="#/">Projects</a>
          <a href="#/studies">All studies</a>
          {isGlobalAdmin(user) && <a href="#/new-project">New project</a>}
          {isGlobalAdmin(user) && <a href="#/quarantine">Quarantine</a>}
          {isGlobalAdmin(user) && <a href="#/jobs">Jobs</a>}
          {isGlobalAdmin(user) && <a href="#/audit">Audit trail</a>}
        </nav>
        {config.authEnabled && (
          <span className="who">
            Signed in as <strong id="username">{name}</strong>{' '}
            <button id="sign-out" onClick={() => void logout()}>
              Sign out
            </button>
          </span>
        )}
      </header>
      <main>
        {route.page === 'projects' && <ProjectsPage />}
        {route.page === 'studies' && <StudiesPage key={route.project ?? ''} project={route.project} />}
        {route.page === 'study' && (
          <StudyPage project={route.project} study={route.study} viewer={config.viewer} />
        )}
        {route.page === 'quarantine' && <QuarantinePage />}
        {route.page === 'new-project' && <NewProjectPage />}
        {route.page === 'jobs' && <JobsPage />}
        {route.page === 'routing' && <RoutingPage key={route.project} project={route.project} />}
        {route.page === 'runs' && <RunsPage key={route.project} project={route.project} />}
        {route.page === 'audit' && <AuditPage key={route.project ?? ''} project={route.project} />}
        {route.page === 'shares' && (
          <SharesPage key={route.project} project={route.project} study={route.study} />
        )}
        {route.page === 'upload' && <UploadPage key={route.project} project={route.project} />}
        {route.page === 'cohorts' && <CohortsPage key={route.project} project={route.project} />}
        {route.page === 'cohort-new' && <CohortWizardPage key={route.project} project={route.project} />}
        {route.page === 'cohort' && <CohortPage key={route.cohort} cohort={route.cohort} />}
        {route.page === 'records' && <RecordsPage key={route.project} project={route.project} />}
        {route.page === 'subject' && (
          <SubjectPage key={route.subject} project={route.project} subject={route.subject} />
        )}
        {route.page === 'unknown' && (
          <div className="error" role="alert">
            <strong>This page does not exist.</strong> <a href="#/">Go to your projects.</a>
          </div>
        )}
      </main>
    </>
  );
}
