import { useEffect, useState } from 'react';
import { gatewayFetch, UserFacingError } from './api';

/** An error in words: what happened and what to do. */
export function ErrorPanel({ error }: { error: unknown }) {
  const e =
    error instanceof UserFacingError
      ? error
      : new UserFacingError(
          0,
          'Something went wrong in this page.',
          'Reload the page; if it keeps happening, tell the administrators.',
        );
  return (
    <div className="error" role="alert">
      <strong>{e.message}</strong> <span>{e.advice}</span>
    </div>
  );
}

/**
 * A thumbnail fetched with the user's token (an <img src> cannot send it) and shown from a blob: URL, released when
 * the row leaves the page.
 */
export function Thumbnail({ path, label }: { path: string; label: string }) {
  const [src, setSrc] = useState<string>();
  const [failed, setFailed] = useState(false);
  useEffect(() => {
    let url: string | undefined;
    let cancelled = false;
    gatewayFetch(path, { headers: { Accept: 'image/jpeg' } })
      .then((r) => r.blob())
      .then((b) => {
        if (cancelled) return;
        url = URL.createObjectURL(b);
        setSrc(url);
      })
      .catch(() => !cancelled && setFailed(true));
    return () => {
      cancelled = true;
      if (url) URL.revokeObjectURL(url);
    };
  }, [path]);
  if (failed) return <span className="thumb thumb-none" title="No preview for this item" />;
  if (!src) return <span className="thumb thumb-loading" />;
  return <img className="thumb" src={src} alt={label} />;
}

/** Loads data for a page; `reload` runs it again. */
export function useLoad<T>(
  load: () => Promise<T>,
  deps: unknown[],
): { data?: T; error?: unknown; loading: boolean } {
  const [state, setState] = useState<{ data?: T; error?: unknown; loading: boolean }>({ loading: true });
  useEffect(() => {
    let cancelled = false;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => !cancelled && setState({ data, loading: false }),
      (error: unknown) => !cancelled && setState({ error, loading: false }),
    );
    return () => {
      cancelled = true;
    };
  }, deps);
  return state;
}
