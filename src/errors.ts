import type { Context, Next } from 'koa';
import type { Logger } from 'pino';

/**
 * Errors that carry a status, a stable code and a message safe to show to clients (no PHI: UIDs at most).
 * Domain and worker code throws these; one middleware maps them to HTTP.
 */
export class AppError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly headers: Record<string, string> = {},
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class BadRequestError extends AppError {
  constructor(message: string, code = 'bad_request') {
    super(400, code, message);
  }
}
export class UnauthorizedError extends AppError {
  constructor(message = 'authentication required', wwwAuthenticate = 'Bearer realm="aperture"') {
    super(401, 'unauthorized', message, { 'WWW-Authenticate': wwwAuthenticate });
  }
}
export class ForbiddenError extends AppError {
  constructor(message = 'not allowed') {
    super(403, 'forbidden', message);
  }
}
export class NotFoundError extends AppError {
  constructor(message = 'not found') {
    super(404, 'not_found', message);
  }
}
export class NotAcceptableError extends AppError {
  constructor(message: string) {
    super(406, 'not_acceptable', message);
  }
}
export class ConflictError extends AppError {
  constructor(message: string) {
    super(409, 'conflict', message);
  }
}
export class PayloadTooLargeError extends AppError {
  constructor(message: string) {
    super(413, 'payload_too_large', message);
  }
}
export class UnsupportedMediaTypeError extends AppError {
  constructor(message: string) {
    super(415, 'unsupported_media_type', message);
  }
}
/** Orthanc (or another upstream) failed or timed out: 502 / 504, never the raw fetch error. */
export class UpstreamError extends AppError {
  constructor(message: string, timeout = false) {
    super(timeout ? 504 : 502, timeout ? 'upstream_timeout' : 'upstream_error', message);
  }
}
/** The dependencies an outage can name: the index, the archive, the job queue. */
export type Dependency = 'database' | 'archive' | 'queue';

const DEPENDENCY_NAMES: Record<Dependency, string> = {
  database: 'the index database',
  archive: 'the archive',
  queue: 'the job queue',
};

/** Seconds a client is told to wait (Retry-After) when a dependency is down; set from RETRY_AFTER_S at start. */
let retryAfterSeconds = 5;
/** Sets the Retry-After of dependency outages (RETRY_AFTER_S). */
export function setRetryAfterSeconds(seconds: number): void {
  retryAfterSeconds = Math.max(1, Math.round(seconds));
}
/** The Retry-After value of dependency outages, in seconds. */
export function retryAfterS(): number {
  return retryAfterSeconds;
}

/**
 * A dependency (PostgreSQL, Orthanc, Redis) cannot be reached: 503 with Retry-After, naming the dependency and
 * nothing of the internals (no address, no driver message), so clients know to retry rather than give up.
 */
export class DependencyUnavailableError extends AppError {
  constructor(
    readonly dependency: Dependency,
    message = `${DEPENDENCY_NAMES[dependency]} is unavailable; retry later`,
  ) {
    super(503, 'dependency_unavailable', message, { 'Retry-After': String(retryAfterSeconds) });
  }
}

// Node socket errors: the peer is gone or unreachable.
const SOCKET_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EAI_AGAIN',
  'ENOTFOUND',
]);
// node-postgres says so in messages only (no code) when a connection drops or cannot be made in time.
const PG_CONNECTION_MESSAGE =
  /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended unexpectedly|the database system is (starting up|shutting down|in recovery mode)|terminating connection due to administrator command/i;

/**
 * True when a raw (non-AppError) error says PostgreSQL is unreachable rather than that a statement was wrong:
 * socket errors, node-postgres connection messages, and SQLSTATE classes 08 (connection exception), 53 (insufficient
 * resources: too many connections), 57P (operator intervention: shutdown, crash, cannot connect now). Errors of the
 * statement itself (syntax, constraint, data) are not outages and stay 500.
 */
export function isDatabaseUnavailable(err: unknown): boolean {
  if (err instanceof AppError || err === null || typeof err !== 'object') return false;
  const e = err as { code?: unknown; message?: unknown; errors?: unknown };
  if (typeof e.code === 'string') {
    if (SOCKET_CODES.has(e.code)) return true;
    if (/^(08|53|57P)/.test(e.code)) return true;
  }
  // Node's happy-eyeballs connect reports an AggregateError of the per-address failures.
  if (Array.isArray(e.errors) && e.errors.length > 0 && e.errors.every(isDatabaseUnavailable)) return true;
  return typeof e.message === 'string' && PG_CONNECTION_MESSAGE.test(e.message);
}

/**
 * The typed form of a dependency failure: AppErrors that already say 503 pass through; raw database connection
 * failures become DependencyUnavailableError('database'); anything else gives undefined (a real bug: 500).
 */
export function asDependencyError(err: unknown): DependencyUnavailableError | undefined {
  if (err instanceof DependencyUnavailableError) return err;
  if (isDatabaseUnavailable(err)) return new DependencyUnavailableError('database');
  return undefined;
}

/**
 * A bounded in-process resource (the decode thread pool, issue 11) has a full queue: 503 with Retry-After, so
 * clients back off instead of the gateway building an unbounded backlog.
 */
export class ServiceBusyError extends AppError {
  constructor(message: string, retryAfter = 1) {
    super(503, 'busy', message, { 'Retry-After': String(retryAfter) });
  }
}

/** Input that can never succeed: jobs must not retry it. */
export class UnrecoverableInputError extends AppError {
  constructor(message: string) {
    super(422, 'unprocessable', message);
  }
}

/** A `Warning: 299` header value as PS3.18 §8.4 uses it for partial or unsupported requests. */
export function warning299(text: string, agent = 'aperture'): string {
  return `299 ${agent} "${text.replace(/["\\]/g, "'")}"`;
}

/**
 * The single error middleware: AppErrors become their status with a JSON body and a Warning header;
 * anything else is logged (without request bodies) and answered 500 with no details.
 */
export function errorMiddleware(logger: Logger) {
  return async (ctx: Context, next: Next): Promise<void> => {
    try {
      await next();
    } catch (err) {
      if (ctx.headerSent || !ctx.writable) {
        logger.warn({ err: errSummary(err), path: loggablePath(ctx.path) }, 'error after response started');
        return;
      }
      // A database that went away surfaces as a raw driver error from wherever the query was: one place maps it.
      const dependency = asDependencyError(err);
      if (dependency) {
        ctx.status = 503;
        for (const [k, v] of Object.entries(dependency.headers)) ctx.set(k, v);
        ctx.append('Warning', warning299(dependency.message));
        ctx.body = {
          errors: [{ code: dependency.code, message: dependency.message, dependency: dependency.dependency }],
        };
        return;
      }
      if (err instanceof AppError) {
        ctx.status = err.status;
        for (const [k, v] of Object.entries(err.headers)) ctx.set(k, v);
        ctx.append('Warning', warning299(err.message));
        ctx.body = { errors: [{ code: err.code, message: err.message }] };
        return;
      }
      const status = (err as { status?: number; expose?: boolean }).status;
      if (status && status >= 400 && status < 500) {
        // Koa/http-errors raised by body parsing and the like carry safe messages.
        ctx.status = status;
        const msg = (err as Error).message || 'bad request';
        ctx.append('Warning', warning299(msg));
        ctx.body = { errors: [{ code: 'bad_request', message: msg }] };
        return;
      }
      logger.error(
        { err: errSummary(err), method: ctx.method, path: loggablePath(ctx.path) },
        'unhandled error',
      );
      ctx.status = 500;
      ctx.body = { errors: [{ code: 'internal_error', message: 'internal error' }] };
    }
  };
}

/** A request path fit for logs: share tokens in `/share/{token}/...` are secrets and never logged. */
export function loggablePath(path: string): string {
  return path.replace(/^\/share\/[^/]+/, '/share/-');
}

/** Error details fit for logs: name, message and stack, never attached request data. */
export function errSummary(err: unknown): { name: string; message: string; stack?: string } {
  if (err instanceof Error) return { name: err.name, message: err.message, stack: err.stack };
  return { name: 'unknown', message: String(err) };
}
