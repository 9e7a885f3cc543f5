import type { Dependency } from './errors';
import { pingDb } from './index-db/pool';
import { pingQueues, queuesReady } from './jobs/queues';
import type { Services } from './services';

/** What /readyz reports: each dependency this process uses, up or down. */
export interface Readiness {
  ready: boolean;
  checks: Partial<Record<Dependency, 'up' | 'down'>>;
}

/** Settles `op` to true/false within `ms`; a dependency that does not answer in time counts as down. */
async function answersWithin(op: () => Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  try {
    return await Promise.race([
      op().then(
        () => true,
        () => false,
      ),
      timeout,
    ]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Checks every dependency at once, each within `timeoutMs`: the index (SELECT 1), the archive (its ping)
 * and, where this process produces jobs, the queue (Redis PING). A load balancer takes the process out of rotation
 * while one is down, and the answer says which.
 */
export async function checkReadiness(
  services: Pick<Services, 'db' | 'archive'>,
  timeoutMs: number,
): Promise<Readiness> {
  const checks: Array<[Dependency, Promise<boolean>]> = [
    ['database', answersWithin(() => pingDb(services.db), timeoutMs)],
    ['archive', answersWithin(() => services.archive.ping(AbortSignal.timeout(timeoutMs)), timeoutMs)],
  ];
  if (queuesReady())
    checks.push(['queue', answersWithin(() => pingQueues(timeoutMs).then(okOrThrow), timeoutMs)]);
  const out: Readiness['checks'] = {};
  for (const [name, up] of checks) out[name] = (await up) ? 'up' : 'down';
  return { ready: Object.values(out).every((v) => v === 'up'), checks: out };
}

function okOrThrow(ok: boolean): void {
  if (!ok) throw new Error('down');
}
