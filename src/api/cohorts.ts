import Router from '@koa/router';
import type { Context } from 'koa';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { hasRole, type Principal } from '../auth/access';
import { planCohortZip } from '../cohorts/archive-zip';
import { COHORT_OPTION_NAMES, type Deidentifier } from '../cohorts/deid-port';
import { isPseudonym } from '../cohorts/keys';
import { type CohortRequest, planCohort } from '../cohorts/plan';
import { patientMappingCsv, uidMappingCsv } from '../cohorts/provenance';
import { withdrawSubject } from '../cohorts/withdraw';
import { setCohortCarriesRecords } from '../index-db/records';
import { cohortRecordTables, recordEntries, recordsTag } from '../records/cohort-records';
import { cohortRecordsQuery, cohortStudiesOfRecords } from '../records/search';
import { isUid, UID_MAX_LENGTH, UID_RULE } from '../dicom/uid';
import { noteAudit, principalOf, requireExistingProjectRole } from '../http/context';
import { AppError, BadRequestError, NotFoundError } from '../errors';
import {
  cohortHasSubject,
  cohortReasons,
  type CohortRow,
  getCohort,
  listCohorts,
  resetFailed,
  setCohortState,
} from '../index-db/cohorts';
import { enqueueCohort } from '../jobs/queues';
import type { Services } from '../services';
import { readJsonBody } from './body';

const UID = z.string().max(UID_MAX_LENGTH).refine(isUid, UID_RULE);
const PROJECT_ID = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and dashes');

/** Most subjects a cohort takes from records (as many as a study list may name studies). */
const COHORT_MAX_SUBJECTS = 10_000;

const cohortInput = z
  .object({
    name: z.string().min(1).max(200),
    studies: z.array(UID).min(1).max(10_000).optional(),
    query: z
      .record(z.string(), z.union([z.string().max(1024), z.array(z.string().max(1024)).max(32)]))
      .optional(),
    options: z
      .object(Object.fromEntries(COHORT_OPTION_NAMES.map((n) => [n, z.boolean().optional()])))
      .strict()
      .default({}),
    // Issue 18: the studies of the subjects a records search finds (the body of POST …/subjects/search without
    // paging), or of subjects a search returned (their ids).
    records_query: cohortRecordsQuery.optional(),
    subjects: z.array(z.string().uuid()).min(1).max(COHORT_MAX_SUBJECTS).optional(),
    // Issue 18: the download also carries the subjects' records, de-identified (records/*.csv).
    records: z.boolean().optional(),
    target: z.union([
      z.object({ project: PROJECT_ID }).strict(),
      z.object({ new: z.object({ id: PROJECT_ID, name: z.string().min(1).max(200) }).strict() }).strict(),
    ]),
  })
  .strict()
  .refine(
    (b) => [b.studies, b.query, b.records_query, b.subjects].filter((x) => x !== undefined).length === 1,
    { message: 'give exactly one of studies, query, records_query and subjects' },
  );

const COHORT_ID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Who may see what of a cohort: its source project's curators everything, its research project's readers progress. */
async function cohortFor(
  ctx: Context,
  services: Services,
  need: 'source-curator' | 'research-reader' | 'either',
): Promise<CohortRow> {
  const id = ctx.params.cohort as string;
  const row = COHORT_ID.test(id) ? await getCohort(services.db, id) : undefined;
  const p = principalOf(ctx);
  // A cohort the caller may not use answers 404, never 403: its existence says something about the source.
  if (!row || !allowed(p, row, need)) throw new NotFoundError('cohort not found');
  return row;
}

function allowed(
  p: Principal,
  row: CohortRow,
  need: 'source-curator' | 'research-reader' | 'either',
): boolean {
  const curator = hasRole(p, row.source_project_id, 'curator');
  const reader = hasRole(p, row.research_project_id, 'reader');
  return need === 'source-curator' ? curator : need === 'research-reader' ? reader : curator || reader;
}

/** The cohort as the API shows it; the source list only to source curators. */
function present(row: CohortRow, reasons: Awaited<ReturnType<typeof cohortReasons>>, curator: boolean) {
  return {
    id: row.id,
    name: row.name,
    source_project: curator ? row.source_project_id : undefined,
    research_project: row.research_project_id,
    state: row.state,
    created_at: row.created_at,
    finished_at: row.finished_at,
    profile: row.profile,
    progress: {
      total: row.total,
      done: row.done,
      pending: row.pending,
      withheld: row.withheld,
      failed: row.failed,
      withdrawn: row.withdrawn,
      bytes: row.bytes,
      reasons,
    },
    source_studies: curator ? row.source_studies : undefined,
  };
}

/**
 * `/api/projects/{p}/cohorts` and `/api/cohorts/{id}`: de-identified research cohorts (issue 10). Creating,
 * cancelling, retrying, mappings and withdrawal need `curator` on the source project; research project readers see
 * progress and download the archive.
 */
export function cohortsRouter(services: Services, deid: Pick<Deidentifier, 'profileDescription'>): Router {
  const router = new Router();

  router.post('/api/projects/:project/cohorts', async (ctx) => {
    const source = await requireExistingProjectRole(ctx, services, 'curator');
    const parsed = cohortInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) {
      throw new BadRequestError(
        parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
      );
    }
    const p = principalOf(ctx);
    const { records_query: recordsQuery, subjects, ...request } = parsed.data;
    let fromRecords: { subjects: number } | undefined;
    if (recordsQuery || subjects) {
      const picked = await cohortStudiesOfRecords(
        services.db,
        source,
        recordsQuery ? { query: recordsQuery } : { subjects: subjects! },
        COHORT_MAX_SUBJECTS,
      );
      if (picked.studies.length === 0) throw new BadRequestError('the cohort selects no study');
      request.studies = picked.studies;
      fromRecords = { subjects: picked.subjects };
    }
    const planned = await planCohort({ db: services.db, deid }, p, source, request as CohortRequest, {
      maxInstances: services.config.COHORT_MAX_INSTANCES,
      qidoMaxLimit: services.config.QIDO_MAX_LIMIT,
    });
    if (parsed.data.records) await setCohortCarriesRecords(services.db, planned.id);
    noteAudit(ctx, {
      action: 'cohort.create',
      projectId: source,
      detail: {
        cohort: planned.id,
        research_project: planned.researchProjectId,
        instances: planned.instances,
        ...(fromRecords && {
          from_records: recordsQuery ? 'query' : 'subjects',
          subjects: fromRecords.subjects,
        }),
      },
    });
    // The cohort is durable in PostgreSQL; if Redis is down now, POST .../retry queues it later.
    await enqueueCohort(planned.id);
    ctx.status = 202;
    ctx.set('Location', `/api/cohorts/${planned.id}`);
    ctx.body = { id: planned.id, research_project: planned.researchProjectId, instances: planned.instances };
  });

  router.get('/api/projects/:project/cohorts', async (ctx) => {
    const source = await requireExistingProjectRole(ctx, services, 'curator');
    noteAudit(ctx, { action: 'cohort.list', projectId: source });
    ctx.body = (await listCohorts(services.db, source)).map((r) => present(r, [], true));
  });

  router.get('/api/cohorts/:cohort', async (ctx) => {
    const row = await cohortFor(ctx, services, 'either');
    noteAudit(ctx, { action: 'cohort.show', projectId: row.research_project_id, detail: { cohort: row.id } });
    const curator = hasRole(principalOf(ctx), row.source_project_id, 'curator');
    ctx.body = present(row, await cohortReasons(services.db, row.id), curator);
  });

  router.post('/api/cohorts/:cohort/cancel', async (ctx) => {
    const row = await cohortFor(ctx, services, 'source-curator');
    if (row.state === 'done') throw new AppError(409, 'conflict', 'the cohort has finished');
    await setCohortState(services.db, row.id, 'cancelled');
    noteAudit(ctx, { action: 'cohort.cancel', projectId: row.source_project_id, detail: { cohort: row.id } });
    ctx.status = 202;
    ctx.body = { id: row.id, state: 'cancelled' };
  });

  router.post('/api/cohorts/:cohort/retry', async (ctx) => {
    const row = await cohortFor(ctx, services, 'source-curator');
    const reset = await resetFailed(services.db, row.id);
    noteAudit(ctx, {
      action: 'cohort.retry',
      projectId: row.source_project_id,
      detail: { cohort: row.id, instances: reset },
    });
    await enqueueCohort(row.id);
    ctx.status = 202;
    ctx.set('Location', `/api/cohorts/${row.id}`);
    ctx.body = { id: row.id, state: 'queued', retried: reset };
  });

  router.get('/api/cohorts/:cohort/uid_mapping.csv', async (ctx) => {
    const row = await cohortFor(ctx, services, 'source-curator');
    noteAudit(ctx, {
      action: 'cohort.uid-mapping',
      projectId: row.source_project_id,
      detail: { cohort: row.id },
    });
    ctx.type = 'text/csv; charset=utf-8';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = Readable.from(uidMappingCsv(services.db, row.id));
  });

  router.get('/api/cohorts/:cohort/patid_mapping.csv', async (ctx) => {
    const row = await cohortFor(ctx, services, 'source-curator');
    noteAudit(ctx, {
      action: 'cohort.patid-mapping',
      projectId: row.source_project_id,
      detail: { cohort: row.id },
    });
    ctx.type = 'text/csv; charset=utf-8';
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await patientMappingCsv(services.db, row.id);
  });

  router.get('/api/cohorts/:cohort/archive', async (ctx) => {
    const row = await cohortFor(ctx, services, 'research-reader');
    const records = recordEntries(
      await cohortRecordTables(services.db, row, services.config.RECORDS_MAX_SUMMARY_ROWS),
    );
    const zip = await planCohortZip(services.db, services.archive, row.id, records);
    const range = parseRange(ctx.get('range'), zip.size);
    noteAudit(ctx, {
      action: 'cohort.download',
      projectId: row.research_project_id,
      detail: { cohort: row.id, entries: zip.entries, range: range ? `${range[0]}-${range[1]}` : undefined },
    });
    // Same cohort contents, same bytes: the ETag names the contents so If-Range resumes only an unchanged archive.
    const etag = `"${row.id}-${row.done}-${row.withdrawn}-${zip.size}${recordsTag(records)}"`;
    ctx.set('ETag', etag);
    ctx.set('Accept-Ranges', 'bytes');
    ctx.set('Content-Disposition', `attachment; filename="cohort-${row.id}.zip"`);
    ctx.type = 'application/zip';
    const ifRange = ctx.get('if-range');
    if (range && (!ifRange || ifRange === etag)) {
      if (range === 'unsatisfiable') {
        ctx.set('Content-Range', `bytes */${zip.size}`);
        throw new AppError(416, 'range_not_satisfiable', 'the range is outside the archive');
      }
      ctx.status = 206;
      ctx.set('Content-Range', `bytes ${range[0]}-${range[1]}/${zip.size}`);
      ctx.length = range[1] - range[0] + 1;
      ctx.body = zip.open(range[0], range[1]);
      return;
    }
    ctx.status = 200;
    // HEAD answers the size without opening the archive's first entry in Orthanc.
    if (ctx.method === 'HEAD') {
      ctx.body = '';
      ctx.length = zip.size;
      return;
    }
    ctx.length = zip.size;
    ctx.body = zip.open(0, zip.size - 1);
  });

  router.delete('/api/cohorts/:cohort/subjects/:pseudonym', async (ctx) => {
    const row = await cohortFor(ctx, services, 'source-curator');
    const pseudonym = ctx.params.pseudonym as string;
    if (!isPseudonym(pseudonym) || !(await cohortHasSubject(services.db, row.id, pseudonym)))
      throw new NotFoundError('subject not found in the cohort');
    const removed = await withdrawSubject(
      { db: services.db, archive: services.archive },
      row.research_project_id,
      pseudonym,
    );
    noteAudit(ctx, {
      action: 'cohort.withdraw-subject',
      projectId: row.research_project_id,
      detail: { cohort: row.id, pseudonym, instances: removed },
    });
    ctx.body = { cohort: row.id, pseudonym, removed };
  });

  return router;
}

/** One `bytes=a-b` range (RFC 9110 §14.1.2), 'unsatisfiable', or undefined for none or one not understood. */
export function parseRange(header: string, size: number): [number, number] | 'unsatisfiable' | undefined {
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  let start: number;
  let end: number;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) return 'unsatisfiable';
    start = Math.max(size - suffix, 0);
    end = size - 1;
  } else {
    start = Number(m[1]);
    end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
    if (m[2] !== '' && Number(m[2]) < start) return undefined;
  }
  if (start >= size) return 'unsatisfiable';
  return [start, end];
}
