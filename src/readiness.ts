import type { Dependency } from './errors';
import { pingDb } from './index-db/pool';
import { replicationState, type ReplicationState } from './index-db/sites';
import { pingQueues, queuesReady } from './jobs/queues';
import type { Services } from './services';
import { readSyncStatus, type SyncStatus } from './sites/storage-sync';
import { storageSyncStateDir } from './sites/sync-config';

/** What /readyz reports: each dependency this process uses, up or down. */
export interface Readiness {
  ready: boolean;
  checks: Partial<Record<Dependency, 'up' | 'down'>>;
  /** sites (issue 16): this site's role and how far its database is behind (standby) or its standbys are (primary). */
  site?: {
    role: 'primary' | 'standby';
    replicationLagBytes: number;
    replicationLagSeconds: number;
    standbys: number;
  };
  /** sites (issue 16): the storage sync at a standby site, from its status file (absent where no sync runs). */
  storageSync?: NonNullable<ReturnType<typeof syncSummary>>;
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
  services: Pick<Services, 'db' | 'archive'> & { config?: Services['config'] },
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
  let site: Readiness['site'];
  if (out.database === 'up') {
    const r = await Promise.race([
      replicationState(services.db).catch(() => undefined),
      new Promise<undefined>((resolve) => setTimeout(() => resolve(undefined), timeoutMs).unref()),
    ]);
    if (r) site = siteSummary(r);
  }
  // The sync's backlog is a detail, not a readiness condition: reads are answered from the primary's archive
  // meanwhile (docs/two-sites.md).
  const storageSync = services.config
    ? syncSummary(await readSyncStatus(storageSyncStateDir(services.config)))
    : undefined;
  // A standby is ready: it serves reads (writes answer 503 with the reason).
  return {
    ready: Object.values(out).every((v) => v === 'up'),
    checks: out,
    ...(site ? { site } : {}),
    ...(storageSync ? { storageSync } : {}),
  };
}

/** The replication state as /readyz and /metrics report it: worst lag over the standbys on a primary. */
export function siteSummary(r: ReplicationState): NonNullable<Readiness['site']> {
  return r.standby
    ? {
        role: 'standby',
        replicationLagBytes: r.replayLagBytes ?? 0,
        replicationLagSeconds: r.replayLagSeconds ?? 0,
        standbys: 0,
      }
    : {
        role: 'primary',
        replicationLagBytes: Math.max(0, ...r.standbys.map((x) => x.lagBytes)),
        replicationLagSeconds: Math.max(0, ...r.standbys.map((x) => x.lagSeconds)),
        standbys: r.standbys.length,
      };
}

function okOrThrow(ok: boolean): void {
  if (!ok) throw new Error('down');
}

/** The storage sync's status as /readyz and /metrics report it, with its ages in seconds from now. */
export function syncSummary(s: SyncStatus | undefined, now = Date.now()) {
  if (!s) return undefined;
  return {
    running: s.running,
    backlogFiles: s.backlogFiles,
    backlogBytes: s.backlogBytes,
    corruptFiles: s.corruptFiles,
    copiedFiles: s.copiedFiles,
    syncedAsOf: s.syncedAsOf,
    behindSeconds: s.syncedAsOf ? Math.max(0, (now - Date.parse(s.syncedAsOf)) / 1000) : -1,
    statusAgeSeconds: Math.max(0, (now - Date.parse(s.updatedAt)) / 1000),
  };
}
