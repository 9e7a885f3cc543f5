import { useState } from 'react';
import { getJson } from '../api';
import { ErrorPanel, useLoad } from '../components';

const STATES = ['waiting', 'prioritized', 'delayed', 'active', 'completed', 'failed'] as const;

const QUEUE_LABELS: Record<string, string> = {
  thumbnails: 'Thumbnails',
  cohorts: 'Cohort exports',
};

/**
 * Background jobs (global administrators): how many jobs wait, run, finished and failed in each queue, from
 * GET /api/jobs. Counts only: the API offers no per-job listing or retry for these queues yet.
 */
export function JobsPage() {
  const [version, setVersion] = useState(0);
  const { data, error, loading } = useLoad(
    () => getJson<{ queues: Record<string, Record<string, number>> }>('/api/jobs'),
    [version],
  );
  if (error !== undefined) return <ErrorPanel error={error} />;
  if (loading || !data) return <p className="muted">Loading…</p>;
  return (
    <section>
      <h1>Background jobs</h1>
      <p>
        <button id="refresh-jobs" onClick={() => setVersion((v) => v + 1)}>
          Refresh
        </button>
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
          {Object.entries(data.queues).map(([name, counts]) => (
            <tr key={name} data-queue={name}>
              <td>{QUEUE_LABELS[name] ?? name}</td>
              {STATES.map((s) => (
                <td key={s} className="num" data-col={s}>
                  {counts[s] ?? 0}
                </td>
              ))}
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
