import type { Pool } from 'pg';

/** Where the change-feed indexer has got to (Orthanc change sequence number), or null before its first run. */
export async function readIndexerCursor(db: Pool, name: string): Promise<number | null> {
  const r = await db.query<{ last_change: string }>('SELECT last_change FROM indexer_state WHERE name = $1', [
    name,
  ]);
  return r.rows.length ? Number(r.rows[0].last_change) : null;
}
