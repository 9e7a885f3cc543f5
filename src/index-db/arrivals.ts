/** SQL of arrival indexing (ingest/arrival.ts, ingest/rearrival.ts): repositories returning rows. */
import type { Pool, PoolClient } from 'pg';

/** Whether a project exists (DEFAULT_PROJECT may name one that was never created). */
export async function projectExists(db: Pool | PoolClient, projectId: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM projects WHERE id = $1', [projectId]);
  return (r.rowCount ?? 0) > 0;
}

/** The projects an instance is linked to, in id order. */
export async function projectsOf(db: Pool | PoolClient, sopInstanceUid: string): Promise<string[]> {
  const r = await db.query<{ project_id: string }>(
    'SELECT project_id FROM project_instances WHERE sop_instance_uid = $1 ORDER BY project_id',
    [sopInstanceUid],
  );
  return r.rows.map((x) => x.project_id);
}

/** Index rows (and failure records) that a listing of the archive does not name; see findUnlisted. */
export interface UnlistedRows {
  /** Instances the listing named. */
  archived: number;
  instances: Array<{ sop_instance_uid: string; orthanc_id: string }>;
  failures: string[];
  /** Listed archive ids with neither an index row nor a failure record (at most UNINDEXED_LIMIT). */
  unindexed: string[];
}

/** Archive ids without an index row returned by one comparison: the rest wait for the next. */
export const UNINDEXED_LIMIT = 1000;

/**
 * Compares the index with a listing of the archive's instance ids, paged into a temporary table so that memory stays
 * flat: the instance rows and failure records written before the listing began whose archive id it does not name.
 * Rows written meanwhile are never candidates (the caller confirms each one gone before removing it). Also the other
 * way round: listed ids the index does not know at all (the change feed never saw them).
 */
export async function findUnlisted(
  db: Pool,
  pages: AsyncIterable<string[]>,
  onPage?: (listed: number) => void,
): Promise<UnlistedRows> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const started = (await client.query<{ now: Date }>('SELECT now()')).rows[0].now;
    await client.query('CREATE TEMP TABLE archived_ids (orthanc_id text PRIMARY KEY) ON COMMIT DROP');
    let archived = 0;
    for await (const ids of pages) {
      if (ids.length) {
        await client.query('INSERT INTO archived_ids SELECT unnest($1::text[]) ON CONFLICT DO NOTHING', [
          ids,
        ]);
      }
      archived += ids.length;
      onPage?.(archived);
    }
    const instances = (
      await client.query<{ sop_instance_uid: string; orthanc_id: string }>(
        `SELECT sop_instance_uid, orthanc_id FROM instances i
          WHERE i.indexed_at < $1 AND NOT EXISTS (SELECT 1 FROM archived_ids a WHERE a.orthanc_id = i.orthanc_id)`,
        [started],
      )
    ).rows;
    const failures = (
      await client.query<{ orthanc_id: string }>(
        `SELECT orthanc_id FROM index_failures f
          WHERE f.received_at < $1 AND NOT EXISTS (SELECT 1 FROM archived_ids a WHERE a.orthanc_id = f.orthanc_id)`,
        [started],
      )
    ).rows.map((r) => r.orthanc_id);
    const unindexed = (
      await client.query<{ orthanc_id: string }>(
        `SELECT a.orthanc_id FROM archived_ids a
          WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.orthanc_id = a.orthanc_id)
            AND NOT EXISTS (SELECT 1 FROM index_failures f WHERE f.orthanc_id = a.orthanc_id)
          LIMIT ${UNINDEXED_LIMIT}`,
      )
    ).rows.map((r) => r.orthanc_id);
    await client.query('COMMIT');
    return { archived, instances, failures, unindexed };
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}
