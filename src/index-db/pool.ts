import { Pool, type PoolClient } from 'pg';
import type { Config } from '../config';

let pool: Pool | undefined;

/** Opens the shared PostgreSQL pool. */
export function initDb(
  config: Pick<Config, 'DATABASE_URL' | 'DATABASE_POOL_SIZE'> &
    Partial<Pick<Config, 'DATABASE_CONNECT_TIMEOUT_MS'>>,
): Pool {
  if (pool) return pool;
  pool = new Pool({
    connectionString: config.DATABASE_URL,
    max: config.DATABASE_POOL_SIZE,
    // Without a bound, a database that stops answering (rather than refusing) holds every request for minutes;
    // past it the query fails as an outage (503 with Retry-After).
    connectionTimeoutMillis: config.DATABASE_CONNECT_TIMEOUT_MS ?? 5000,
  });
  // An idle client that loses its connection must not crash the process.
  pool.on('error', () => undefined);
  // Nor may a checked-out client that loses it between two queries (a transaction waiting on Orthanc while
  // PostgreSQL is killed): pg emits 'error' on the client, and pg-pool listens only while the client is idle.
  // The next query on it rejects as an outage and release() drops it from the pool.
  pool.on('connect', (client) => client.on('error', () => undefined));
  return pool;
}

/** Closes the shared pool. */
export async function closeDb(): Promise<void> {
  const p = pool;
  pool = undefined;
  if (p) await p.end();
}

/** Anything that can run a query: the pool or a client inside a transaction. */
export type Queryable = Pick<Pool, 'query'> | PoolClient;

/** Runs fn inside a transaction on one client, rolling back on error. */
export async function withTransaction<T>(db: Pool, fn: (client: PoolClient) => Promise<T>): Promise<T> {
  const client = await db.connect();
  try {
    await client.query('BEGIN');
    const result = await fn(client);
    await client.query('COMMIT');
    return result;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw err;
  } finally {
    client.release();
  }
}

/** A round trip to the database (for /readyz); rejects when it is unreachable. */
export async function pingDb(db: Queryable): Promise<void> {
  await db.query('SELECT 1');
}
