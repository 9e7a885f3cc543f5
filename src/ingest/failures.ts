/**
 * Telling an unavailable dependency (wait for it) from an object that cannot be indexed (set it aside, answer its
 * failure): shared by STOW, the change feed and reindex.
 */
import { AppError, isDatabaseUnavailable } from '../errors';
import { OrthancHttpError } from '../orthanc/client';

/**
 * Whether an error says the archive or the database is unavailable (worth waiting for, holding the feed), rather
 * than that this object cannot be indexed. PostgreSQL data errors (class 22, e.g. 22P05 bad text, 22003 number out
 * of range, 22P02 bad input) and constraint violations (23) are the object's fault; connection loss (08),
 * insufficient resources (53), operator intervention (57), system errors (58), internal errors (XX) and transaction
 * rollbacks such as deadlocks (40) are not. Orthanc answering an HTTP error about one instance is the instance's
 * fault unless it is a gateway status (502, 503, 504: what a load balancer in front of several Orthancs answers while
 * one dies); Orthanc not answering, or closing a connection in the middle of an answer (undici's socket errors, a
 * body that ends early), is infrastructure. Setting an object aside for a passing outage would hide it for good.
 */
export function isInfrastructureError(err: unknown, depth = 0): boolean {
  if (err instanceof OrthancHttpError) return [502, 503, 504].includes(err.upstreamStatus);
  if (err instanceof AppError) return err.status === 502 || err.status === 503 || err.status === 504;
  // The error middleware's test for an unreachable database (503 there), then what else is worth waiting for here.
  if (isDatabaseUnavailable(err)) return true;
  const e = err as { code?: unknown; message?: unknown };
  if (typeof e?.code === 'string') {
    // Node socket errors (ECONNREFUSED, ECONNRESET, EPIPE ...); no SQLSTATE class starts with E.
    if (/^E[A-Z]+$/.test(e.code)) return true;
    // undici: the connection closed or timed out (not UND_ERR_ABORTED: the gateway's own abort).
    if (/^UND_ERR_(SOCKET|CLOSED|DESTROYED|HEADERS_TIMEOUT|BODY_TIMEOUT|CONNECT_TIMEOUT)$/.test(e.code))
      return true;
    if (/^[0-9A-Z]{5}$/.test(e.code)) return /^(08|40|53|57|58|XX)/.test(e.code);
  }
  if (
    /Connection terminated|connection.*(closed|ended)|Client has encountered a connection error|timeout exceeded when trying to connect|Client was closed|^terminated$|other side closed/i.test(
      String(e?.message ?? ''),
    )
  )
    return true;
  // fetch and streams wrap the socket error: look one level down.
  const cause = (err as { cause?: unknown })?.cause;
  return depth < 2 && cause !== undefined && cause !== err && isInfrastructureError(cause, depth + 1);
}

/** A reason for an index failure that names the error's kind, never its text (which can quote data values). */
export function failureMessage(err: unknown): string {
  const code = (err as { code?: unknown })?.code;
  if (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code)) {
    return `the index refused the object (SQLSTATE ${code})`;
  }
  if (err instanceof AppError) return `indexing failed: ${err.code}`;
  const name = err instanceof Error ? err.name.replace(/[^A-Za-z]/g, '').slice(0, 40) : 'error';
  return `indexing failed (${name || 'error'})`;
}
