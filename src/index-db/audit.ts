import type { Queryable } from './pool';

/** One row of `audit_events` as written. */
export interface AuditEvent {
  at: Date;
  principal: string;
  principalKind: string;
  action: string;
  projectId: string | null;
  studyUid: string | null;
  seriesUid: string | null;
  sopInstanceUid: string | null;
  outcome: number;
  bytes: number;
  clientIp: string | null;
  method: string | null;
  route: string | null;
  detail: Record<string, unknown>;
}

/** Writes events with one INSERT (arrays unnested server-side). */
export async function insertAuditEvents(db: Queryable, events: readonly AuditEvent[]): Promise<void> {
  if (events.length === 0) return;
  await db.query(
    `INSERT INTO audit_events (at, principal, principal_kind, action, project_id, study_uid, series_uid,
                               sop_instance_uid, outcome, bytes, client_ip, method, route, detail)
     SELECT * FROM unnest($1::timestamptz[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[],
                          $8::text[], $9::int[], $10::bigint[], $11::text[], $12::text[], $13::text[], $14::jsonb[])`,
    [
      events.map((e) => e.at),
      events.map((e) => e.principal),
      events.map((e) => e.principalKind),
      events.map((e) => e.action),
      events.map((e) => e.projectId),
      events.map((e) => e.studyUid),
      events.map((e) => e.seriesUid),
      events.map((e) => e.sopInstanceUid),
      events.map((e) => e.outcome),
      events.map((e) => e.bytes),
      events.map((e) => e.clientIp),
      events.map((e) => e.method),
      events.map((e) => e.route),
      events.map((e) => JSON.stringify(e.detail)),
    ],
  );
}

/** Filters of the audit API. */
export interface AuditFilter {
  projectId?: string;
  from?: Date;
  to?: Date;
  principal?: string;
  /** Exact action, or a prefix ending in `*` (e.g. `wado.*`). */
  action?: string;
  studyUid?: string;
  /** Exact status, or a class: `[1-5]xx`. */
  outcome?: string;
}

/** An audit row as the API returns it. */
export interface AuditRow {
  id: string;
  at: Date;
  principal: string;
  principal_kind: string;
  action: string;
  project_id: string | null;
  study_uid: string | null;
  series_uid: string | null;
  sop_instance_uid: string | null;
  outcome: number;
  bytes: string;
  client_ip: string | null;
  method: string | null;
  route: string | null;
  detail: Record<string, unknown>;
}

const AUDIT_COLUMNS = `id, at, principal, principal_kind, action, project_id, study_uid, series_uid, sop_instance_uid,
  outcome, bytes, client_ip, method, route, detail`;

function whereClause(f: AuditFilter, params: unknown[]): string {
  const where: string[] = [];
  const add = (sql: string, v: unknown) => {
    params.push(v);
    where.push(sql.replace('?', `$${params.length}`));
  };
  if (f.projectId !== undefined) add('project_id = ?', f.projectId);
  if (f.from) add('at >= ?', f.from);
  if (f.to) add('at < ?', f.to);
  if (f.principal) add('principal = ?', f.principal);
  if (f.action) {
    if (f.action.endsWith('*'))
      add("action LIKE ? ESCAPE '\\'", f.action.slice(0, -1).replace(/[\\%_]/g, '\\$&') + '%');
    else add('action = ?', f.action);
  }
  if (f.studyUid) add('study_uid = ?', f.studyUid);
  if (f.outcome) {
    const cls = /^([1-5])xx$/i.exec(f.outcome);
    if (cls) {
      const lo = Number(cls[1]) * 100;
      add('outcome >= ?', lo);
      add('outcome < ?', lo + 100);
    } else add('outcome = ?', Number(f.outcome));
  }
  return where.length ? `WHERE ${where.join(' AND ')}` : '';
}

/** A page of events, newest first; `before` is the id of the last event of the previous page. */
export async function listAuditEvents(
  db: Queryable,
  f: AuditFilter,
  page: { limit: number; before?: string },
): Promise<AuditRow[]> {
  const params: unknown[] = [];
  let where = whereClause(f, params);
  if (page.before) {
    params.push(page.before);
    where += `${where ? ' AND' : 'WHERE'} id < $${params.length}`;
  }
  params.push(page.limit);
  const r = await db.query<AuditRow>(
    `SELECT ${AUDIT_COLUMNS} FROM audit_events ${where} ORDER BY id DESC LIMIT $${params.length}`,
    params,
  );
  return r.rows;
}

/** Every matching event, oldest first, fetched in keyset pages so memory stays flat however long the trail. */
export async function* iterateAuditEvents(
  db: Queryable,
  f: AuditFilter,
  pageSize = 1000,
): AsyncGenerator<AuditRow> {
  let after = '0';
  for (;;) {
    const params: unknown[] = [];
    let where = whereClause(f, params);
    params.push(after);
    where += `${where ? ' AND' : 'WHERE'} id > $${params.length}`;
    params.push(pageSize);
    const r = await db.query<AuditRow>(
      `SELECT ${AUDIT_COLUMNS} FROM audit_events ${where} ORDER BY id LIMIT $${params.length}`,
      params,
    );
    for (const row of r.rows) yield row;
    if (r.rows.length < pageSize) return;
    after = r.rows[r.rows.length - 1].id;
  }
}
