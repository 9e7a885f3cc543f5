import { AsyncLocalStorage } from 'node:async_hooks';
import pino, { type DestinationStream, type Logger } from 'pino';

/** What every log line written on behalf of one request or one job carries: its id, never its content. */
export interface LogContext {
  /** The request id (also sent back as X-Request-Id). */
  req?: string;
  /** `<queue>:<job id>` of the BullMQ job being run. */
  job?: string;
}

const logContext = new AsyncLocalStorage<LogContext>();

/** Runs `fn` so that every log line written inside it, however deep and however late, carries `context`. */
export function runWithLogContext<T>(context: LogContext, fn: () => T): T {
  return logContext.run(context, fn);
}

/**
 * The process logger. Log lines carry UIDs, ids, routes and statuses only: never names, query strings or
 * data set contents, which may hold PHI. Lines written inside a request or a job carry its id (`req` / `job`).
 */
export function createLogger(level: string, name = 'aperture', destination?: DestinationStream): Logger {
  const options = {
    name,
    level,
    base: { pid: process.pid },
    timestamp: pino.stdTimeFunctions.isoTime,
    mixin: () => logContext.getStore() ?? {},
  };
  return destination ? pino(options, destination) : pino(options);
}
export type { Logger };
