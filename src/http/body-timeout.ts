/**
 * Idle and total timeouts on a request body (issue 8, defect 14). The body is read through a stream that fails
 * with RequestTimeoutError when the client stops sending, so the reader (STOW) can still answer with what it
 * stored; the request itself is not destroyed, which would cut the connection before that answer.
 */
import type { IncomingMessage } from 'node:http';
import { PassThrough, type Readable } from 'node:stream';
import { AppError } from '../errors';

/** The client stopped sending the body, or took longer than allowed for all of it. */
export class RequestTimeoutError extends AppError {
  constructor(message: string) {
    super(408, 'request_timeout', message, { Connection: 'close' });
  }
}

export interface BodyTimeouts {
  /** No bytes for this long fails the body. */
  idleMs: number;
  /** The whole body must arrive within this long, counted from `startedAt`. */
  totalMs: number;
  startedAt?: number;
}

/** The request body as a stream that errors with RequestTimeoutError on an idle or total timeout. */
export function timedBody(req: IncomingMessage | Readable, t: BodyTimeouts): Readable {
  const out = new PassThrough();
  const started = t.startedAt ?? Date.now();
  let idle: NodeJS.Timeout | undefined;
  let timedOut = false;
  const fail = (message: string) => {
    timedOut = true;
    cleanup();
    req.unpipe(out);
    // Stop reading; what the client still sends is discarded with the connection (Connection: close).
    req.pause();
    out.destroy(new RequestTimeoutError(message));
  };
  const total = setTimeout(
    () => fail(`the request body did not arrive within ${t.totalMs} ms`),
    Math.max(0, started + t.totalMs - Date.now()),
  );
  const arm = () => {
    if (idle) clearTimeout(idle);
    idle = setTimeout(() => fail(`no request body bytes for ${t.idleMs} ms`), t.idleMs);
  };
  const cleanup = () => {
    clearTimeout(total);
    if (idle) clearTimeout(idle);
    req.off('data', arm);
  };
  arm();
  req.on('data', arm);
  req.once('end', cleanup);
  req.once('error', (err) => {
    cleanup();
    out.destroy(err);
  });
  req.once('close', cleanup);
  out.once('close', () => {
    cleanup();
    // A reader that gave up for another reason (a limit) has drained what it wanted: as with the request itself,
    // the rest of the body is not read, and the connection goes.
    if (!timedOut && !req.readableEnded) req.destroy();
  });
  req.pipe(out);
  return out;
}
