import { Pool } from 'pg';
import { loadConfig } from '../src/config';
import { closeDb, initDb, withTransaction } from '../src/index-db/pool';

/**
 * PostgreSQL killed while the gateway holds a checked-out client between two queries (the deletion sweep pages
 * Orthanc inside a transaction). pg emits 'error' on that client, pg-pool listens only to idle ones: without a
 * listener of our own the process dies of an unhandled 'error' event (seen in CI under kill -9 of postgres).
 * The connection is cut from the server side with pg_terminate_backend, as a crash of the backend cuts it.
 */
describe('a checked-out database connection that is cut', () => {
  let admin: Pool;
  const config = loadConfig(process.env);

  beforeAll(() => {
    admin = new Pool({ connectionString: config.DATABASE_URL, max: 1 });
  });
  afterAll(async () => {
    await closeDb();
    await admin.end();
  });

  it('fails the transaction as an outage instead of crashing the process, and the pool recovers', async () => {
    const db = initDb({ DATABASE_URL: config.DATABASE_URL, DATABASE_POOL_SIZE: 2 });
    const crashes: unknown[] = [];
    const onUncaught = (err: unknown) => crashes.push(err);
    process.on('uncaughtException', onUncaught);
    try {
      const outcome = withTransaction(db, async (client) => {
        const pid = (await client.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid;
        // Between two queries, as the sweep is while it waits on Orthanc.
        await admin.query('SELECT pg_terminate_backend($1)', [pid]);
        await new Promise((r) => setTimeout(r, 500));
        await client.query('SELECT 1');
        return 'committed';
      });
      await expect(outcome).rejects.toThrow();
      expect(crashes).toEqual([]);
      // The broken client was dropped, not handed out again.
      expect((await db.query<{ one: number }>('SELECT 1 AS one')).rows[0].one).toBe(1);
    } finally {
      process.off('uncaughtException', onUncaught);
    }
  });
});
