/** Sending streamed bodies from Koa, and tying archive requests to the client's connection. */
import type { Context } from 'koa';
import { PassThrough, type Readable } from 'node:stream';
import { AppError, errSummary, loggablePath } from '../errors';
import type { Logger } from '../logger';
import type { AuditDetail } from '../services';

/**
 * An AbortSignal that fires when the client goes away before the answer is complete, so that archive requests
 * still being opened are cancelled (streams already flowing are destroyed with the response body). The response's
 * `close` is the one event that means "client gone": the request's `close` also fires once its body is read.
 */
export function abortOnClose(ctx: Context): AbortSignal {
  const ac = new AbortController();
  ctx.res.once('close', () => {
    if (!ctx.res.writableFinished) ac.abort();
  });
  return ac.signal;
}

/**
 * Sends a stream as the response body. A failure after the headers went out cannot become an error status:
 * the connection is cut so the client sees a truncated answer instead of a complete-looking one, and the source
 * is destroyed when the client goes away. `audit.bytes` counts what was sent.
 */
export function respondWithStream(
  ctx: Context,
  services: { logger: Logger },
  source: Readable,
  contentType: string,
  opts: { length?: number; audit?: AuditDetail } = {},
): void {
  const out = new PassThrough({ highWaterMark: 256 * 1024 });
  let bytes = 0;
  source.on('data', (chunk: Buffer) => {
    bytes += chunk.length;
    if (opts.audit) opts.audit.bytes = bytes;
    if (!out.write(chunk)) source.pause();
  });
  out.on('drain', () => source.resume());
  source.once('end', () => out.end());
  source.once('error', (err) => {
    if (!(err instanceof AppError) || err.status >= 500) {
      services.logger.warn({ err: errSummary(err), path: loggablePath(ctx.path) }, 'retrieve stream failed');
    }
    ctx.res.destroy();
    out.destroy();
  });
  out.once('close', () => {
    if (!source.destroyed) source.destroy();
  });
  ctx.type = contentType;
  if (opts.length !== undefined) ctx.length = opts.length;
  ctx.body = out;
}
