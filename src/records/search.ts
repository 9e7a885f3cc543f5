/**
 * Searches across records and imaging: the request as JSON, checked against the project's record types so that
 * only known fields with operators fitting their kind reach SQL (values are parameters).
 *   { records: [{type, field, eq | in | min | max | contains}], imaging: {modality, date_from, date_to,
 *     description}, limit, offset }
 */
import type { Pool } from 'pg';
import { z } from 'zod';
import { BadRequestError } from '../errors';
import {
  type ImagingCondition,
  latestRecordTypes,
  type RecordCondition,
  searchSubjects,
  studiesOfSubjects,
  syncSubjectsFromIndex,
} from '../index-db/records';
import type { RecordType } from './schema';
import { compiledType } from './service';

const scalar = z.union([z.string().max(1024), z.number(), z.boolean()]);

export const searchInput = z
  .object({
    records: z
      .array(
        z
          .object({
            type: z.string().max(64),
            field: z.string().max(64),
            eq: scalar.optional(),
            in: z.array(z.string().max(1024)).min(1).max(100).optional(),
            min: z.union([z.number(), z.string().max(10)]).optional(),
            max: z.union([z.number(), z.string().max(10)]).optional(),
            contains: z.string().min(1).max(256).optional(),
          })
          .strict(),
      )
      .max(20)
      .default([]),
    imaging: z
      .object({
        modality: z
          .string()
          .regex(/^[A-Z0-9_ ]{1,16}$/, 'a DICOM modality code (CS)')
          .optional(),
        date_from: z
          .string()
          .regex(/^\d{4}-?\d{2}-?\d{2}$/, 'YYYY-MM-DD')
          .optional(),
        date_to: z
          .string()
          .regex(/^\d{4}-?\d{2}-?\d{2}$/, 'YYYY-MM-DD')
          .optional(),
        description: z.string().min(1).max(256).optional(),
      })
      .strict()
      .optional(),
    limit: z.number().int().min(1).optional(),
    offset: z.number().int().min(0).default(0),
  })
  .strict();

export type SearchInput = z.infer<typeof searchInput>;

/** Turns a search into conditions, every problem a 400 naming the condition. */
export function searchConditions(
  input: SearchInput,
  types: Map<string, RecordType>,
): { records: RecordCondition[]; imaging?: ImagingCondition } {
  const problems: string[] = [];
  const records: RecordCondition[] = input.records.flatMap((c, i) => {
    const at = `records.${i}`;
    const type = types.get(c.type);
    const f = type?.fields.find((x) => x.name === c.field);
    if (!type) {
      problems.push(`${at}.type: ${c.type} is not a record type of this project`);
      return [];
    }
    if (!f) {
      problems.push(`${at}.field: ${c.field} is not a field of ${c.type}`);
      return [];
    }
    const ops = (['eq', 'in', 'min', 'max', 'contains'] as const).filter((k) => c[k] !== undefined);
    if (ops.length === 0) problems.push(`${at}: give eq, in, min, max or contains`);
    if ((c.min !== undefined || c.max !== undefined) && f.kind !== 'number' && f.kind !== 'date')
      problems.push(`${at}: min/max need a number or date field`);
    if (f.kind === 'number' && [c.min, c.max, c.eq].some((v) => v !== undefined && typeof v !== 'number'))
      problems.push(`${at}: ${c.field} is a number`);
    if (f.kind === 'date')
      for (const v of [c.min, c.max, c.eq])
        if (v !== undefined && (typeof v !== 'string' || !/^\d{4}-\d{2}-\d{2}$/.test(v)))
          problems.push(`${at}: ${c.field} is a date (YYYY-MM-DD)`);
    if (f.kind === 'boolean' && c.eq !== undefined && typeof c.eq !== 'boolean')
      problems.push(`${at}: ${c.field} is a boolean`);
    if (c.contains !== undefined && f.kind !== 'text') problems.push(`${at}: contains needs a text field`);
    if (c.in !== undefined && f.kind !== 'code' && f.kind !== 'text' && f.kind !== 'ref')
      problems.push(`${at}: in needs a code or text field`);
    if (f.kind === 'code' && c.in)
      for (const v of c.in)
        if (!f.codes!.includes(v)) problems.push(`${at}.in: ${v} is not a code of ${c.field}`);
    return [
      {
        type: c.type,
        field: c.field,
        kind: f.kind,
        eq: c.eq,
        in: c.in,
        min: c.min,
        max: c.max,
        contains: c.contains,
      },
    ];
  });
  if (problems.length) throw new BadRequestError(problems.join('; '));
  const im = input.imaging;
  const da = (s?: string) => s?.replace(/-/g, '');
  const imaging = im
    ? {
        modality: im.modality,
        dateFrom: da(im.date_from),
        dateTo: da(im.date_to),
        description: im.description,
      }
    : undefined;
  return { records, imaging };
}

/** A search as a cohort request names it: the same criteria, without paging (every matching subject is taken). */
export const cohortRecordsQuery = searchInput.omit({ limit: true, offset: true });

/** The compiled latest types of a project, by name (what a search is checked against). */
export async function searchTypes(db: Pool, projectId: string): Promise<Map<string, RecordType>> {
  return new Map((await latestRecordTypes(db, projectId)).map((t) => [t.name, compiledType(t)]));
}

/**
 * The Study Instance UIDs a cohort takes from a records search (issue 18, "used to pick a cohort"): the studies of
 * every matching subject that meet the imaging criteria (all their studies without any), or of a set of subjects a
 * search returned. At most maxSubjects subjects; more is a 400 rather than a silently cut cohort.
 */
export async function cohortStudiesOfRecords(
  db: Pool,
  projectId: string,
  pick: { query: z.infer<typeof cohortRecordsQuery> } | { subjects: string[] },
  maxSubjects: number,
): Promise<{ studies: string[]; subjects: number }> {
  let ids: string[];
  let imaging: ImagingCondition | undefined;
  if ('query' in pick) {
    const cond = searchConditions({ ...pick.query, offset: 0 }, await searchTypes(db, projectId));
    imaging = cond.imaging;
    if (cond.records.length === 0) await syncSubjectsFromIndex(db, projectId);
    const found = await searchSubjects(db, projectId, cond.records, imaging, maxSubjects, 0);
    if (found.more) throw new BadRequestError(`records_query: matches more than ${maxSubjects} subjects`);
    ids = found.rows.map((r) => r.id);
  } else {
    ids = [...new Set(pick.subjects)];
    if (ids.length > maxSubjects) throw new BadRequestError(`subjects: at most ${maxSubjects}`);
  }
  const studies = await studiesOfSubjects(db, projectId, ids, imaging);
  if ('subjects' in pick && studies.size < ids.length) {
    // A subject of another project (or none) answers like one without images: nothing says it exists elsewhere.
    const missing = ids.filter((id) => !studies.has(id)).length;
    throw new BadRequestError(`subjects: ${missing} of them have no study in this project`);
  }
  return { studies: [...new Set([...studies.values()].flat())].sort(), subjects: ids.length };
}
