import { useState, type FormEvent } from 'react';
import { gatewayFetch, getJson } from '../api';
import { ErrorPanel, useLoad } from '../components';

interface ShareLink {
  id: string;
  studyUid: string | null;
  seriesUid: string | null;
  createdAt: string;
  expiresAt: string;
  description: string;
  status: 'active' | 'expired' | 'revoked';
}

const EXPIRY = [
  ['1h', '1 hour'],
  ['1d', '1 day'],
  ['7d', '7 days'],
  ['30d', '30 days'],
] as const;

/**
 * The link a person receives: the application's shared view with the token in the fragment, which browsers never
 * send to a server nor put in a Referer (the gateway's DICOMweb URL for the same link is shown too, for tools).
 */
export function shareViewUrl(token: string): string {
  return `${location.origin}/#/share/${token}`;
}

/** Curators' share links of a project: create (study, series or the whole project, with an expiry), copy, list, revoke. */
export function SharesPage({ project, study }: { project: string; study?: string }) {
  const base = `/api/projects/${encodeURIComponent(project)}/shares`;
  const [version, setVersion] = useState(0);
  const { data, error, loading } = useLoad(() => getJson<ShareLink[]>(base), [base, version]);
  const [studyUid, setStudyUid] = useState(study ?? '');
  const [seriesUid, setSeriesUid] = useState('');
  const [expiresIn, setExpiresIn] = useState('7d');
  const [description, setDescription] = useState('');
  const [created, setCreated] = useState<{ url: string; dicomweb: string }>();
  const [copied, setCopied] = useState(false);
  const [actionError, setActionError] = useState<unknown>();

  const create = async (e: FormEvent) => {
    e.preventDefault();
    setActionError(undefined);
    setCopied(false);
    try {
      const body = {
        expiresIn,
        ...(studyUid.trim() ? { studyUid: studyUid.trim() } : {}),
        ...(seriesUid.trim() ? { seriesUid: seriesUid.trim() } : {}),
        ...(description.trim() ? { description: description.trim() } : {}),
      };
      const res = await gatewayFetch(base, {
        method: 'POST',
        headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
        body: JSON.stringify(body),
      });
      const link = (await res.json()) as { token: string; dicomwebUrl: string };
      setCreated({ url: shareViewUrl(link.token), dicomweb: link.dicomwebUrl });
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    }
  };

  const revoke = async (id: string) => {
    setActionError(undefined);
    try {
      await gatewayFetch(`${base}/${encodeURIComponent(id)}`, { method: 'DELETE' });
      setVersion((v) => v + 1);
    } catch (err) {
      setActionError(err);
    }
  };

  const copy = async () => {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.url);
      setCopied(true);
    } catch {
      // Clipboard refused (no permission): the link stays selected in its field to copy by hand.
      (document.getElementById('share-url') as HTMLInputElement | null)?.select();
    }
  };

  return (
    <section>
      <h1>Share links of {project}</h1>
      <form className="filters" id="share-form" onSubmit={(e) => void create(e)}>
        <label>
          Study UID (empty: the whole project)
          <input name="studyUid" value={studyUid} onChange={(e) => setStudyUid(e.target.value)} />
        </label>
        <label>
          Series UID (optional)
          <input name="seriesUid" value={seriesUid} onChange={(e) => setSeriesUid(e.target.value)} />
        </label>
        <label>
          Expires in
          <select name="expiresIn" value={expiresIn} onChange={(e) => setExpiresIn(e.target.value)}>
            {EXPIRY.map(([v, l]) => (
              <option key={v} value={v}>
                {l}
              </option>
            ))}
          </select>
        </label>
        <label>
          Note (no patient names)
          <input name="description" value={description} onChange={(e) => setDescription(e.target.value)} />
        </label>
        <button type="submit" id="create-share">
          Create link
        </button>
      </form>
      {actionError !== undefined && <ErrorPanel error={actionError} />}
      {created && (
        <div className="created" id="share-created">
          <p>
            Anyone with this link can view what it covers until it expires or is revoked. It is shown only
            now.
          </p>
          <input id="share-url" readOnly value={created.url} size={90} />{' '}
          <button id="copy-share" onClick={() => void copy()}>
            {copied ? 'Copied' : 'Copy'}
          </button>
          <p className="muted">
            DICOMweb root for tools: <code>{created.dicomweb}</code>
          </p>
        </div>
      )}
      {error !== undefined && <ErrorPanel error={error} />}
      {loading && <p className="muted">Loading…</p>}
      {data && data.length === 0 && <p>No share links yet.</p>}
      {data && data.length > 0 && (
        <table id="shares">
          <thead>
            <tr>
              <th>Covers</th>
              <th>Note</th>
              <th>Created</th>
              <th>Expires</th>
              <th>Status</th>
              <th />
            </tr>
          </thead>
          <tbody>
            {data.map((l) => (
              <tr key={l.id} data-share={l.id} data-status={l.status}>
                <td>
                  {l.seriesUid
                    ? `series ${l.seriesUid}`
                    : l.studyUid
                      ? `study ${l.studyUid}`
                      : 'the whole project'}
                </td>
                <td>{l.description}</td>
                <td>{new Date(l.createdAt).toLocaleString()}</td>
                <td>{new Date(l.expiresAt).toLocaleString()}</td>
                <td data-col="status">{l.status}</td>
                <td>
                  {l.status === 'active' && (
                    <button data-action="revoke" onClick={() => void revoke(l.id)}>
                      Revoke
                    </button>
                  )}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      )}
    </section>
  );
}
