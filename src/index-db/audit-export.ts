import type { Pool, PoolClient } from 'pg';
import type { AuditRow } from './audit';

const COLUMNS = `id, at, principal, principal_kind, action, project_id, study_uid, series_uid, sop_instance_uid,
  outcome, bytes, client_ip, method, route, detail`;

/**
 * A batch of audit events claimed for one destination, inside a transaction that holds the destination's cursor row
 * (FOR UPDATE SKIP LOCKED): while one gateway sends, the others skip that destination, so each event goes out once
 * per destination however many gateways run. `commit` moves the cursor past the batch; `release` gives it up.
 */
export interface ClaimedBatch {
  rows: AuditRow[];
  commit(): Promise<void>;
  release(): Promise<void>;
}

/** Creates a destination's cursor at the current end of the trail (events before it was configured are not sent). */
export async function ensureExportCursor(db: Pool, destination: string): Promise<void> {
  await db.query(
    `INSERT INTO audit_export_cursor (destination, last_id)
     SELECT $1, COALESCE(MAX(id), 0) FROM audit_events ON CONFLICT (destination) DO NOTHING`,
    [destination],
  );
}

/** Claims the next events for a destination; null when another process holds it or nothing is waiting. */
export async function claimExportBatch(
  db: Pool,
  destination: string,
  limit: number,
): Promise<ClaimedBatch | null> {
  const client: PoolClient = await db.connect();
  let open = true;
  const end = async (sql: string) => {
    if (!open) return;
    open = false;
    try {
      await client.query(sql);
    } finally {
      client.release();
    }
  };
  try {
    await client.query('BEGIN');
    const cur = await client.query<{ last_id: string }>(
      'SELECT last_id FROM audit_export_cursor WHERE destination = $1 FOR UPDATE SKIP LOCKED',
      [destination],
    );
    if (!cur.rows.length) {
      await end('ROLLBACK');
      return null;
    }
    const r = await client.query<AuditRow>(
      `SELECT ${COLUMNS} FROM audit_events WHERE id > $1 ORDER BY id LIMIT $2`,
      [cur.rows[0].last_id, limit],
    );
    if (!r.rows.length) {
      await end('ROLLBACK');
      return null;
    }
    const last = r.rows[r.rows.length - 1].id;
    return {
      rows: r.rows,
      async commit() {
        if (!open) return;
        await client.query(
          'UPDATE audit_export_cursor SET last_id = $2, updated_at = now() WHERE destination = $1',
          [destination, last],
        );
        await end('COMMIT');
      },
      release: () => end('ROLLBACK'),
    };
  } catch (err) {
    // A broken connection must not go back to the pool mid-transaction.
    if (open) {
      open = false;
      client.release(err as Error);
    }
    throw err;
  }
}

/** Events not yet sent, per destination (by id distance: ids are a sequence, so this is an upper bound). */
export async function exportBacklog(db: Pool): Promise<Record<string, number>> {
  const r = await db.query<{ destination: string; backlog: string }>(
    `SELECT c.destination, GREATEST(0, COALESCE((SELECT MAX(id) FROM audit_events), 0) - c.last_id) AS backlog
       FROM audit_export_cursor c`,
  );
  return Object.fromEntries(r.rows.map((x) => [x.destination, Number(x.backlog)]));
}
