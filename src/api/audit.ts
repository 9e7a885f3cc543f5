import Router from '@koa/router';
import { isUid, UID_RULE } from '../dicom/uid';
import type { Context } from 'koa';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { requireGlobalAdmin } from '../auth/access';
import { getAuditTrail } from '../auth/audit';
import { noteAudit, principalOf, requireExistingProjectRole } from '../http/context';
import { BadRequestError } from '../errors';
import { type AuditFilter, type AuditRow, iterateAuditEvents, listAuditEvents } from '../index-db/audit';
import type { Services } from '../services';

const isoDate = z
  .string()
  .refine((s) => !Number.isNaN(Date.parse(s)), 'an ISO 8601 date or date-time')
  .transform((s) => new Date(s));

const query = z.object({
  from: isoDate.optional(),
  to: isoDate.optional(),
  principal: z.string().max(200).optional(),
  action: z.string().max(100).optional(),
  study: z.string().max(64).refine(isUid, UID_RULE).optional(),
  outcome: z
    .string()
    .regex(/^([1-5]\d\d|[1-5]xx)$/i, 'an HTTP status or a class like 4xx')
    .optional(),
  project: z.string().max(64).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(100),
  before: z
    .string()
    .regex(/^\d{1,19}$/, 'an event id')
    .optional(),
  format: z.enum(['json', 'csv']).default('json'),
});

const CSV_COLUMNS: Array<keyof AuditRow> = [
  'id',
  'at',
  'principal',
  'principal_kind',
  'action',
  'project_id',
  'study_uid',
  'series_uid',
  'sop_instance_uid',
  'outcome',
  'bytes',
  'client_ip',
  'method',
  'route',
  'detail',
];

/** One CSV cell (RFC 4180 quoting; cells a spreadsheet would run as a formula are defused with a quote). */
function csvCell(v: unknown): string {
  if (v === null || v === undefined) return '';
  let s = v instanceof Date ? v.toISOString() : typeof v === 'object' ? JSON.stringify(v) : String(v);
  if (/^[=+\-@\t\r]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

async function* csvLines(rows: AsyncIterable<AuditRow>): AsyncGenerator<string> {
  yield CSV_COLUMNS.join(',') + '\r\n';
  let buf = '';
  for await (const row of rows) {
    buf += CSV_COLUMNS.map((c) => csvCell(row[c])).join(',') + '\r\n';
    if (buf.length > 64 * 1024) {
      yield buf;
      buf = '';
    }
  }
  if (buf) yield buf;
}

/**
 * `GET /api/projects/{project}/audit` (project admins) and `GET /api/audit` (global administrators, every
 * project plus events tied to none, e.g. 401s on the union root). Filters: from, to (ISO 8601, `to` exclusive),
 * principal, action (exact or `prefix*`), study, outcome (status or `4xx`); JSON pages newest first with
 * `limit`/`before` and a `Link: rel="next"`; `?format=csv` streams every match oldest first.
 */
export function auditRouter(services: Services): Router {
  const router = new Router();

  const answer = async (ctx: Context, filter: AuditFilter, label: string) => {
    const parsed = query.safeParse(ctx.query);
    if (!parsed.success) {
      throw new BadRequestError(
        parsed.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; '),
      );
    }
    const q = parsed.data;
    const f: AuditFilter = {
      ...filter,
      from: q.from,
      to: q.to,
      principal: q.principal,
      action: q.action,
      studyUid: q.study,
      outcome: q.outcome,
    };
    // Events of requests that already ended in this process are still queued; the reader expects them.
    await getAuditTrail()?.flush();
    if (q.format === 'csv') {
      noteAudit(ctx, { action: 'audit.export', projectId: filter.projectId });
      ctx.type = 'text/csv; charset=utf-8';
      ctx.set('Content-Disposition', `attachment; filename="audit-${label.replace(/[^a-z0-9-]/g, '_')}.csv"`);
      ctx.set('Cache-Control', 'no-store');
      ctx.body = Readable.from(csvLines(iterateAuditEvents(services.db, f)));
      return;
    }
    noteAudit(ctx, { action: 'audit.read', projectId: filter.projectId });
    const rows = await listAuditEvents(services.db, f, { limit: q.limit, before: q.before });
    if (rows.length === q.limit) {
      const next = new URLSearchParams(ctx.querystring);
      next.set('before', rows[rows.length - 1].id);
      ctx.set('Link', `<${ctx.path}?${next.toString()}>; rel="next"`);
    }
    ctx.set('Cache-Control', 'no-store');
    ctx.body = rows;
  };

  router.get('/api/projects/:project/audit', async (ctx) => {
    await requireExistingProjectRole(ctx, services, 'admin');
    await answer(ctx, { projectId: ctx.params.project }, ctx.params.project);
  });

  router.get('/api/audit', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    const project = typeof ctx.query.project === 'string' ? ctx.query.project : undefined;
    await answer(ctx, project ? { projectId: project } : {}, project ?? 'all');
  });

  return router;
}
