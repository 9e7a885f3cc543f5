import Router from '@koa/router';
import type { Context } from 'koa';
import { Readable } from 'node:stream';
import sharp from 'sharp';
import { ZipFile } from 'yazl';
import { z } from 'zod';
import { principalOf, noteAudit, requireExistingProjectRole } from '../http/context';
import { AppError, BadRequestError, NotFoundError } from '../errors';
import { getCohort } from '../index-db/cohorts';
import { withTransaction } from '../index-db/pool';
import {
  deleteRecord,
  ensureSubject,
  getFile,
  getRecord,
  getSubject,
  insertFileVersion,
  latestRecordTypes,
  listFiles,
  listSubjects,
  type RecordRow,
  type RecordTypeRow,
  searchSubjects,
  streamTypeRecords,
  studiesOfSubjects,
  subjectRecords,
  subjectStudies,
  type SubjectRow,
  syncSubjectsFromIndex,
} from '../index-db/records';
import { hasRole } from '../auth/access';
import { cohortRecordTables } from '../records/cohort-records';
import { discardBlobs, getFileStore, lockBlobs, type StoredBlob } from '../records/file-store';
import { checkMapping, importRows, type ImportMapping, type ImportSummary } from '../records/import';
import { TYPE_NAME, valueToCell } from '../records/schema';
import { searchConditions, searchInput } from '../records/search';
import { compiledType, defineType, loadType, writeRecord } from '../records/service';
import {
  csvOut,
  readSheet,
  readSheetHeader,
  type SheetFormat,
  sheetFormat,
  type SheetRow,
  xlsxOut,
} from '../records/sheets';
import { kmByGroup, kmSvg, summariseFields } from '../records/summary';
import type { Services } from '../services';
import { readJsonBody } from './body';
import { receiveFiles, receiveSheet } from './records-upload';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const typeInput = z
  .object({
    key: z.string().max(64).nullable().optional(),
    parent: z.string().max(64).nullable().optional(),
    schema: z.record(z.string(), z.unknown()),
  })
  .strict();

const recordInput = z
  .object({ data: z.record(z.string(), z.unknown()), parent: z.string().min(1).max(256).optional() })
  .strict();

const subjectInput = z
  .object({
    patient_id: z.string().min(1).max(64),
    issuer: z.string().max(64).default(''),
    kind: z.enum(['patient', 'phantom']).default('patient'),
  })
  .strict();

const mappingInput = z
  .object({
    subject: z.string().min(1).max(256),
    issuer: z.string().min(1).max(256).optional(),
    parent: z.string().min(1).max(256).optional(),
    fields: z.record(z.string(), z.string().min(1).max(256)),
  })
  .strict();

function zodProblems(err: z.ZodError, prefix = ''): BadRequestError {
  return new BadRequestError(
    err.issues.map((i) => `${prefix}${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
  );
}

/** The record as the API shows it. */
function presentRecord(r: RecordRow) {
  return {
    id: r.id,
    subject: r.subject_id,
    type: r.type_name,
    type_version: r.type_version,
    key: r.record_key,
    parent: r.parent_id,
    data: r.data,
    revision: r.revision,
    created_at: r.created_at,
    updated_at: r.updated_at,
  };
}

/** A type version as the API shows it (schema properties in the order they were written). */
function presentType(t: Pick<RecordTypeRow, 'name' | 'version' | 'key_field' | 'parent_type' | 'schema'>) {
  return { name: t.name, version: t.version, key: t.key_field, parent: t.parent_type, schema: t.schema };
}

function presentSubject(s: SubjectRow) {
  return { id: s.id, patient_id: s.patient_id, issuer: s.issuer, kind: s.kind, created_at: s.created_at };
}

/**
 * `/api/projects/{p}/record-types`, `/subjects/...`: research records beside the images (issue 18). Readers read,
 * contributors write records and files, curators define types, import and export. Subject and record ids in paths
 * are opaque UUIDs: a Patient ID never appears in a URL.
 */
export function recordsRouter(services: Services): Router {
  const router = new Router({ prefix: '/api/projects/:project' });
  const db = services.db;
  const cfg = services.config;

  const subjectOf = async (ctx: Context, projectId: string): Promise<SubjectRow> => {
    const id = ctx.params.subject as string;
    const s = UUID.test(id) ? await getSubject(db, projectId, id) : undefined;
    if (!s) throw new NotFoundError('subject not found');
    return s;
  };
  const recordOf = async (ctx: Context, subject: SubjectRow): Promise<RecordRow> => {
    const id = ctx.params.record as string;
    const r = UUID.test(id) ? await getRecord(db, subject.project_id, id) : undefined;
    if (!r || r.subject_id !== subject.id) throw new NotFoundError('record not found');
    return r;
  };
  const typeName = (ctx: Context): string => {
    const t = ctx.params.type as string;
    if (!TYPE_NAME.test(t)) throw new NotFoundError('record type not found');
    return t;
  };

  // ---- record types

  router.get('/record-types', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    noteAudit(ctx, { action: 'records.types.list', projectId: project });
    ctx.body = (await latestRecordTypes(db, project)).map((t) => ({
      ...presentType(t),
      created_at: t.created_at,
    }));
  });

  router.get('/record-types/:type', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const v = ctx.query.version === undefined ? undefined : Number(ctx.query.version);
    if (v !== undefined && !Number.isInteger(v)) throw new BadRequestError('version: an integer');
    const t = await loadType(db, project, typeName(ctx), v);
    noteAudit(ctx, {
      action: 'records.types.show',
      projectId: project,
      detail: { type: t.name, version: t.version },
    });
    ctx.body = {
      ...presentType({
        name: t.name,
        version: t.version,
        key_field: t.key,
        parent_type: t.parent,
        schema: t.schema,
      }),
      fields: t.fields,
    };
  });

  // PUT defines the next version; records keep the version they were validated against.
  router.put('/record-types/:type', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'curator');
    const parsed = typeInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) throw zodProblems(parsed.error);
    const row = await defineType(db, project, { name: typeName(ctx), ...parsed.data }, principalOf(ctx).id);
    noteAudit(ctx, {
      action: 'records.types.define',
      projectId: project,
      detail: { type: row.name, version: row.version },
    });
    ctx.status = row.version === 1 ? 201 : 200;
    ctx.body = presentType(row);
  });

  // ---- subjects

  router.get('/subjects', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const limit = Math.min(Number(ctx.query.limit ?? 100) || 100, cfg.RECORDS_SEARCH_MAX_LIMIT);
    const offset = Math.max(Number(ctx.query.offset ?? 0) || 0, 0);
    // Subjects are derived from the index on first look: a patient whose images arrived is a subject.
    await syncSubjectsFromIndex(db, project);
    const rows = await listSubjects(db, project, limit, offset);
    noteAudit(ctx, { action: 'records.subjects.list', projectId: project, detail: { count: rows.length } });
    ctx.body = rows.map((s) => ({ ...presentSubject(s), studies: s.studies, records: s.records }));
  });

  router.post('/subjects', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'contributor');
    const parsed = subjectInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) throw zodProblems(parsed.error);
    const s = await ensureSubject(db, project, parsed.data.patient_id, parsed.data.issuer, parsed.data.kind);
    noteAudit(ctx, { action: 'records.subjects.create', projectId: project, detail: { subject: s.id } });
    ctx.status = 201;
    ctx.set('Location', `/api/projects/${project}/subjects/${s.id}`);
    ctx.body = presentSubject(s);
  });

  router.post('/subjects/search', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const parsed = searchInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) throw zodProblems(parsed.error);
    const types = new Map((await latestRecordTypes(db, project)).map((t) => [t.name, compiledType(t)]));
    const { records, imaging } = searchConditions(parsed.data, types);
    const limit = Math.min(parsed.data.limit ?? 100, cfg.RECORDS_SEARCH_MAX_LIMIT);
    if (records.length === 0) await syncSubjectsFromIndex(db, project);
    const found = await searchSubjects(db, project, records, imaging, limit, parsed.data.offset);
    const studies = await studiesOfSubjects(
      db,
      project,
      found.rows.map((r) => r.id),
      imaging,
    );
    noteAudit(ctx, {
      action: 'records.subjects.search',
      projectId: project,
      detail: { conditions: records.length, imaging: !!imaging, count: found.rows.length },
    });
    ctx.body = {
      subjects: found.rows.map((r) => ({
        id: r.id,
        patient_id: r.patient_id,
        issuer: r.issuer,
        studies: studies.get(r.id) ?? [],
      })),
      more: found.more,
    };
  });

  router.get('/subjects/:subject', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const s = await subjectOf(ctx, project);
    noteAudit(ctx, { action: 'records.subjects.show', projectId: project, detail: { subject: s.id } });
    ctx.body = {
      ...presentSubject(s),
      studies: await subjectStudies(db, s),
      records: (await subjectRecords(db, s.id)).map(presentRecord),
    };
  });

  // ---- records

  router.get('/subjects/:subject/records', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const s = await subjectOf(ctx, project);
    const type = typeof ctx.query.type === 'string' ? ctx.query.type : undefined;
    const rows = await subjectRecords(db, s.id, type);
    noteAudit(ctx, {
      action: 'records.list',
      projectId: project,
      detail: { subject: s.id, count: rows.length },
    });
    ctx.body = rows.map(presentRecord);
  });

  router.post('/subjects/:subject/records/:type', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'contributor');
    const s = await subjectOf(ctx, project);
    const parsed = recordInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) throw zodProblems(parsed.error);
    const out = await writeRecord(db, s, typeName(ctx), parsed.data, principalOf(ctx).id);
    noteAudit(ctx, {
      action: out.created ? 'records.create' : 'records.update',
      projectId: project,
      detail: { subject: s.id, record: out.record.id, type: out.record.type_name, changed: out.changed },
    });
    ctx.status = out.created ? 201 : 200;
    ctx.set('Location', `/api/projects/${project}/subjects/${s.id}/records/${out.record.id}`);
    ctx.body = presentRecord(out.record);
  });

  router.get('/subjects/:subject/records/:record', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const s = await subjectOf(ctx, project);
    const r = await recordOf(ctx, s);
    noteAudit(ctx, { action: 'records.show', projectId: project, detail: { subject: s.id, record: r.id } });
    ctx.body = { ...presentRecord(r), files: (await listFiles(db, s.id, r.id)).map(presentFile) };
  });

  router.put('/subjects/:subject/records/:record', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'contributor');
    const s = await subjectOf(ctx, project);
    const r = await recordOf(ctx, s);
    const parsed = recordInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) throw zodProblems(parsed.error);
    const out = await writeRecord(db, s, r.type_name, { ...parsed.data, id: r.id }, principalOf(ctx).id);
    noteAudit(ctx, {
      action: 'records.update',
      projectId: project,
      detail: { subject: s.id, record: r.id, type: r.type_name, changed: out.changed },
    });
    ctx.body = presentRecord(out.record);
  });

  router.delete('/subjects/:subject/records/:record', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'contributor');
    const s = await subjectOf(ctx, project);
    const r = await recordOf(ctx, s);
    await deleteRecord(db, project, r.id);
    noteAudit(ctx, { action: 'records.delete', projectId: project, detail: { subject: s.id, record: r.id } });
    ctx.status = 204;
  });

  // ---- files (subject-level and record-level share the handlers)

  const upload = async (ctx: Context, withRecord: boolean) => {
    const project = await requireExistingProjectRole(ctx, services, 'contributor');
    const s = await subjectOf(ctx, project);
    const r = withRecord ? await recordOf(ctx, s) : undefined;
    const store = getFileStore();
    const discard = (blobs: StoredBlob[]) => discardBlobs(db, store, blobs);
    const files = await receiveFiles(
      ctx,
      store,
      { maxFileBytes: cfg.RECORDS_FILE_MAX_BYTES, maxFiles: cfg.RECORDS_UPLOAD_MAX_FILES },
      discard,
    );
    const by = principalOf(ctx).id;
    // The bytes are durable in the store before any row names them; rows of one upload commit together, and when
    // they cannot, the blobs the upload made are discarded (no orphan bytes, no half upload).
    const rows = await withTransaction(db, async (client) => {
      await lockBlobs(
        client,
        store,
        files.map((f) => f.sha256),
      );
      const out = [];
      for (const f of files)
        out.push(
          await insertFileVersion(client, {
            project_id: project,
            subject_id: s.id,
            record_id: r?.id ?? null,
            path: f.path,
            sha256: f.sha256,
            size: f.size,
            media_type: f.mediaType,
            created_by: by,
          }),
        );
      return out;
    }).catch(async (err: unknown) => {
      await discard(files).catch(() => undefined);
      throw err;
    });
    noteAudit(ctx, {
      action: 'records.files.upload',
      projectId: project,
      bytes: files.reduce((a, f) => a + f.size, 0),
      detail: { subject: s.id, record: r?.id, files: rows.length },
    });
    ctx.status = 201;
    ctx.body = rows.map(presentFile);
  };
  router.post('/subjects/:subject/files', (ctx) => upload(ctx, false));
  router.post('/subjects/:subject/records/:record/files', (ctx) => upload(ctx, true));

  const list = async (ctx: Context, withRecord: boolean) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const s = await subjectOf(ctx, project);
    const r = withRecord ? await recordOf(ctx, s) : undefined;
    const rows = await listFiles(db, s.id, r?.id ?? null, ctx.query.versions === 'all');
    noteAudit(ctx, {
      action: 'records.files.list',
      projectId: project,
      detail: { subject: s.id, record: r?.id },
    });
    ctx.body = rows.map(presentFile);
  };
  router.get('/subjects/:subject/files', (ctx) => list(ctx, false));
  router.get('/subjects/:subject/records/:record/files', (ctx) => list(ctx, true));

  // A ZIP of the latest version of every file (deflated: these are not DICOM, many compress well).
  const zipOf = async (ctx: Context, withRecord: boolean) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const s = await subjectOf(ctx, project);
    const r = withRecord ? await recordOf(ctx, s) : undefined;
    const rows = await listFiles(db, s.id, r?.id ?? null);
    if (rows.length === 0) throw new NotFoundError('no files');
    const store = getFileStore();
    const zip = new ZipFile();
    for (const f of rows)
      zip.addReadStreamLazy(f.path, { mtime: f.created_at, size: f.size }, (cb) => {
        store.open(f.sha256).then(
          (st) => cb(null, st),
          (err: unknown) => cb(err, Readable.from([])),
        );
      });
    zip.end();
    noteAudit(ctx, {
      action: 'records.files.download-zip',
      projectId: project,
      detail: { subject: s.id, record: r?.id, files: rows.length },
    });
    ctx.type = 'application/zip';
    ctx.set('Content-Disposition', `attachment; filename="files-${r?.id ?? s.id}.zip"`);
    ctx.body = zip.outputStream;
  };
  router.get('/subjects/:subject/files.zip', (ctx) => zipOf(ctx, false));
  router.get('/subjects/:subject/records/:record/files.zip', (ctx) => zipOf(ctx, true));

  router.get('/subjects/:subject/files/:file', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const s = await subjectOf(ctx, project);
    const id = ctx.params.file as string;
    const f = UUID.test(id) ? await getFile(db, project, id) : undefined;
    if (!f || f.subject_id !== s.id) throw new NotFoundError('file not found');
    const body = await getFileStore().open(f.sha256);
    noteAudit(ctx, {
      action: 'records.files.download',
      projectId: project,
      detail: { subject: s.id, file: f.id },
    });
    ctx.type = f.media_type;
    ctx.length = f.size;
    ctx.set('ETag', `"${f.sha256}"`);
    ctx.set('Digest', `sha-256=${Buffer.from(f.sha256, 'hex').toString('base64')}`);
    const name = f.path
      .split('/')
      .pop()!
      .replace(/[^\w.-]/g, '_');
    ctx.set('Content-Disposition', `attachment; filename="${name}"`);
    ctx.body = body;
  });

  // ---- import / export

  // The column names of a sheet (its first row, CSV or XLSX), so a client can offer them in the mapping before it
  // imports; nothing is stored.
  router.post('/record-types/:type/import/columns', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'curator');
    const type = await loadType(db, project, typeName(ctx));
    const sheet = await receiveSheet(ctx, cfg.RECORDS_IMPORT_MAX_BYTES, { mapping: false });
    try {
      const format = sheetFormat(sheet.filename, sheet.mimeType);
      const columns = (await readSheetHeader(sheet.path, format)).filter((c) => c !== '');
      noteAudit(ctx, {
        action: 'records.import.columns',
        projectId: project,
        detail: { type: type.name, format, columns: columns.length },
      });
      ctx.body = { format, columns };
    } finally {
      await sheet.cleanup();
    }
  });

  router.post('/record-types/:type/import', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'curator');
    const type = await loadType(db, project, typeName(ctx));
    const dryRun = ctx.query.dry_run === 'true' || ctx.query.dry_run === '1';
    const sheet = await receiveSheet(ctx, cfg.RECORDS_IMPORT_MAX_BYTES);
    let started = false;
    try {
      const parsedMapping = mappingInput.safeParse(sheet.mapping);
      if (!parsedMapping.success) throw zodProblems(parsedMapping.error, 'mapping.');
      const mapping = parsedMapping.data as ImportMapping;
      const format: SheetFormat = sheetFormat(sheet.filename, sheet.mimeType);
      // The first row is read before answering, so a sheet that does not fit the mapping is a plain 400.
      const rows = readSheet(sheet.path, format);
      const first = await rows.next();
      checkMapping(type, mapping, first.done ? undefined : Object.keys(first.value.cells));
      const all = (async function* (): AsyncGenerator<SheetRow> {
        if (!first.done) yield first.value;
        yield* rows;
      })();
      // The audit event is written when the response ends; the summary object fills in while rows stream.
      const summary: ImportSummary = { rows: 0, create: 0, change: 0, unchanged: 0, refuse: 0 };
      noteAudit(ctx, {
        action: dryRun ? 'records.import.dry-run' : 'records.import',
        projectId: project,
        detail: { type: type.name, version: type.version, format, summary },
      });
      const outcomes = importRows(db, project, type, all, mapping, {
        dryRun,
        by: principalOf(ctx).id,
        batch: cfg.RECORDS_IMPORT_BATCH,
        maxRows: cfg.RECORDS_IMPORT_MAX_ROWS,
        summary,
      });
      const logger = services.logger;
      // Progress is the response itself: one NDJSON line per row as each batch is decided, the summary last.
      ctx.type = 'application/x-ndjson';
      ctx.set('Cache-Control', 'no-store');
      ctx.body = Readable.from(
        (async function* () {
          try {
            for await (const o of outcomes) yield JSON.stringify(o) + '\n';
            yield JSON.stringify({ summary, dry_run: dryRun }) + '\n';
          } catch (err) {
            const e = err instanceof AppError ? err : undefined;
            if (!e)
              logger.error({ err: String((err as Error).name), type: type.name }, 'records import failed');
            yield (
              JSON.stringify({
                error: { code: e?.code ?? 'internal_error', message: e?.message ?? 'import failed' },
                summary,
              }) + '\n'
            );
          } finally {
            await sheet.cleanup();
          }
        })(),
      );
      started = true;
    } finally {
      if (!started) await sheet.cleanup();
    }
  });

  // `export?format=csv|xlsx`, or `export.csv` / `export.xlsx` (a path a single-use download link can name).
  const exportRecords = async (ctx: Context, format: 'csv' | 'xlsx' | undefined) => {
    const project = await requireExistingProjectRole(ctx, services, 'curator');
    const type = await loadType(db, project, typeName(ctx));
    if (!format) throw new BadRequestError('format: csv or xlsx');
    const header = [
      'subject',
      'issuer',
      ...(type.parent ? ['parent'] : []),
      ...type.fields.map((f) => f.name),
      'revision',
      'updated_at',
    ];
    const rows = (async function* () {
      for await (const r of streamTypeRecords(db, project, type.name))
        yield [
          r.patient_id,
          r.issuer,
          ...(type.parent ? [r.parent_key ?? ''] : []),
          ...type.fields.map((f) => valueToCell(r.data[f.name])),
          r.revision,
          r.updated_at.toISOString(),
        ];
    })();
    noteAudit(ctx, { action: 'records.export', projectId: project, detail: { type: type.name, format } });
    ctx.set('Cache-Control', 'no-store');
    ctx.set('Content-Disposition', `attachment; filename="${type.name}.${format}"`);
    if (format === 'csv') {
      ctx.type = 'text/csv; charset=utf-8';
      ctx.body = csvOut(header, rows);
    } else {
      ctx.type = 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet';
      ctx.body = xlsxOut(type.name, header, rows);
    }
  };
  router.get('/record-types/:type/export', (ctx) =>
    exportRecords(
      ctx,
      ctx.query.format === 'xlsx'
        ? 'xlsx'
        : ctx.query.format === undefined || ctx.query.format === 'csv'
          ? 'csv'
          : undefined,
    ),
  );
  router.get('/record-types/:type/export.csv', (ctx) => exportRecords(ctx, 'csv'));
  router.get('/record-types/:type/export.xlsx', (ctx) => exportRecords(ctx, 'xlsx'));

  // ---- summaries

  const typeRows = async (project: string, name: string) => {
    const out: Array<Record<string, unknown>> = [];
    for await (const r of streamTypeRecords(db, project, name)) {
      if (out.length >= cfg.RECORDS_MAX_SUMMARY_ROWS)
        throw new BadRequestError(`more than ${cfg.RECORDS_MAX_SUMMARY_ROWS} records to summarise`);
      out.push(r.data);
    }
    return out;
  };

  router.get('/record-types/:type/summary', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'reader');
    const type = await loadType(db, project, typeName(ctx));
    const rows = await typeRows(project, type.name);
    noteAudit(ctx, { action: 'records.summary', projectId: project, detail: { type: type.name } });
    ctx.body = summaryBody(type, rows, ctx.query.group);
  });

  for (const ext of ['svg', 'png'] as const)
    router.get(`/record-types/:type/km.${ext}`, async (ctx) => {
      const project = await requireExistingProjectRole(ctx, services, 'reader');
      const type = await loadType(db, project, typeName(ctx));
      const rows = await typeRows(project, type.name);
      noteAudit(ctx, { action: 'records.summary.km', projectId: project, detail: { type: type.name } });
      await sendKm(ctx, type, rows, ext);
    });

  return router;
}

/** `/api/cohorts/{id}/records/...`: the de-identified records of a cohort, for its research project's readers. */
export function cohortRecordsRouter(services: Services): Router {
  const router = new Router({ prefix: '/api/cohorts/:cohort/records' });
  const tablesOf = async (ctx: Context) => {
    const id = ctx.params.cohort as string;
    const row = UUID.test(id) ? await getCohort(services.db, id) : undefined;
    const p = principalOf(ctx);
    if (
      !row ||
      !(hasRole(p, row.research_project_id, 'reader') || hasRole(p, row.source_project_id, 'curator'))
    )
      throw new NotFoundError('cohort not found');
    return {
      row,
      tables: await cohortRecordTables(services.db, row, services.config.RECORDS_MAX_SUMMARY_ROWS),
    };
  };
  const tableOf = (tables: Awaited<ReturnType<typeof cohortRecordTables>>, name: unknown) => {
    const t = tables.find((x) => x.type.name === name);
    if (!t) throw new NotFoundError('the cohort carries no records of that type');
    return t;
  };

  router.get('/', async (ctx) => {
    const { row, tables } = await tablesOf(ctx);
    noteAudit(ctx, {
      action: 'cohort.records.list',
      projectId: row.research_project_id,
      detail: { cohort: row.id },
    });
    ctx.body = tables.map((t) => ({
      type: t.type.name,
      rows: t.rows.length,
      fields: t.fields,
      time_to_event: t.type.timeToEvent,
    }));
  });

  router.get('/:type/summary', async (ctx) => {
    const { row, tables } = await tablesOf(ctx);
    const t = tableOf(tables, ctx.params.type);
    noteAudit(ctx, {
      action: 'cohort.records.summary',
      projectId: row.research_project_id,
      detail: { cohort: row.id, type: t.type.name },
    });
    ctx.body = summaryBody({ ...t.type, fields: t.fields }, t.rows, ctx.query.group);
  });

  for (const ext of ['svg', 'png'] as const)
    router.get(`/:type/km.${ext}`, async (ctx) => {
      const { row, tables } = await tablesOf(ctx);
      const t = tableOf(tables, ctx.params.type);
      noteAudit(ctx, {
        action: 'cohort.records.km',
        projectId: row.research_project_id,
        detail: { cohort: row.id, type: t.type.name },
      });
      await sendKm(ctx, { ...t.type, fields: t.fields }, t.rows, ext);
    });
  return router;
}

type Summarisable = Pick<ReturnType<typeof compiledType>, 'name' | 'fields' | 'timeToEvent'>;

function groupField(type: Summarisable, group: unknown): string | undefined {
  if (group === undefined) return undefined;
  const f = type.fields.find((x) => x.name === group);
  if (!f || (f.kind !== 'code' && f.kind !== 'boolean'))
    throw new BadRequestError('group: must name a code or boolean field');
  return f.name;
}

function summaryBody(type: Summarisable, rows: Array<Record<string, unknown>>, group: unknown) {
  const g = groupField(type, group);
  return {
    type: type.name,
    records: rows.length,
    fields: summariseFields(type, rows),
    time_to_event: type.timeToEvent,
    kaplan_meier: type.timeToEvent
      ? kmByGroup(rows, type.timeToEvent.time, type.timeToEvent.event, g)
      : undefined,
  };
}

async function sendKm(
  ctx: Context,
  type: Summarisable,
  rows: Array<Record<string, unknown>>,
  ext: 'svg' | 'png',
): Promise<void> {
  if (!type.timeToEvent)
    throw new BadRequestError(`${type.name} marks no time-to-event field (x-time-to-event)`);
  const g = groupField(type, ctx.query.group);
  const curves = kmByGroup(rows, type.timeToEvent.time, type.timeToEvent.event, g);
  const unit = type.fields.find((f) => f.name === type.timeToEvent!.time)?.unit;
  const svg = kmSvg(curves, {
    title: `${type.name}: Kaplan–Meier${g ? ` by ${g}` : ''}`,
    timeLabel: `${type.timeToEvent.time}${unit ? ` (${unit})` : ''}`,
  });
  ctx.set('Cache-Control', 'no-store');
  if (ext === 'png') {
    ctx.type = 'image/png';
    ctx.body = await sharp(Buffer.from(svg)).png().toBuffer();
  } else {
    ctx.type = 'image/svg+xml';
    ctx.body = svg;
  }
}

/** A file row as the API shows it. */
function presentFile(f: {
  id: string;
  path: string;
  version: number;
  sha256: string;
  size: number;
  media_type: string;
  record_id: string | null;
  created_at: Date;
  run_id?: string | null;
}) {
  return {
    id: f.id,
    path: f.path,
    version: f.version,
    sha256: f.sha256,
    size: Number(f.size),
    media_type: f.media_type,
    record: f.record_id,
    created_at: f.created_at,
    run: f.run_id ?? null,
  };
}
