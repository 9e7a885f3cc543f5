import { useState, type FormEvent } from 'react';
import { gatewayFetch, getJson } from '../api';
import { ErrorPanel, useLoad } from '../components';

interface AuditEvent {
  id: string;
  at: string;
  principal: string;
  action: string;
  project_id: string | null;
  study_uid: string | null;
  series_uid: string | null;
  outcome: number;
  method: string;
  route: string;
}

interface Filters {
  from: string;
  to: string;
  principal: string;
  action: string;
  study: string;
  outcome: string;
}
const EMPTY: Filters = { from: '', to: '', principal: '', action: '', study: '', outcome: '' };
const PAGE = 100;

function auditQuery(f: Filters): URLSearchParams {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(f)) if (v.trim()) q.set(k, v.trim());
  return q;
}

/** The audit trail of a project (its admins) or of everything (global admins): filters, older pages, CSV export. */
export function AuditPage({ project }: { project?: string }) {
  const base = project ? `/api/projects/${encodeURIComponent(project)}/audit` : '/api/audit';
  const [draft, setDraft] = useState<Filters>(EMPTY);
  const [filters, setFilters] = useState<Filters>(EMPTY);
  const [before, setBefore] = useState<string[]>([]);
  const [exportError, setExportError] = useState<unknown>();
  const { data, error, loading } = useLoad(() => {
    const q = auditQuery(filters);
    q.set('limit', String(PAGE));
    if (before.length) q.set('before', before[before.length - 1]);
    return getJson<AuditEvent[]>(`${base}?${q.toString()}`);
  }, [base, filters, before]);

  const submit = (e: FormEvent) => {
    e.preventDefault();
    setBefore([]);
    setFilters({ ...draft });
  };
  const exportCsv = async () => {
    setExportError(undefined);
    try {
      const q = auditQuery(filters);
      q.set('format', 'csv');
      const res = await gatewayFetch(`${base}?${q.toString()}`, { headers: { Accept: 'text/csv' } });
      const url = URL.createObjectURL(await res.blob());
      const a = document.createElement('a');
      a.href = url;
      a.download = `audit-${project ?? 'all'}.csv`;
      a.click();
      setTimeout(() => URL.revokeObjectURL(url), 60_000);
    } catch (err) {
      setExportError(err);
    }
  };
  const field = (key: keyof Filters, label: string, type = 'text') => (
    <label>
      {label}
      <input
        name={key}
        type={type}
        value={draft[key]}
        onChange={(e) => setDraft({ ...draft, [key]: e.target.value })}
      />
    </label>
  );
  return (
    <section>
      <h1>{project ? `Audit trail of ${project}` : 'Audit trail'}</h1>
      <form className="filters" id="audit-filters" onSubmit={submit}>
        {field('from', 'From', 'date')}
        {field('to', 'To', 'date')}
        {field('principal', 'Who')}
        {field('action', 'Action')}
        {field('study', 'Study UID')}
        {field('outcome', 'Outcome (e.g. 404, 4xx)')}
        <button type="submit" id="audit-search">
          Filter
        </button>
        <button type="button" id="audit-csv" onClick={() => void exportCsv()}>
          Export CSV
        </button>
      </form>
      {exportError !== undefined && <ErrorPanel error={exportError} />}
      {error !== undefined && <ErrorPanel error={error} />}
      {loading && <p className="muted">Loading…</p>}
      {data && data.length === 0 && <p id="no-events">No event matches these filters.</p>}
      {data && data.length > 0 && (
        <table id="audit">
          <thead>
            <tr>
              <th>When</th>
              <th>Who</th>
              <th>Action</th>
              <th>Project</th>
              <th>Study</th>
              <th className="num">Outcome</th>
              <th>Request</th>
            </tr>
          </thead>
          <tbody>
            {data.map((e) => (
              <tr key={e.id} data-action={e.action}>
                <td>{new Date(e.at).toLocaleString()}</td>
                <td data-col="principal">{e.principal}</td>
                <td data-col="action">{e.action}</td>
                <td>{e.project_id ?? ''}</td>
                <td>{e.study_uid ?? ''}</td>
                <td className="num" data-col="outcome">
                  {e.outcome}
                </td>
                <td>
                  {e.method} {e.route}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
      <div className="pager">
        <button
          id="audit-newer"
          disabled={before.length === 0 || loading}
          onClick={() => setBefore(before.slice(0, -1))}
        >
          Newer
        </button>
        <button
          id="audit-older"
          disabled={loading || !data || data.length < PAGE}
          onClick={() => data && setBefore([...before, data[data.length - 1].id])}
        >
          Older
        </button>
      </div>
    </section>
  );
}
