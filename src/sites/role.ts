/**
 * Which role this site's database has (issue 16): a primary takes writes, a standby (PostgreSQL in recovery,
 * following the primary by streaming replication) serves reads only. Asked of PostgreSQL itself
 * (pg_is_in_recovery()), at most once per `cacheMs`, so that a promotion is seen within that time without a restart.
 */
import type { Queryable } from '../index-db/pool';
import { isInRecovery } from '../index-db/sites';

let cached: { standby: boolean; at: number } | undefined;

/** True while this site's database is a standby; the last known answer when PostgreSQL does not answer. */
export async function isStandbySite(db: Queryable, cacheMs: number): Promise<boolean> {
  if (cached && Date.now() - cached.at < cacheMs) return cached.standby;
  try {
    cached = { standby: await isInRecovery(db), at: Date.now() };
  } catch (err) {
    // Down: the request itself meets the outage (503); the role is not guessed.
    if (!cached) throw err;
  }
  return cached.standby;
}
