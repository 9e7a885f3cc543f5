import { useEffect, useState } from 'react';
import { gatewayFetch, getJson } from '../api';
import { ErrorPanel, useLoad } from '../components';

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

const QUEUE_LABELS: Record<string, string> = {
  thumbnails: 'Thumbnails',
  cohorts: 'Cohort exports',
};

/** One job as GET /api/jobs/list gives it (identifiers only). */
interface JobView {
  kind: string;
  id: string;
  state: string;
  progress: number;
  attempts: number;
  max_attempts: number;
  failure?: string;
  created_at: string;
  finished_at?: string;
  subject: { series_uid?: string; cohort_id?: string };
  projects: string[];
}

/** How often the page asks again while it is open: enough to see a job move, little load on Redis. */
const POLL_MS = 2000;

const when = (iso?: string): string => (iso ? new Date(iso).toLocaleString() : '');

function subjectText(j: JobView): string {
  if (j.subject.series_uid) return `series ${j.subject.series_uid}`;
  if (j.subject.cohort_id) return `cohort ${j.subject.cohort_id}`;
  return '';
}

/**
 * Background jobs (global administrators): counts per queue, and single jobs with their state, progress, attempts
 * and failure reason, polled every two seconds; a failed job can be retried and a waiting one cancelled.
 */
export function JobsPage() {
  const [version, setVersion] = useState(0);
  const [tick, setTick] = useState(0);
  const [state, setState] = useState('');
  const [kind, setKind] = useState('');
  const [project, setProject] = useState('');
  const [actionError, setActionError] = useState<unknown>();
  const [busy, setBusy] = useState('');
  useEffect(() => {
    const t = setInterval(() => setTick((n) => n + 1), POLL_MS);
    return () => clearInterval(t);
  }, []);
  const counts = useLoad(
    () => getJson<{ queues: Record<string, Record<string, number>> }>('/api/jobs'),
    [version, tick],
  );
  const query = new URLSearchParams();
  if (state) query.set('state', state);
  if (kind) query.set('kind', kind);
  if (project.trim()) query.set('project', project.trim());
  query.set('limit', '50');
  const list = useLoad(
    () => getJson<{ jobs: JobView[]; truncated: boolean }>(`/api/jobs/list?${query.toString()}`),
    [version, tick, state, kind, project],
  );

  async function act(j: JobView, action: 'retry' | 'cancel') {
    setBusy(`${j.kind}/${j.id}`);
    setActionError(undefined);
    try {
      await gatewayFetch(`/api/jobs/${j.kind}/${encodeURIComponent(j.id)}/${action}`, { method: 'POST' });
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    } finally {
      setBusy('');
    }
  }

  if (counts.error !== undefined && !counts.data) return <ErrorPanel error={counts.error} />;
  if (!counts.data) return <p className="muted">Loading…</p>;
  return (
    <section>
      <h1>Background jobs</h1>
      <p>
        <button id="refresh-jobs" onClick={() => setVersion((v) => v + 1)}>
          Refresh
        </button>{' '}
        <span className="muted">The page updates itself every two seconds.</span>
      </p>
      <table id="jobs">
        <thead>
          <tr>
            <th>Queue</th>
            {STATES.map((s) => (
              <th key={s} className="num">
                {s}
              </th>
            ))}
          </tr>
        </thead>
        <tbody>
          {Object.entries(counts.data.queues).map(([name, c]) => (
            <tr key={name} data-queue={name}>
              <td>{QUEUE_LABELS[name] ?? name}</td>
              {STATES.map((s) => (
                <td key={s} className="num" data-col={s}>
                  {c[s] ?? 0}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>

      <h2>Jobs</h2>
      <form className="filters" id="job-filters" onSubmit={(e) => e.preventDefault()}>
        <label>
          State{' '}
          <select name="state" value={state} onChange={(e) => setState(e.target.value)}>
            <option value="">any</option>
            {STATES.map((s) => (
              <option key={s} value={s}>
                {s}
              </option>
            ))}
          </select>
        </label>
        <label>
          Kind{' '}
          <select name="kind" value={kind} onChange={(e) => setKind(e.target.value)}>
            <option value="">any</option>
            {Object.entries(QUEUE_LABELS).map(([k, l]) => (
              <option key={k} value={k}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <label>
          Project{' '}
          <input
            name="project"
            value={project}
            placeholder="project id"
            onChange={(e) => setProject(e.target.value)}
          />
        </label>
      </form>
      {actionError !== undefined && <ErrorPanel error={actionError} />}
      {list.error !== undefined && <ErrorPanel error={list.error} />}
      {list.data && list.data.jobs.length === 0 && (
        <p className="muted" id="no-jobs">
          No job matches these filters.
        </p>
      )}
      {list.data && list.data.jobs.length > 0 && (
        <table id="job-list">
          <thead>
            <tr>
              <th>Kind</th>
              <th>Job</th>
              <th>For</th>
              <th>Projects</th>
              <th>State</th>
              <th>Progress</th>
              <th className="num">Attempts</th>
              <th>Failure</th>
              <th>Created</th>
              <th>Finished</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {list.data.jobs.map((j) => (
              <tr key={`${j.kind}/${j.id}`} data-kind={j.kind} data-job={j.id} data-state={j.state}>
                <td>{QUEUE_LABELS[j.kind] ?? j.kind}</td>
                <td>{j.id}</td>
                <td data-col="subject" className="uid">
                  {subjectText(j)}
                </td>
                <td>{j.projects.join(', ')}</td>
                <td data-col="state">{j.state}</td>
                <td data-col="progress">
                  <progress max={100} value={j.progress} /> {j.progress}%
                </td>
                <td className="num" data-col="attempts">
                  {j.attempts} of {j.max_attempts}
                </td>
                <td data-col="failure">{j.failure ?? ''}</td>
                <td>{when(j.created_at)}</td>
                <td>{when(j.finished_at)}</td>
                <td>
                  {j.state === 'failed' && (
                    <button data-action="retry" disabled={busy !== ''} onClick={() => void act(j, 'retry')}>
                      Retry
                    </button>
                  )}
                  {['waiting', 'prioritized', 'delayed', 'failed'].includes(j.state) ||
                  (j.state === 'active' && j.kind === 'cohorts') ? (
                    <button data-action="cancel" disabled={busy !== ''} onClick={() => void act(j, 'cancel')}>
                      {j.state === 'failed' ? 'Discard' : 'Cancel'}
                    </button>
                  ) : null}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      {list.data?.truncated && (
        <p className="muted">
          Only the newest jobs of each queue were looked at; narrow the filters to see older ones.
        </p>
      )}
    </section>
  );
}
