/**
 * SQL of research records (issue 18): subjects, record types, records, file metadata, searches across records and
 * imaging. Rows only; the rules live in src/records/.
 */
import { randomUUID } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';
import type { Queryable } from './pool';

export interface SubjectRow {
  id: string;
  project_id: string;
  patient_id: string;
  issuer: string;
  kind: 'patient' | 'phantom';
  created_at: Date;
}

/**
 * Creates the subjects of every patient the project's index holds and no subject row has yet (Patient ID + Issuer
 * of Patient ID from the study-level attributes). Idempotent; racing callers agree through the unique key.
 */
export async function syncSubjectsFromIndex(db: Queryable, projectId: string): Promise<number> {
  const r = await db.query(
    `INSERT INTO record_subjects (id, project_id, patient_id, issuer)
     SELECT gen_random_uuid(), $1, s.patient_id, s.issuer
       FROM (SELECT DISTINCT patient_id, patient_issuer AS issuer
               FROM project_studies
              WHERE project_id = $1 AND patient_id IS NOT NULL AND patient_id <> '') s
      WHERE NOT EXISTS (SELECT 1 FROM record_subjects x
                         WHERE x.project_id = $1 AND x.patient_id = s.patient_id AND x.issuer = s.issuer)
     ON CONFLICT DO NOTHING`,
    [projectId],
  );
  return r.rowCount ?? 0;
}

/** Whether a query answers any row. */
async function exists(db: Queryable, sql: string, params: unknown[]): Promise<boolean> {
  return ((await db.query(sql, params)).rowCount ?? 0) > 0;
}

/** The subject of a Patient ID (+ issuer), created when missing. */
export async function ensureSubject(
  db: Queryable,
  projectId: string,
  patientId: string,
  issuer = '',
  kind: 'patient' | 'phantom' = 'patient',
): Promise<SubjectRow> {
  const r = await db.query<SubjectRow>(
    `INSERT INTO record_subjects (id, project_id, patient_id, issuer, kind) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (project_id, patient_id, issuer) DO UPDATE SET issuer = EXCLUDED.issuer
     RETURNING *`,
    [randomUUID(), projectId, patientId, issuer, kind],
  );
  return r.rows[0];
}

/** A subject's identity: Patient ID and Issuer of Patient ID ('' when none). */
export interface PatientKey {
  patientId: string;
  issuer: string;
}

/** The map key of a Patient ID under its issuer (the same Patient ID under two issuers is two patients). */
export function patientKey(k: PatientKey): string {
  return `${k.issuer}\u0000${k.patientId}`;
}

function distinctKeys(keys: PatientKey[]): { ids: string[]; issuers: string[] } {
  const seen = new Map(keys.map((k) => [patientKey(k), k]));
  return {
    ids: [...seen.values()].map((k) => k.patientId),
    issuers: [...seen.values()].map((k) => k.issuer),
  };
}

/** Subjects of many patients at once, created when missing; a map patientKey → subject id. */
export async function ensureSubjects(
  db: Queryable,
  projectId: string,
  keys: PatientKey[],
): Promise<Map<string, string>> {
  const { ids, issuers } = distinctKeys(keys);
  if (ids.length === 0) return new Map();
  await db.query(
    `INSERT INTO record_subjects (id, project_id, patient_id, issuer)
     SELECT gen_random_uuid(), $1, p, i FROM unnest($2::text[], $3::text[]) AS k (p, i)
     ON CONFLICT DO NOTHING`,
    [projectId, ids, issuers],
  );
  return subjectsByPatientKeys(db, projectId, keys);
}

/** Existing subjects of patients, without creating any; a map patientKey → subject id. */
export async function subjectsByPatientKeys(
  db: Queryable,
  projectId: string,
  keys: PatientKey[],
): Promise<Map<string, string>> {
  const { ids, issuers } = distinctKeys(keys);
  if (ids.length === 0) return new Map();
  const r = await db.query<{ id: string; patient_id: string; issuer: string }>(
    `SELECT s.id, s.patient_id, s.issuer FROM record_subjects s
       JOIN unnest($2::text[], $3::text[]) AS k (p, i) ON s.patient_id = k.p AND s.issuer = k.i
      WHERE s.project_id = $1`,
    [projectId, ids, issuers],
  );
  return new Map(r.rows.map((x) => [patientKey({ patientId: x.patient_id, issuer: x.issuer }), x.id]));
}

export async function getSubject(
  db: Queryable,
  projectId: string,
  id: string,
): Promise<SubjectRow | undefined> {
  const r = await db.query<SubjectRow>('SELECT * FROM record_subjects WHERE project_id = $1 AND id = $2', [
    projectId,
    id,
  ]);
  return r.rows[0];
}

/** A page of subjects with their counts of studies and records. */
export async function listSubjects(
  db: Queryable,
  projectId: string,
  limit: number,
  offset: number,
): Promise<Array<SubjectRow & { studies: number; records: number }>> {
  const r = await db.query<SubjectRow & { studies: number; records: number }>(
    `SELECT s.*,
            (SELECT count(*)::int FROM project_studies ps
              WHERE ps.project_id = s.project_id AND ps.patient_id = s.patient_id
                AND ps.patient_issuer = s.issuer) AS studies,
            (SELECT count(*)::int FROM records r WHERE r.subject_id = s.id) AS records
       FROM record_subjects s WHERE s.project_id = $1
      ORDER BY s.patient_id, s.issuer LIMIT $2 OFFSET $3`,
    [projectId, limit, offset],
  );
  return r.rows;
}

/** Studies of a subject (from the index). */
export async function subjectStudies(
  db: Queryable,
  subject: SubjectRow,
): Promise<
  Array<{
    study_uid: string;
    study_date: string | null;
    modalities: string[];
    study_description: string | null;
  }>
> {
  const r = await db.query(
    `SELECT study_uid, study_date, modalities, study_description FROM project_studies
      WHERE project_id = $1 AND patient_id = $2 AND patient_issuer = $3 ORDER BY study_date, study_uid`,
    [subject.project_id, subject.patient_id, subject.issuer],
  );
  return r.rows;
}

// ---- record types

export interface RecordTypeRow {
  project_id: string;
  name: string;
  version: number;
  schema: Record<string, unknown>;
  key_field: string | null;
  parent_type: string | null;
  created_by: string;
  created_at: Date;
}

/**
 * A type row with its schema's properties back in the order they were written (jsonb reorders object keys; the
 * order is kept beside it in field_order). Fields missing from the order (none, unless edited by hand) go last.
 */
function inWrittenOrder(row: RecordTypeRow & { field_order?: string[] | null }): RecordTypeRow {
  const { field_order: order, ...rest } = row;
  const props = rest.schema?.properties as Record<string, unknown> | undefined;
  if (!order || !props || typeof props !== 'object') return rest;
  const names = [...order.filter((n) => n in props), ...Object.keys(props).filter((n) => !order.includes(n))];
  return {
    ...rest,
    schema: { ...rest.schema, properties: Object.fromEntries(names.map((n) => [n, props[n]])) },
  };
}

/** The latest version of every type of a project. */
export async function latestRecordTypes(db: Queryable, projectId: string): Promise<RecordTypeRow[]> {
  const r = await db.query<RecordTypeRow>(
    `SELECT DISTINCT ON (name) * FROM record_types WHERE project_id = $1 ORDER BY name, version DESC`,
    [projectId],
  );
  return r.rows.map(inWrittenOrder);
}

/** One version of a type (the latest when version is omitted). */
export async function getRecordType(
  db: Queryable,
  projectId: string,
  name: string,
  version?: number,
): Promise<RecordTypeRow | undefined> {
  const r = await db.query<RecordTypeRow>(
    `SELECT * FROM record_types WHERE project_id = $1 AND name = $2 AND ($3::int IS NULL OR version = $3)
      ORDER BY version DESC LIMIT 1`,
    [projectId, name, version ?? null],
  );
  return r.rows[0] && inWrittenOrder(r.rows[0]);
}

/** Adds the next version of a type; returns it. */
export async function insertRecordTypeVersion(
  db: Pool,
  t: Omit<RecordTypeRow, 'version' | 'created_at'>,
): Promise<RecordTypeRow> {
  const props = t.schema.properties;
  const order = props && typeof props === 'object' ? Object.keys(props) : null;
  const r = await db.query<RecordTypeRow>(
    `INSERT INTO record_types (project_id, name, version, schema, key_field, parent_type, created_by, field_order)
     SELECT $1, $2, COALESCE(max(version), 0) + 1, $3, $4, $5, $6, $7 FROM record_types
      WHERE project_id = $1 AND name = $2
     RETURNING *`,
    [t.project_id, t.name, t.schema, t.key_field, t.parent_type, t.created_by, order],
  );
  return inWrittenOrder(r.rows[0]);
}

// ---- records

export interface RecordRow {
  id: string;
  project_id: string;
  subject_id: string;
  type_name: string;
  type_version: number;
  record_key: string;
  parent_id: string | null;
  data: Record<string, unknown>;
  revision: number;
  created_by: string;
  created_at: Date;
  updated_by: string;
  updated_at: Date;
}

export async function getRecord(
  db: Queryable,
  projectId: string,
  id: string,
): Promise<RecordRow | undefined> {
  const r = await db.query<RecordRow>('SELECT * FROM records WHERE project_id = $1 AND id = $2', [
    projectId,
    id,
  ]);
  return r.rows[0];
}

/** Records of a subject, optionally of one type, in type then key order. */
export async function subjectRecords(db: Queryable, subjectId: string, type?: string): Promise<RecordRow[]> {
  const r = await db.query<RecordRow>(
    `SELECT * FROM records WHERE subject_id = $1 AND ($2::text IS NULL OR type_name = $2)
      ORDER BY type_name, record_key`,
    [subjectId, type ?? null],
  );
  return r.rows;
}

/** Existing records of a type by key (for an import batch). */
export async function recordsByKeys(
  db: Queryable,
  projectId: string,
  type: string,
  keys: string[],
): Promise<Map<string, RecordRow>> {
  if (keys.length === 0) return new Map();
  const r = await db.query<RecordRow>(
    'SELECT * FROM records WHERE project_id = $1 AND type_name = $2 AND record_key = ANY($3)',
    [projectId, type, keys],
  );
  return new Map(r.rows.map((x) => [x.record_key, x]));
}

/** A record to write: created when the key is new, else its data replaced and its revision bumped. */
export interface RecordWrite {
  id?: string;
  subjectId: string;
  typeName: string;
  typeVersion: number;
  key: string;
  parentId: string | null;
  data: Record<string, unknown>;
}

/** Upserts records by (project, type, key); returns their ids in order. */
export async function upsertRecords(
  db: Queryable,
  projectId: string,
  by: string,
  rows: RecordWrite[],
): Promise<string[]> {
  if (rows.length === 0) return [];
  const r = await db.query<{ id: string; record_key: string }>(
    `INSERT INTO records (id, project_id, subject_id, type_name, type_version, record_key, parent_id, data,
                          created_by, updated_by)
     SELECT u.id, $1, u.subject_id, u.type_name, u.type_version, u.record_key, u.parent_id, u.data, $2, $2
       FROM jsonb_to_recordset($3::jsonb) AS u(id uuid, subject_id uuid, type_name text, type_version int,
                                               record_key text, parent_id uuid, data jsonb)
     ON CONFLICT (project_id, type_name, record_key) DO UPDATE
        SET data = EXCLUDED.data, type_version = EXCLUDED.type_version, parent_id = EXCLUDED.parent_id,
            subject_id = EXCLUDED.subject_id, revision = records.revision + 1, updated_by = EXCLUDED.updated_by,
            updated_at = now()
      WHERE records.data IS DISTINCT FROM EXCLUDED.data OR records.parent_id IS DISTINCT FROM EXCLUDED.parent_id
            OR records.subject_id IS DISTINCT FROM EXCLUDED.subject_id
     RETURNING id, record_key`,
    [
      projectId,
      by,
      JSON.stringify(
        rows.map((w) => ({
          id: w.id ?? randomUUID(),
          subject_id: w.subjectId,
          type_name: w.typeName,
          type_version: w.typeVersion,
          record_key: w.key,
          parent_id: w.parentId,
          data: w.data,
        })),
      ),
    ],
  );
  return r.rows.map((x) => x.id);
}

export async function deleteRecord(db: Queryable, projectId: string, id: string): Promise<boolean> {
  const r = await db.query('DELETE FROM records WHERE project_id = $1 AND id = $2', [projectId, id]);
  return (r.rowCount ?? 0) > 0;
}

/** Every record of a type with its subject's Patient ID, in subject then key order, a page at a time. */
export async function* streamTypeRecords(
  db: Pool,
  projectId: string,
  type: string,
  subjectIds?: string[],
  page = 1000,
): AsyncGenerator<RecordRow & { patient_id: string; issuer: string; parent_key: string | null }> {
  let after: [string, string] = ['', ''];
  for (;;) {
    const r = await db.query<RecordRow & { patient_id: string; issuer: string; parent_key: string | null }>(
      `SELECT r.*, s.patient_id, s.issuer, p.record_key AS parent_key
         FROM records r JOIN record_subjects s ON s.id = r.subject_id
         LEFT JOIN records p ON p.id = r.parent_id
        WHERE r.project_id = $1 AND r.type_name = $2 AND ($5::uuid[] IS NULL OR r.subject_id = ANY($5))
          AND (s.patient_id, r.record_key) > ($3, $4)
        ORDER BY s.patient_id, r.record_key LIMIT $6`,
      [projectId, type, after[0], after[1], subjectIds ?? null, page],
    );
    for (const row of r.rows) yield row;
    if (r.rows.length < page) return;
    const last = r.rows[r.rows.length - 1];
    after = [last.patient_id, last.record_key];
  }
}

/** Whether a Study / Series Instance UID is visible in the project (for x-ref fields). */
export async function refsVisible(
  db: Queryable,
  projectId: string,
  level: 'study' | 'series',
  uids: string[],
): Promise<Set<string>> {
  if (uids.length === 0) return new Set();
  const r = await db.query<{ uid: string }>(
    level === 'study'
      ? 'SELECT study_uid AS uid FROM project_studies WHERE project_id = $1 AND study_uid = ANY($2)'
      : 'SELECT series_uid AS uid FROM project_series WHERE project_id = $1 AND series_uid = ANY($2)',
    [projectId, uids],
  );
  return new Set(r.rows.map((x) => x.uid));
}

// ---- files

export interface FileRow {
  id: string;
  project_id: string;
  subject_id: string;
  record_id: string | null;
  path: string;
  version: number;
  sha256: string;
  size: number;
  media_type: string;
  created_by: string;
  created_at: Date;
  /** The pipeline run that made the file (its outputs and logs), or null for an upload. */
  run_id: string | null;
}

/** Records a stored file as the next version of its path under the subject (and record). */
export async function insertFileVersion(
  db: PoolClient,
  f: Omit<FileRow, 'id' | 'version' | 'created_at' | 'run_id'> & { run_id?: string | null },
): Promise<FileRow> {
  // Serialise versions of one path: two uploads of the same path get 1 and 2, never both 1.
  await db.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`${f.subject_id}/${f.record_id}/${f.path}`]);
  const r = await db.query<FileRow>(
    `INSERT INTO record_files (id, project_id, subject_id, record_id, path, version, sha256, size, media_type, created_by,
                               run_id)
     SELECT $1, $2, $3, $4, $5, COALESCE(max(version), 0) + 1, $6, $7, $8, $9, $10 FROM record_files
      WHERE subject_id = $3 AND record_id IS NOT DISTINCT FROM $4 AND path = $5
     RETURNING *, size::float8 AS size`,
    [
      randomUUID(),
      f.project_id,
      f.subject_id,
      f.record_id,
      f.path,
      f.sha256,
      f.size,
      f.media_type,
      f.created_by,
      f.run_id ?? null,
    ],
  );
  return r.rows[0];
}

/** Serialises, per blob, the rows that name it and a failed upload's removal of it (until the transaction ends). */
export async function lockBlob(client: PoolClient, sha256: string): Promise<void> {
  await client.query('SELECT pg_advisory_xact_lock(hashtext($1))', [`record-blob:${sha256}`]);
}

/** Whether any file row or pipeline artefact of any project names the blob. */
export async function blobReferenced(db: Queryable, sha256: string): Promise<boolean> {
  return exists(
    db,
    `SELECT 1 FROM record_files WHERE sha256 = $1
     UNION ALL SELECT 1 FROM pipeline_artefacts WHERE sha256 = $1 LIMIT 1`,
    [sha256],
  );
}

/** Blobs whose last naming row went before `before` (candidates for collection), after `after` in hash order. */
export async function blobCandidates(
  db: Queryable,
  before: Date,
  after: string,
  limit: number,
): Promise<string[]> {
  const r = await db.query<{ sha256: string }>(
    'SELECT sha256 FROM record_blob_candidates WHERE since < $1 AND sha256 > $2 ORDER BY sha256 LIMIT $3',
    [before, after, limit],
  );
  return r.rows.map((x) => x.sha256);
}

/** Drops a candidate (collected, or named again), unless a newer deletion made it a candidate again since. */
export async function dropBlobCandidate(db: Queryable, sha256: string, before: Date): Promise<void> {
  await db.query('DELETE FROM record_blob_candidates WHERE sha256 = $1 AND since < $2', [sha256, before]);
}

/**
 * The subjects of the patients of some series of a project (Patient ID and Issuer from the study-level columns),
 * created when missing; series without a Patient ID have none.
 */
export async function subjectsOfSeries(
  db: Queryable,
  projectId: string,
  seriesUids: readonly string[],
): Promise<SubjectRow[]> {
  const r = await db.query<{ patient_id: string; issuer: string }>(
    `SELECT DISTINCT st.patient_id, st.patient_issuer AS issuer
       FROM project_series se JOIN project_studies st
         ON st.project_id = se.project_id AND st.study_uid = se.study_uid
      WHERE se.project_id = $1 AND se.series_uid = ANY($2::text[])
        AND st.patient_id IS NOT NULL AND st.patient_id <> ''`,
    [projectId, seriesUids],
  );
  const out: SubjectRow[] = [];
  for (const p of r.rows) out.push(await ensureSubject(db, projectId, p.patient_id, p.issuer));
  return out;
}

/** Files of a subject or a record: the latest version of each path, or every version. */
export async function listFiles(
  db: Queryable,
  subjectId: string,
  recordId: string | null,
  allVersions = false,
): Promise<FileRow[]> {
  const r = await db.query<FileRow>(
    `SELECT ${allVersions ? '' : 'DISTINCT ON (path)'} *, size::float8 AS size FROM record_files
      WHERE subject_id = $1 AND record_id IS NOT DISTINCT FROM $2
      ORDER BY path, version DESC`,
    [subjectId, recordId],
  );
  return r.rows;
}

/** The record files a pipeline run made, in subject then path order. */
export async function runRecordFiles(db: Queryable, runId: string): Promise<FileRow[]> {
  const r = await db.query<FileRow>(
    'SELECT *, size::float8 AS size FROM record_files WHERE run_id = $1 ORDER BY subject_id, path',
    [runId],
  );
  return r.rows;
}

export async function getFile(db: Queryable, projectId: string, id: string): Promise<FileRow | undefined> {
  const r = await db.query<FileRow>(
    'SELECT *, size::float8 AS size FROM record_files WHERE project_id = $1 AND id = $2',
    [projectId, id],
  );
  return r.rows[0];
}

// ---- search across records and imaging

/** One condition on a record field; values are parameters, field names were checked against the type. */
export interface RecordCondition {
  type: string;
  field: string;
  kind: 'number' | 'date' | 'code' | 'text' | 'boolean' | 'ref';
  eq?: string | number | boolean;
  in?: string[];
  min?: number | string;
  max?: number | string;
  contains?: string;
}

export interface ImagingCondition {
  modality?: string;
  dateFrom?: string; // YYYYMMDD
  dateTo?: string;
  description?: string; // substring, case-insensitive
}

/**
 * Subjects with, for each record condition, a record satisfying it, and (when given) a study matching every
 * imaging condition. Answered from the index alone.
 */
export async function searchSubjects(
  db: Queryable,
  projectId: string,
  records: RecordCondition[],
  imaging: ImagingCondition | undefined,
  limit: number,
  offset: number,
): Promise<{ rows: Array<{ id: string; patient_id: string; issuer: string }>; more: boolean }> {
  const params: unknown[] = [projectId];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  const where: string[] = ['s.project_id = $1'];
  for (const c of records) {
    const field = p(c.field);
    const conds: string[] = [`r.type_name = ${p(c.type)}`];
    const text = `(r.data->>${field})`;
    const value =
      c.kind === 'number'
        ? `(r.data->>${field})::numeric`
        : c.kind === 'boolean'
          ? `(r.data->>${field})::boolean`
          : text;
    if (c.eq !== undefined) {
      if (c.kind === 'number') conds.push(`${value} = ${p(c.eq)}::numeric`);
      else if (c.kind === 'boolean') conds.push(`${value} = ${p(c.eq)}::boolean`);
      else conds.push(`${text} = ${p(String(c.eq))}`);
    }
    if (c.in) conds.push(`${text} = ANY(${p(c.in)}::text[])`);
    if (c.min !== undefined)
      conds.push(c.kind === 'number' ? `${value} >= ${p(c.min)}::numeric` : `${text} >= ${p(String(c.min))}`);
    if (c.max !== undefined)
      conds.push(c.kind === 'number' ? `${value} <= ${p(c.max)}::numeric` : `${text} <= ${p(String(c.max))}`);
    if (c.contains !== undefined) conds.push(`${text} ILIKE ${p(`%${escapeLike(c.contains)}%`)}`);
    // jsonb_typeof guards the casts: a field holding another type never raises.
    if (c.kind === 'number') conds.unshift(`jsonb_typeof(r.data->${field}) = 'number'`);
    if (c.kind === 'boolean') conds.unshift(`jsonb_typeof(r.data->${field}) = 'boolean'`);
    where.push(`EXISTS (SELECT 1 FROM records r WHERE r.subject_id = s.id AND ${conds.join(' AND ')})`);
  }
  if (imaging && Object.values(imaging).some((v) => v !== undefined))
    where.push(`EXISTS (SELECT 1 FROM project_studies ps WHERE ${imagingSql(imaging, p)})`);
  const r = await db.query<{ id: string; patient_id: string; issuer: string }>(
    `SELECT s.id, s.patient_id, s.issuer FROM record_subjects s WHERE ${where.join(' AND ')}
      ORDER BY s.patient_id, s.issuer LIMIT ${p(limit + 1)} OFFSET ${p(offset)}`,
    params,
  );
  return { rows: r.rows.slice(0, limit), more: r.rows.length > limit };
}

/** The imaging conditions on `ps` (project_studies) of subject `s`, parameters added through p. */
function imagingSql(imaging: ImagingCondition, p: (v: unknown) => string): string {
  const conds: string[] = [
    'ps.project_id = s.project_id',
    'ps.patient_id = s.patient_id',
    'ps.patient_issuer = s.issuer',
  ];
  if (imaging.modality) conds.push(`ps.modalities @> ARRAY[${p(imaging.modality)}::text]`);
  if (imaging.dateFrom) conds.push(`ps.study_date >= ${p(imaging.dateFrom)}`);
  if (imaging.dateTo) conds.push(`ps.study_date <= ${p(imaging.dateTo)}`);
  if (imaging.description) {
    const d = p(`%${escapeLike(imaging.description)}%`);
    conds.push(
      `(ps.study_description ILIKE ${d} OR EXISTS (SELECT 1 FROM project_series se
          WHERE se.project_id = ps.project_id AND se.study_uid = ps.study_uid AND se.series_description ILIKE ${d}))`,
    );
  }
  return conds.join(' AND ');
}

/** The studies of found subjects that meet the imaging conditions (all their studies without any). */
export async function studiesOfSubjects(
  db: Queryable,
  projectId: string,
  subjectIds: string[],
  imaging: ImagingCondition | undefined,
): Promise<Map<string, string[]>> {
  if (subjectIds.length === 0) return new Map();
  const params: unknown[] = [projectId, subjectIds];
  const p = (v: unknown) => {
    params.push(v);
    return `$${params.length}`;
  };
  const r = await db.query<{ id: string; study_uid: string }>(
    `SELECT s.id, ps.study_uid FROM record_subjects s JOIN project_studies ps ON ${imagingSql(imaging ?? {}, p)}
      WHERE s.project_id = $1 AND s.id = ANY($2::uuid[]) ORDER BY ps.study_date, ps.study_uid`,
    params,
  );
  const out = new Map<string, string[]>();
  for (const x of r.rows) {
    const list = out.get(x.id) ?? [];
    list.push(x.study_uid);
    out.set(x.id, list);
  }
  return out;
}

function escapeLike(s: string): string {
  return s.replace(/[\\%_]/g, (c) => `\\${c}`);
}

// ---- cohorts

export async function setCohortCarriesRecords(db: Queryable, cohortId: string): Promise<void> {
  await db.query('INSERT INTO cohort_records (cohort_id) VALUES ($1) ON CONFLICT DO NOTHING', [cohortId]);
}

export async function cohortCarriesRecords(db: Queryable, cohortId: string): Promise<boolean> {
  return exists(db, 'SELECT 1 FROM cohort_records WHERE cohort_id = $1', [cohortId]);
}

/**
 * The source subjects of a cohort with their pseudonym and date offset: source patients whose instances the
 * cohort stored, joined to the research project's pseudonym map.
 */
export async function cohortSubjects(
  db: Queryable,
  cohortId: string,
): Promise<Array<{ subject_id: string; pseudonym: string; date_offset_days: number }>> {
  const r = await db.query<{ subject_id: string; pseudonym: string; date_offset_days: number }>(
    `SELECT DISTINCT s.id AS subject_id, rp.pseudonym, rp.date_offset_days
       FROM cohorts c
       JOIN research_pseudonyms rp ON rp.project_id = c.research_project_id AND rp.source_project_id = c.source_project_id
       JOIN record_subjects s ON s.project_id = c.source_project_id AND s.patient_id = rp.source_patient_key
                              AND s.issuer = rp.source_issuer
      WHERE c.id = $1
        AND EXISTS (SELECT 1 FROM cohort_instances ci
                     WHERE ci.cohort_id = c.id AND ci.pseudonym = rp.pseudonym AND ci.state = 'done')
      ORDER BY rp.pseudonym`,
    [cohortId],
  );
  return r.rows;
}

/** Source UID → output UID of a cohort's studies and series (for x-ref fields of exported records). */
export async function cohortUidMap(db: Queryable, cohortId: string): Promise<Map<string, string>> {
  const r = await db.query<{ a: string; b: string }>(
    `SELECT DISTINCT source_study_uid AS a, output_study_uid AS b FROM cohort_instances
      WHERE cohort_id = $1 AND state = 'done' AND output_study_uid IS NOT NULL
     UNION
     SELECT DISTINCT source_series_uid, output_series_uid FROM cohort_instances
      WHERE cohort_id = $1 AND state = 'done' AND output_series_uid IS NOT NULL`,
    [cohortId],
  );
  return new Map(r.rows.map((x) => [x.a, x.b]));
}

/** Record types used by records of the given subjects. */
export async function typesOfSubjects(
  db: Queryable,
  projectId: string,
  subjectIds: string[],
): Promise<string[]> {
  if (subjectIds.length === 0) return [];
  const r = await db.query<{ type_name: string }>(
    'SELECT DISTINCT type_name FROM records WHERE project_id = $1 AND subject_id = ANY($2) ORDER BY 1',
    [projectId, subjectIds],
  );
  return r.rows.map((x) => x.type_name);
}
