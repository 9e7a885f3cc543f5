/**
 * Graceful shutdown of the HTTP process. On SIGTERM the gateway first says it is going (/readyz answers 503
 * "draining", answers carry `Connection: close`) while it still accepts requests, for SHUTDOWN_GRACE_MS: long enough
 * for a load balancer's health check to take it out of rotation. Then it stops accepting, lets the requests in flight
 * finish (at most SHUTDOWN_TIMEOUT_MS), and only then are the services closed, in reverse order.
 */
import type { Server } from 'node:http';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Logger } from '../logger';

let draining = false;

/** True once shutdown has begun: /readyz says so and keep-alive connections are closed after each answer. */
export function isDraining(): boolean {
  return draining;
}

/** Runs the drain sequence on `server`; resolves when every request in flight has been answered or the time is up. */
export async function drainServer(
  server: Server,
  limits: { graceMs: number; timeoutMs: number },
  logger: Logger,
): Promise<void> {
  draining = true;
  logger.info({ graceMs: limits.graceMs }, 'draining: out of rotation, still answering');
  if (limits.graceMs > 0) await sleep(limits.graceMs);
  const closed = new Promise<void>((resolve) => server.close(() => resolve()));
  // Keep-alive connections with no request in flight go now; the others close after their answer (Connection: close).
  server.closeIdleConnections();
  const timedOut = sleep(limits.timeoutMs).then(() => 'timeout' as const);
  const outcome = await Promise.race([closed.then(() => 'drained' as const), timedOut]);
  if (outcome === 'timeout') {
    logger.warn({ timeoutMs: limits.timeoutMs }, 'shutdown timeout: closing the connections still open');
    server.closeAllConnections();
  } else {
    logger.info('drained: every request in flight was answered');
  }
}
