import { getJson, type Project } from '../api';
import { ErrorPanel, useLoad } from '../components';

/** Roles that may store into a project (each role includes the ones below it). */
const STORE_ROLES = new Set(['contributor', 'curator', 'admin']);

/** Roles that may create share links. */
const SHARE_ROLES = new Set(['curator', 'admin']);

/** The projects the user can read, with their sizes and the user's role in each. */
export function ProjectsPage() {
  const { data, error, loading } = useLoad(() => getJson<Project[]>('/api/projects'), []);
  return (
    <section>
      <h1>Your projects</h1>
      {error !== undefined && <ErrorPanel error={error} />}
      {loading && <p className="muted">Loading…</p>}
      {data && data.length === 0 && (
        <p id="no-projects">
          You are not a member of any project yet. Ask a project administrator to add you.
        </p>
      )}
      {data && data.length > 0 && (
        <table id="projects">
          <thead>
            <tr>
              <th>Project</th>
              <th>Name</th>
              <th className="num">Studies</th>
              <th className="num">Series</th>
              <th className="num">Instances</th>
              <th>Your role</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {data.map((p) => (
              <tr key={p.id} data-project={p.id}>
                <td>
                  <a href={`#/p/${encodeURIComponent(p.id)}/studies`}>{p.id}</a>
                </td>
                <td>{p.name}</td>
                <td className="num" data-col="studies">
                  {p.num_studies}
                </td>
                <td className="num">{p.num_series}</td>
                <td className="num">{p.num_instances}</td>
                <td data-col="role">{p.roles.join(', ')}</td>
                <td>
                  {p.roles.some((r) => STORE_ROLES.has(r)) && (
                    <a href={`#/p/${encodeURIComponent(p.id)}/upload`} data-action="upload">
                      Upload
                    </a>
                  )}{' '}
                  {p.roles.some((r) => SHARE_ROLES.has(r)) && (
                    <a href={`#/p/${encodeURIComponent(p.id)}/shares`} data-action="shares">
                      Share links
                    </a>
                  )}{' '}
                  {p.roles.some((r) => SHARE_ROLES.has(r)) && (
                    <a href={`#/p/${encodeURIComponent(p.id)}/cohorts`} data-action="cohorts">
                      Cohorts
                    </a>
                  )}{' '}
                  {p.roles.includes('admin') && (
                    <a href={`#/p/${encodeURIComponent(p.id)}/audit`} data-action="audit">
                      Audit trail
                    </a>
                  )}{' '}
                  {p.roles.includes('admin') && (
                    <a href={`#/p/${encodeURIComponent(p.id)}/routing`} data-action="routing">
                      Routing rules
                    </a>
                  )}{' '}
                  <a href={`#/p/${encodeURIComponent(p.id)}/runs`} data-action="runs">
                    Pipelines
                  </a>{' '}
                  <a href={`#/p/${encodeURIComponent(p.id)}/records`} data-action="records">
                    Records
                  </a>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
