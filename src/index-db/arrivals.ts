/** SQL of arrival indexing (ingest/arrival.ts, ingest/rearrival.ts): repositories returning rows. */
import type { Pool, PoolClient } from 'pg';

/** Whether a project exists (DEFAULT_PROJECT may name one that was never created). */
export async function projectExists(db: Pool | PoolClient, projectId: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM projects WHERE id = $1', [projectId]);
  return (r.rowCount ?? 0) > 0;
}
