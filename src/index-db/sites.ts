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
export async function listInstancesToVerify(
  db: Queryable,
  after: string,
  limit: number,
): Promise<VerifyRow[]> {
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
  const r = await db.query<{ n: string }>(
    'SELECT coalesce(sum(pg_database_size(oid)), 0)::text AS n FROM pg_database',
  );
  return Number(r.rows[0].n);
}

/** Whether this server is a standby (in recovery: read-only, following a primary). */
export async function isInRecovery(db: Queryable): Promise<boolean> {
  const r = await db.query<{ r: boolean }>('SELECT pg_is_in_recovery() AS r');
  return r.rows[0].r;
}

/** Replication as this server sees it: a primary lists its standbys, a standby its own replay position. */
export interface ReplicationState {
  standby: boolean;
  /** Primary: one row per connected standby. */
  standbys: Array<{ name: string; sync: string; lagBytes: number; lagSeconds: number }>;
  /** Standby: WAL received but not yet replayed, and the age of the last replayed commit while behind. */
  replayLagBytes?: number;
  replayLagSeconds?: number;
}

/** Reads the replication state (pg_stat_replication on a primary, the replay position on a standby). */
export async function replicationState(db: Queryable): Promise<ReplicationState> {
  if (await isInRecovery(db)) {
    const r = await db.query<{ bytes: string | null; seconds: string | null }>(
      `SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())::text AS bytes,
              CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
                   ELSE extract(epoch FROM now() - pg_last_xact_replay_timestamp()) END::text AS seconds`,
    );
    return {
      standby: true,
      standbys: [],
      replayLagBytes: Math.max(0, Number(r.rows[0].bytes ?? 0)),
      replayLagSeconds: Math.max(0, Number(r.rows[0].seconds ?? 0)),
    };
  }
  const r = await db.query<{ name: string; sync: string; bytes: string | null; seconds: string | null }>(
    `SELECT application_name AS name, sync_state AS sync,
            pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn)::text AS bytes,
            coalesce(extract(epoch FROM replay_lag), 0)::text AS seconds
       FROM pg_stat_replication ORDER BY application_name`,
  );
  return {
    standby: false,
    standbys: r.rows.map((x) => ({
      name: x.name,
      sync: x.sync,
      lagBytes: Number(x.bytes ?? 0),
      lagSeconds: Number(x.seconds ?? 0),
    })),
  };
}

/**
 * Promotes this standby to primary (PostgreSQL's pg_promote(), superuser or an explicit GRANT), waiting up to
 * `waitSeconds` for the promotion to finish; false when it did not finish in time.
 */
export async function promoteStandby(db: Queryable, waitSeconds: number): Promise<boolean> {
  const r = await db.query<{ ok: boolean }>('SELECT pg_promote(true, $1) AS ok', [waitSeconds]);
  return r.rows[0].ok;
}
