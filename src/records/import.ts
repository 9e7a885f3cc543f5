/**
 * Spreadsheet import of one record type: each row mapped column → field, validated like any record write, and
 * reported as create / change / unchanged / refuse (with the fields that changed or the problems, each naming its
 * field). Rows are upserted by the type's key, so importing the same sheet twice changes nothing and a corrected
 * sheet changes only what differs. Rows are handled in batches, each batch in one transaction: an import cut off
 * half-way leaves whole batches applied, and running it again completes it.
 */
import type { Pool } from 'pg';
import { BadRequestError } from '../errors';
import { withTransaction } from '../index-db/pool';
import {
  ensureSubjects,
  type RecordRow,
  recordsByKeys,
  patientKey,
  subjectsByPatientKeys,
  upsertRecords,
} from '../index-db/records';
import { checkRefs, recordKey } from './service';
import { cellToValue, type FieldError, type RecordType, validateRecord } from './schema';
import type { SheetRow } from './sheets';

/** Which column holds what. */
export interface ImportMapping {
  /** Column holding the subject's Patient ID (the pseudonym in research projects). */
  subject: string;
  /**
   * Column holding the Issuer of Patient ID: the same Patient ID under two issuers is two subjects. Without it, every
   * row's issuer is '' (the issuer of images that carry none).
   */
  issuer?: string;
  /** Column holding the parent record's key, for types with a parent. */
  parent?: string;
  /** field → column. */
  fields: Record<string, string>;
}

export type RowAction = 'create' | 'change' | 'unchanged' | 'refuse';

/** What happened (or, in a dry run, would happen) to one row. */
export interface RowOutcome {
  row: number;
  action: RowAction;
  key?: string;
  changed?: string[];
  errors?: FieldError[];
}

export interface ImportSummary {
  rows: number;
  create: number;
  change: number;
  unchanged: number;
  refuse: number;
}

/** Checks a mapping against the type and the sheet's columns; 400 naming what is wrong. */
export function checkMapping(type: RecordType, m: ImportMapping, columns: string[] | undefined): void {
  const problems: string[] = [];
  if (!type.key) problems.push(`${type.name} has no key field: an import needs one to upsert by`);
  for (const field of Object.keys(m.fields))
    if (!type.fields.some((f) => f.name === field))
      problems.push(`mapping.fields.${field}: not a field of ${type.name}`);
  if (type.key && !m.fields[type.key])
    problems.push(`mapping.fields.${type.key}: the key field must be mapped`);
  if (type.parent && !m.parent)
    problems.push(`mapping.parent: ${type.name} records need the key of their ${type.parent}`);
  if (!type.parent && m.parent) problems.push(`mapping.parent: ${type.name} records have no parent`);
  if (columns) {
    const have = new Set(columns);
    const wanted = [
      m.subject,
      ...(m.issuer ? [m.issuer] : []),
      ...(m.parent ? [m.parent] : []),
      ...Object.values(m.fields),
    ];
    for (const c of wanted) if (!have.has(c)) problems.push(`column "${c}" is not in the sheet`);
  }
  if (problems.length) throw new BadRequestError(problems.join('; '));
}

/**
 * Runs an import over rows (already past checkMapping), yielding one outcome per row in sheet order and the
 * summary last. `dryRun` reads only.
 */
export async function* importRows(
  db: Pool,
  projectId: string,
  type: RecordType,
  rows: AsyncIterable<SheetRow>,
  mapping: ImportMapping,
  opts: { dryRun: boolean; by: string; batch: number; maxRows: number; summary: ImportSummary },
): AsyncGenerator<RowOutcome> {
  const seen = new Map<string, number>();
  let batch: SheetRow[] = [];
  const s = opts.summary;
  for await (const r of rows) {
    if (s.rows >= opts.maxRows) throw new BadRequestError(`the sheet has more than ${opts.maxRows} rows`);
    s.rows++;
    batch.push(r);
    if (batch.length >= opts.batch) {
      for (const o of await runBatch(db, projectId, type, batch, mapping, opts, seen)) {
        s[o.action]++;
        yield o;
      }
      batch = [];
    }
  }
  for (const o of await runBatch(db, projectId, type, batch, mapping, opts, seen)) {
    s[o.action]++;
    yield o;
  }
}

async function runBatch(
  db: Pool,
  projectId: string,
  type: RecordType,
  batch: SheetRow[],
  mapping: ImportMapping,
  opts: { dryRun: boolean; by: string },
  seen: Map<string, number>,
): Promise<RowOutcome[]> {
  if (batch.length === 0) return [];
  const byName = new Map(type.fields.map((f) => [f.name, f]));
  const prepared = batch.map((r) => {
    const data: Record<string, unknown> = {};
    for (const [field, col] of Object.entries(mapping.fields)) {
      const v = cellToValue(byName.get(field)!, r.cells[col]);
      if (v !== undefined) data[field] = v;
    }
    const patientId = String(cellText(r.cells[mapping.subject]) ?? '').trim();
    const issuer = mapping.issuer ? String(cellText(r.cells[mapping.issuer]) ?? '').trim() : '';
    const parentKey = mapping.parent ? String(cellText(r.cells[mapping.parent]) ?? '').trim() : '';
    const errors = validateRecord(type, data);
    if (!patientId) errors.unshift({ field: 'subject', message: `column "${mapping.subject}" is empty` });
    if (patientId.length > 64) errors.unshift({ field: 'subject', message: 'longer than 64 characters' });
    if (issuer.length > 64) errors.unshift({ field: 'issuer', message: 'longer than 64 characters' });
    if (type.parent && !parentKey)
      errors.push({ field: 'parent', message: `column "${mapping.parent}" is empty` });
    const key = recordKey(type, data);
    if (key !== undefined) {
      const first = seen.get(key);
      if (first !== undefined) errors.push({ field: type.key!, message: `repeats the key of row ${first}` });
      else seen.set(key, r.row);
    }
    return { r, data, patientId, issuer, parentKey, key, errors };
  });
  const refErrors = await checkRefs(
    db,
    projectId,
    type,
    prepared.map((p) => p.data),
  );
  prepared.forEach((p, i) => p.errors.push(...refErrors[i]));

  const subjects = await subjectsByPatientKeys(
    db,
    projectId,
    prepared.filter((p) => p.patientId).map((p) => ({ patientId: p.patientId, issuer: p.issuer })),
  );
  const parents = type.parent
    ? await recordsByKeys(db, projectId, type.parent, prepared.map((p) => p.parentKey).filter(Boolean))
    : new Map<string, RecordRow>();
  const existing = await recordsByKeys(
    db,
    projectId,
    type.name,
    prepared.map((p) => p.key).filter((k): k is string => k !== undefined),
  );

  const outcomes: RowOutcome[] = [];
  const writes: Array<(typeof prepared)[number] & { parentId: string | null; existing?: RecordRow }> = [];
  for (const p of prepared) {
    const subjectId = subjects.get(patientKey(p));
    let parentId: string | null = null;
    if (type.parent && p.parentKey) {
      const parent = parents.get(p.parentKey);
      if (!parent || parent.subject_id !== subjectId)
        p.errors.push({ field: 'parent', message: `no ${type.parent} with that key for this subject` });
      else parentId = parent.id;
    }
    const old = p.key !== undefined ? existing.get(p.key) : undefined;
    if (old && old.subject_id !== subjectId)
      p.errors.push({ field: type.key!, message: 'the key is used by a record of another subject' });
    if (p.errors.length) {
      outcomes.push({ row: p.r.row, action: 'refuse', key: p.key, errors: p.errors });
      continue;
    }
    if (!old) {
      outcomes.push({ row: p.r.row, action: 'create', key: p.key });
      writes.push({ ...p, parentId });
      continue;
    }
    const changed = changedFields(old.data, p.data);
    if (old.parent_id !== parentId) changed.push('parent');
    if (changed.length === 0) {
      outcomes.push({ row: p.r.row, action: 'unchanged', key: p.key });
      continue;
    }
    outcomes.push({ row: p.r.row, action: 'change', key: p.key, changed });
    writes.push({ ...p, parentId, existing: old });
  }
  if (!opts.dryRun && writes.length) {
    await withTransaction(db, async (client) => {
      const ids = await ensureSubjects(
        client,
        projectId,
        writes.map((w) => ({ patientId: w.patientId, issuer: w.issuer })),
      );
      await upsertRecords(
        client,
        projectId,
        opts.by,
        writes.map((w) => ({
          id: w.existing?.id,
          subjectId: ids.get(patientKey(w))!,
          typeName: type.name,
          typeVersion: type.version,
          key: w.key!,
          parentId: w.parentId,
          data: w.data,
        })),
      );
    });
  }
  return outcomes;
}

/** Fields whose value differs (added, removed or changed). */
export function changedFields(before: Record<string, unknown>, after: Record<string, unknown>): string[] {
  const names = new Set([...Object.keys(before), ...Object.keys(after)]);
  return [...names].filter((n) => JSON.stringify(before[n]) !== JSON.stringify(after[n])).sort();
}

function cellText(v: unknown): unknown {
  if (v && typeof v === 'object' && !(v instanceof Date)) {
    const o = v as { text?: unknown; result?: unknown; richText?: Array<{ text: string }> };
    if (o.richText) return o.richText.map((x) => x.text).join('');
    if (o.result !== undefined) return o.result;
    if (o.text !== undefined) return o.text;
  }
  return v;
}
