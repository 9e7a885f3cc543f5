import type { Queryable } from './pool';

/** One archived instance as `aperture verify` checks it against the archive. */
export interface VerifyRow {
  sop_instance_uid: string;
  orthanc_id: string;
  file_size: string; // bigint
  md5: string | null;
  dataset_md5: string | null;
}

/** Index rows in SOP Instance UID order after `after`, at most `limit` (keyset paging: stable under inserts). */
export async function listInstancesToVerify(db: Queryable, after: string, limit: number): Promise<VerifyRow[]> {
  const r = await db.query<VerifyRow>(
    `SELECT sop_instance_uid, orthanc_id, file_size::text AS file_size, md5, dataset_md5
       FROM instances WHERE sop_instance_uid > $1 ORDER BY sop_instance_uid LIMIT $2`,
    [after, limit],
  );
  return r.rows;
}

/** Number of instances the index holds. */
export async function countIndexedInstances(db: Queryable): Promise<number> {
  const r = await db.query<{ n: string }>('SELECT count(*)::text AS n FROM instances');
  return Number(r.rows[0].n);
}

/** Bytes of every database of the cluster (what a base backup copies, WAL aside). */
export async function clusterDatabaseBytes(db: Queryable): Promise<number> {
  const r = await db.query<{ n: string }>('SELECT coalesce(sum(pg_database_size(oid)), 0)::text AS n FROM pg_database');
  return Number(r.rows[0].n);
}

/** Whether this server is a standby (in recovery: read-only, following a primary). */
export async function isInRecovery(db: Queryable): Promise<boolean> {
  const r = await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
  return r.rows[0].r;
}
