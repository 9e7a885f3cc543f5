import pino, { type Logger } from 'pino';

/**
 * The process logger. Log lines carry UIDs, ids, routes and statuses only: never names, query strings or
 * data set contents, which may hold PHI.
 */
export function createLogger(level: string, name = 'aperture'): Logger {
  return pino({ name, level, base: { pid: process.pid }, timestamp: pino.stdTimeFunctions.isoTime });
}
export type { Logger };
