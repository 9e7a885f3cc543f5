/**
 * The records a cohort carries, de-identified by the same rules as its images:
 * - the subject is its pseudonym (research_pseudonyms, the one the images carry as Patient ID);
 * - record keys and parent keys become HMAC(research project secret, type, key), since keys are often built from
 *   hospital numbers; the same record gets the same pseudonymous key in every download;
 * - dates follow the cohort's date option: shifted by the patient's own date offset (Retain Longitudinal Temporal
 *   Information with Modified Dates, the same offset as the images), kept (Full Dates), or dropped (neither);
 * - free text is dropped: it is where names, hospital numbers and places hide, and no cleaner can promise them gone;
 * - Study / Series references become the copies' UIDs, or are dropped when the cohort holds no copy;
 * - numbers, codes and booleans are kept.
 * One CSV per type under `records/`, with the de-identified schema beside it.
 */
import { createHash, createHmac } from 'node:crypto';
import { stringify } from 'csv-stringify/sync';
import type { Pool } from 'pg';
import { shiftDa } from '../dicom/deid/deidentify';
import type { CohortRow } from '../index-db/cohorts';
import { researchSecret } from '../index-db/pseudonyms';
import {
  cohortCarriesRecords,
  cohortSubjects,
  cohortUidMap,
  getRecordType,
  streamTypeRecords,
  typesOfSubjects,
} from '../index-db/records';
import { compiledType } from './service';
import type { FieldDef, RecordType } from './schema';

/** One de-identified table of records. */
export interface DeidTable {
  type: RecordType;
  fields: FieldDef[];
  rows: Array<Record<string, unknown>>;
}

type DateRule = 'shift' | 'keep' | 'drop';

function dateRule(options: Record<string, unknown>): DateRule {
  if (options.retainLongitudinalFullDates === true) return 'keep';
  if (options.retainLongitudinalModifiedDates === true) return 'shift';
  return 'drop';
}

/** A pseudonymous record key. */
export function pseudoKey(secret: Buffer, type: string, key: string): string {
  return `R${createHmac('sha256', secret).update(`record\u0000${type}\u0000${key}`).digest('hex').slice(0, 16).toUpperCase()}`;
}

/** Shifts a YYYY-MM-DD date by whole days, through the images' own DA shift. */
export function shiftIsoDate(v: string, days: number): string | undefined {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(v)) return undefined;
  const da = shiftDa(v.replace(/-/g, ''), days);
  return `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}`;
}

/** The de-identified records of a cohort's subjects, one table per type (empty when the cohort carries none). */
export async function cohortRecordTables(
  db: Pool,
  cohort: Pick<CohortRow, 'id' | 'source_project_id' | 'research_project_id' | 'options'>,
  maxRows: number,
): Promise<DeidTable[]> {
  if (!(await cohortCarriesRecords(db, cohort.id))) return [];
  const subjects = await cohortSubjects(db, cohort.id);
  if (subjects.length === 0) return [];
  const bySubject = new Map(subjects.map((s) => [s.subject_id, s]));
  const secret = await researchSecret(db, cohort.research_project_id);
  const uids = await cohortUidMap(db, cohort.id);
  const rule = dateRule(cohort.options as Record<string, unknown>);
  const tables: DeidTable[] = [];
  let total = 0;
  for (const name of await typesOfSubjects(db, cohort.source_project_id, [...bySubject.keys()])) {
    const row = await getRecordType(db, cohort.source_project_id, name);
    if (!row) continue;
    const type = compiledType(row);
    const fields = type.fields.filter((f) => f.kind !== 'text' && (f.kind !== 'date' || rule !== 'drop'));
    const rows: Array<Record<string, unknown>> = [];
    for await (const r of streamTypeRecords(db, cohort.source_project_id, name, [...bySubject.keys()])) {
      if (++total > maxRows) throw new Error(`cohort records exceed ${maxRows} rows`);
      const subject = bySubject.get(r.subject_id)!;
      const out: Record<string, unknown> = {
        subject: subject.pseudonym,
        record: pseudoKey(secret, name, r.record_key),
        parent: r.parent_key && type.parent ? pseudoKey(secret, type.parent, r.parent_key) : '',
      };
      for (const f of fields) {
        const v = r.data[f.name];
        if (v === undefined || v === null) continue;
        if (f.name === type.key) continue; // the key is the pseudonymous `record` column
        if (f.kind === 'date')
          out[f.name] = rule === 'keep' ? v : shiftIsoDate(String(v), subject.date_offset_days);
        else if (f.kind === 'ref') out[f.name] = uids.get(String(v));
        else out[f.name] = v;
      }
      rows.push(out);
    }
    rows.sort((a, b) => `${a.subject}${a.record}`.localeCompare(`${b.subject}${b.record}`));
    tables.push({ type, fields: fields.filter((f) => f.name !== type.key), rows });
  }
  return tables;
}

/** The tables as ZIP entries: `records/<Type>.csv` and `records/<Type>.schema.json`. */
export function recordEntries(tables: DeidTable[]): Array<{ path: string; body: Buffer }> {
  const out: Array<{ path: string; body: Buffer }> = [];
  for (const t of tables) {
    const columns = [
      'subject',
      'record',
      ...(t.type.parent ? ['parent'] : []),
      ...t.fields.map((f) => f.name),
    ];
    const csv = stringify(
      t.rows.map((r) => columns.map((c) => r[c] ?? '')),
      { header: true, columns, cast: { boolean: (b) => (b ? 'true' : 'false') } },
    );
    out.push({ path: `records/${t.type.name}.csv`, body: Buffer.from(csv, 'utf8') });
    const props = Object.fromEntries(
      Object.entries((t.type.schema.properties ?? {}) as Record<string, unknown>).filter(([k]) =>
        t.fields.some((f) => f.name === k),
      ),
    );
    const schema = {
      title: t.type.name,
      version: t.type.version,
      parent: t.type.parent,
      'x-time-to-event': t.type.timeToEvent,
      properties: props,
    };
    out.push({
      path: `records/${t.type.name}.schema.json`,
      body: Buffer.from(JSON.stringify(schema, null, 2)),
    });
  }
  return out;
}

/** A short tag of the record entries for the archive's ETag ('' without records): edited records, new ETag. */
export function recordsTag(entries: Array<{ path: string; body: Buffer }>): string {
  if (entries.length === 0) return '';
  const h = createHash('sha256');
  for (const e of entries) h.update(e.path).update('\u0000').update(e.body);
  return `-r${h.digest('hex').slice(0, 12)}`;
}
