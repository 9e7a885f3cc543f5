import { useState } from 'react';
import { gatewayFetch, getJson, type Project } from '../api';
import { ErrorPanel, useLoad } from '../components';

interface QuarantinedStudy {
  study_uid: string;
  num_series: number;
  num_instances: number;
  called_aets: string[];
  calling_aets: string[];
  reasons: string[];
  last_received: string;
}

/**
 * Studies that arrived without a matching routing rule (global administrators): where they came from, why they wait,
 * and assignment to a project. Identifiers only: the API lists no names or descriptions.
 */
export function QuarantinePage() {
  const [version, setVersion] = useState(0);
  const { data, error, loading } = useLoad(
    () =>
      Promise.all([
        getJson<{ total: number; studies: QuarantinedStudy[] }>('/api/quarantine?limit=100'),
        getJson<Project[]>('/api/projects'),
      ]),
    [version],
  );
  const [target, setTarget] = useState<Record<string, string>>({});
  const [done, setDone] = useState<string>();
  const [actionError, setActionError] = useState<unknown>();

  const assign = async (studyUid: string, project: string) => {
    setActionError(undefined);
    setDone(undefined);
    try {
      const res = await gatewayFetch('/api/quarantine/assign', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify({ project, studyUid }),
      });
      const out = (await res.json()) as { assigned?: number };
      setDone(`Assigned ${out.assigned ?? 0} instances of study ${studyUid} to ${project}.`);
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    }
  };

  if (error !== undefined) return <ErrorPanel error={error} />;
  if (loading || !data) return <p className="muted">Loading…</p>;
  const [{ total, studies }, projects] = data;
  return (
    <section>
      <h1>Quarantine</h1>
      <p>
        {total} {total === 1 ? 'study waits' : 'studies wait'} for a project.
      </p>
      {done && (
        <p className="notice" id="assign-done" role="status">
          {done}
        </p>
      )}
      {actionError !== undefined && <ErrorPanel error={actionError} />}
      {studies.length > 0 && (
        <table id="quarantine">
          <thead>
            <tr>
              <th>Study UID</th>
              <th className="num">Series</th>
              <th className="num">Instances</th>
              <th>From (calling → called AE)</th>
              <th>Why</th>
              <th>Last received</th>
              <th>Assign to</th>
            </tr>
          </thead>
          <tbody>
            {studies.map((s) => (
              <tr key={s.study_uid} data-study={s.study_uid}>
                <td>{s.study_uid}</td>
                <td className="num">{s.num_series}</td>
                <td className="num">{s.num_instances}</td>
                <td>
                  {s.calling_aets.join(', ')} → {s.called_aets.join(', ')}
                </td>
                <td>{s.reasons.join('; ')}</td>
                <td>{new Date(s.last_received).toLocaleString()}</td>
                <td>
                  <select
                    name="project"
                    value={target[s.study_uid] ?? ''}
                    onChange={(e) => setTarget({ ...target, [s.study_uid]: e.target.value })}
                  >
                    <option value="">choose a project</option>
                    {projects.map((p) => (
                      <option key={p.id} value={p.id}>
                        {p.id}
                      </option>
                    ))}
                  </select>{' '}
                  <button
                    data-action="assign"
                    disabled={!target[s.study_uid]}
                    onClick={() => void assign(s.study_uid, target[s.study_uid])}
                  >
                    Assign
                  </button>
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
