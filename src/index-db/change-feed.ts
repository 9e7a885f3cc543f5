/**
 * SQL of the change-feed indexer (ingest/change-feed.ts): its leader lock and cursor, on a dedicated connection whose
 * session holds the advisory lock, and the counts it compares with the archive.
 */
import { Client, type Pool } from 'pg';

/** Advisory lock key held by the leading indexer (any constant; the same in every process). */
export const INDEXER_LOCK_KEY = 7_123_420;

/** Opens the connection a would-be leader holds its lock on; `onLost` runs once when it errors or ends. */
export async function connectLockClient(
  databaseUrl: string,
  onLost: (client: Client) => void,
): Promise<Client> {
  const client = new Client({ connectionString: databaseUrl });
  const lost = () => onLost(client);
  client.on('error', lost);
  client.on('end', lost);
  try {
    await client.connect();
    await client.query("SET application_name = 'aperture-indexer'");
  } catch (err) {
    lost();
    throw err;
  }
  return client;
}

/** Takes the leader lock on this session if free; true when held. */
export async function tryLeaderLock(client: Client): Promise<boolean> {
  const r = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1) AS ok', [INDEXER_LOCK_KEY]);
  return r.rows[0]?.ok === true;
}

/** The cursor (last change handled), created at 0 when missing. */
export async function readCursor(client: Client, name: string): Promise<number> {
  const r = await client.query<{ last_change: string }>(
    `INSERT INTO indexer_state (name) VALUES ($1) ON CONFLICT (name) DO UPDATE SET name = EXCLUDED.name
     RETURNING last_change`,
    [name],
  );
  return Number(r.rows[0].last_change);
}

/** Moves the cursor forward (never back: a replaying old leader cannot undo the new one's progress), or resets it. */
export async function saveCursor(client: Client, name: string, seq: number, reset = false): Promise<void> {
  await client.query(
    `UPDATE indexer_state SET last_change = ${reset ? '$1' : 'GREATEST(last_change, $1)'}, updated_at = now()
      WHERE name = $2`,
    [seq, name],
  );
}

/** Whether any instance of a series is indexed. */
export async function seriesIndexed(db: Pool, seriesUid: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM instances WHERE series_uid = $1 LIMIT 1', [seriesUid]);
  return (r.rowCount ?? 0) > 0;
}

/** Index rows plus recorded failures: once the feed is idle, every archived object is one or the other. */
export async function indexedOrFailedCount(db: Pool): Promise<number> {
  const r = await db.query<{ n: number }>(
    'SELECT ((SELECT count(*) FROM instances) + (SELECT count(*) FROM index_failures))::int AS n',
  );
  return r.rows[0].n;
}
