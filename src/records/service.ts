/**
 * Record types and records of a project: defining a type version, loading compiled types, validating and writing
 * one record (the import writes in batches through the same checks, see import.ts).
 */
import type { Pool } from 'pg';
import { BadRequestError, ConflictError, NotFoundError } from '../errors';
import { isUid, UID_RULE } from '../dicom/uid';
import {
  getRecordType,
  insertRecordTypeVersion,
  type RecordRow,
  type RecordTypeRow,
  recordsByKeys,
  refsVisible,
  type SubjectRow,
  upsertRecords,
  getRecord,
} from '../index-db/records';
import { compileRecordType, type FieldError, type RecordType, validateRecord } from './schema';

const compiled = new Map<string, RecordType>();

/** A type version compiled (compiled once per process: versions never change once written). */
export function compiledType(row: RecordTypeRow): RecordType {
  const k = `${row.project_id}\u0000${row.name}\u0000${row.version}`;
  let t = compiled.get(k);
  if (!t) {
    t = compileRecordType({
      name: row.name,
      version: row.version,
      key: row.key_field,
      parent: row.parent_type,
      schema: row.schema,
    });
    compiled.set(k, t);
  }
  return t;
}

/** The latest (or a given) version of a type; 404 when the project has no such type. */
export async function loadType(
  db: Pool,
  projectId: string,
  name: string,
  version?: number,
): Promise<RecordType> {
  const row = await getRecordType(db, projectId, name, version);
  if (!row) throw new NotFoundError('record type not found');
  return compiledType(row);
}

/** Adds a version of a type (version 1 when new); the definition is checked before it is stored. */
export async function defineType(
  db: Pool,
  projectId: string,
  def: { name: string; key?: string | null; parent?: string | null; schema: unknown },
  by: string,
): Promise<RecordTypeRow> {
  compileRecordType({ ...def, version: 0 });
  if (def.parent) {
    if (def.parent === def.name) throw new BadRequestError('parent: a type cannot be its own parent');
    if (!(await getRecordType(db, projectId, def.parent)))
      throw new BadRequestError(`parent: ${def.parent} is not a record type of this project`);
  }
  return insertRecordTypeVersion(db, {
    project_id: projectId,
    name: def.name,
    schema: def.schema as Record<string, unknown>,
    key_field: def.key ?? null,
    parent_type: def.parent ?? null,
    created_by: by,
  });
}

/** The key a record is upserted by: its key field, or (for types without one) a value the caller gives. */
export function recordKey(type: RecordType, data: Record<string, unknown>): string | undefined {
  if (!type.key) return undefined;
  const v = data[type.key];
  return v === undefined || v === null || v === '' ? undefined : String(v);
}

/** Checks that x-ref fields name studies / series of the project; problems name the field. */
export async function checkRefs(
  db: Pool,
  projectId: string,
  type: RecordType,
  rows: Array<Record<string, unknown>>,
): Promise<Array<FieldError[]>> {
  const out: Array<FieldError[]> = rows.map(() => []);
  for (const f of type.fields.filter((x) => x.kind === 'ref')) {
    // The one UID rule of every route (dicom/uid.ts): a malformed value is named as such, and never echoed.
    const uids = rows.map((r) => r[f.name]).filter((v): v is string => typeof v === 'string' && isUid(v));
    const seen = await refsVisible(db, projectId, f.ref!, [...new Set(uids)]);
    rows.forEach((r, i) => {
      const v = r[f.name];
      if (typeof v !== 'string') return;
      if (!isUid(v)) out[i].push({ field: f.name, message: `must be ${UID_RULE}` });
      else if (!seen.has(v)) out[i].push({ field: f.name, message: `is not a ${f.ref} of this project` });
    });
  }
  return out;
}

/** Writes one record of a subject (create, or replace by key); 400 with every problem named by field. */
export async function writeRecord(
  db: Pool,
  subject: SubjectRow,
  typeName: string,
  body: { data: Record<string, unknown>; parent?: string; id?: string },
  by: string,
): Promise<{ record: RecordRow; created: boolean; changed: boolean }> {
  const type = await loadType(db, subject.project_id, typeName);
  const problems = validateRecord(type, body.data);
  problems.push(...(await checkRefs(db, subject.project_id, type, [body.data]))[0]);
  let parentId: string | null = null;
  if (type.parent) {
    if (!body.parent) problems.push({ field: 'parent', message: `is required: the key of a ${type.parent}` });
    else {
      const p = (await recordsByKeys(db, subject.project_id, type.parent, [body.parent])).get(body.parent);
      if (!p || p.subject_id !== subject.id)
        problems.push({ field: 'parent', message: `no ${type.parent} with that key for this subject` });
      else parentId = p.id;
    }
  } else if (body.parent) problems.push({ field: 'parent', message: `${type.name} records have no parent` });
  if (problems.length) throw new FieldValidationError(problems);

  let key = recordKey(type, body.data);
  const existingById = body.id ? await getRecord(db, subject.project_id, body.id) : undefined;
  if (
    body.id &&
    (!existingById || existingById.subject_id !== subject.id || existingById.type_name !== type.name)
  )
    throw new NotFoundError('record not found');
  if (existingById && key !== undefined && key !== existingById.record_key)
    throw new ConflictError(`${type.key}: the key of a record cannot change`);
  key ??= existingById?.record_key ?? cryptoKey();
  const existing = existingById ?? (await recordsByKeys(db, subject.project_id, type.name, [key])).get(key);
  if (existing && existing.subject_id !== subject.id)
    throw new ConflictError(`${type.key}: the key is used by a record of another subject`);
  await upsertRecords(db, subject.project_id, by, [
    {
      id: existing?.id,
      subjectId: subject.id,
      typeName: type.name,
      typeVersion: type.version,
      key,
      parentId,
      data: body.data,
    },
  ]);
  const after = (await recordsByKeys(db, subject.project_id, type.name, [key])).get(key)!;
  return { record: after, created: !existing, changed: !!existing && existing.revision !== after.revision };
}

function cryptoKey(): string {
  return globalThis.crypto.randomUUID();
}

/** A 400 listing the fields that failed, as a JSON body `{error, message, fields: [{field, message}]}`. */
export class FieldValidationError extends BadRequestError {
  constructor(readonly fields: FieldError[]) {
    super(fields.map((f) => `${f.field}: ${f.message}`).join('; '), 'invalid_record');
  }
}
