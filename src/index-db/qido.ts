/**
 * QIDO-RS answered from the index (PS3.18 §10.6): parsed queries (src/dicom/matching.ts) become one parameterised
 * SQL statement over project_studies / project_series / project_instances + instances.
 *
 * Read scopes are applied inside SQL, before ORDER BY / LIMIT / OFFSET, so paging is exact and nothing outside the
 * caller's projects is ever read. A study, series or instance visible through several scopes is one result; its
 * computed attributes (ModalitiesInStudy, NumberOf...Related...) are then computed over what the caller can see.
 *
 * Matching keys with a typed column use it (and its index); other attributes held at the queried level match
 * against the level's DICOM JSON (study_json / series_json / dicom_json), unindexed but still inside the scopes.
 * Keys the index cannot match (attributes of a lower level, bulk data, counts) are ignored and reported back.
 */
import type { Pool } from 'pg';
import type { ReadScope } from '../auth/access';
import {
  type AttributeInfo,
  fuzzyWordRegex,
  isPrivateTag,
  type MatchKey,
  type Matcher,
  type QidoQuery,
  wildcardToLike,
} from '../dicom/matching';
import {
  attributeLevel,
  COMPUTED_SERIES,
  COMPUTED_STUDY,
  INSTANCE_RETURN,
  LEVEL_RANK as RANK,
  type QidoLevel,
  type WantedAttributes as Wanted,
} from '../dicom/qido-attributes';
import type { QidoFound, QidoRow as Row } from '../dicom/qido-projector';
import { Tag } from '../dicom/tags';
import { BadRequestError } from '../errors';

export type { QidoLevel } from '../dicom/qido-attributes';

/** One QIDO-RS search: the level, the UIDs of the target resource path, the query and the caller's scopes. */
export interface QidoSearch {
  level: QidoLevel;
  studyUid?: string;
  seriesUid?: string;
  query: QidoQuery;
  scopes: readonly ReadScope[];
}

/** The rows found (src/dicom/qido-projector.ts turns them into DICOM JSON), whether more matched, and warnings. */
export interface QidoRows extends QidoFound {
  more: boolean;
  warnings: string[];
}

type ColumnKind = 'text' | 'pn' | 'int' | 'date' | 'time' | 'array';
interface Column {
  col: string;
  kind: ColumnKind;
  /** Folded (upper case, no accents) copy used for person-name matching. */
  norm?: string;
  /** Time column paired with a date column, for combined datetime matching. */
  time?: string;
}

const STUDY_COLUMNS: Record<string, Column> = {
  [Tag.StudyInstanceUID]: { col: 'study_uid', kind: 'text' },
  [Tag.PatientName]: { col: 'patient_name', kind: 'pn', norm: 'patient_name_norm' },
  [Tag.PatientID]: { col: 'patient_id', kind: 'text' },
  [Tag.PatientBirthDate]: { col: 'patient_birth_date', kind: 'date' },
  [Tag.PatientSex]: { col: 'patient_sex', kind: 'text' },
  [Tag.StudyDate]: { col: 'study_date', kind: 'date', time: 'study_time' },
  [Tag.StudyTime]: { col: 'study_time', kind: 'time' },
  [Tag.AccessionNumber]: { col: 'accession_number', kind: 'text' },
  [Tag.StudyID]: { col: 'study_id', kind: 'text' },
  [Tag.StudyDescription]: { col: 'study_description', kind: 'text' },
  [Tag.ReferringPhysicianName]: {
    col: 'referring_physician_name',
    kind: 'pn',
    norm: 'referring_physician_name_norm',
  },
  [Tag.ModalitiesInStudy]: { col: 'modalities', kind: 'array' },
  [Tag.SOPClassesInStudy]: { col: 'sop_classes', kind: 'array' },
};
const SERIES_COLUMNS: Record<string, Column> = {
  [Tag.SeriesInstanceUID]: { col: 'series_uid', kind: 'text' },
  [Tag.Modality]: { col: 'modality', kind: 'text' },
  [Tag.SeriesNumber]: { col: 'series_number', kind: 'int' },
  [Tag.SeriesDescription]: { col: 'series_description', kind: 'text' },
  [Tag.SeriesDate]: { col: 'series_date', kind: 'date', time: 'series_time' },
  [Tag.SeriesTime]: { col: 'series_time', kind: 'time' },
  [Tag.BodyPartExamined]: { col: 'body_part_examined', kind: 'text' },
  [Tag.PerformedProcedureStepStartDate]: {
    col: 'performed_procedure_step_start_date',
    kind: 'date',
    time: 'performed_procedure_step_start_time',
  },
  [Tag.PerformedProcedureStepStartTime]: { col: 'performed_procedure_step_start_time', kind: 'time' },
};
const INSTANCE_COLUMNS: Record<string, Column> = {
  [Tag.SOPInstanceUID]: { col: 'sop_instance_uid', kind: 'text' },
  [Tag.SOPClassUID]: { col: 'sop_class_uid', kind: 'text' },
  [Tag.InstanceNumber]: { col: 'instance_number', kind: 'int' },
  [Tag.Rows]: { col: 'rows', kind: 'int' },
  [Tag.Columns]: { col: 'columns', kind: 'int' },
  [Tag.NumberOfFrames]: { col: 'number_of_frames', kind: 'int' },
  [Tag.BitsAllocated]: { col: 'bits_allocated', kind: 'int' },
};

/** Collects query parameters as $n placeholders. */
class Params {
  readonly values: unknown[] = [];
  add(v: unknown): string {
    this.values.push(v);
    return `$${this.values.length}`;
  }
}

/** Which table a scope condition is written for. */
type ScopeTable = 'studies' | 'series' | 'instances';

/**
 * SQL that restricts rows of project_studies / project_series / project_instances (alias `a`) to the read scopes.
 * A series-scoped share sees the study that holds its series.
 */
function scopeCondition(scopes: readonly ReadScope[], a: string, table: ScopeTable, p: Params): string {
  const whole = scopes.filter((s) => !s.studyUid && !s.seriesUid).map((s) => s.projectId);
  const parts: string[] = [];
  // `=` for one project keeps the (project_id, ...) indexes usable for ordered top-N scans.
  if (whole.length === 1) parts.push(`${a}.project_id = ${p.add(whole[0])}`);
  else if (whole.length > 1) parts.push(`${a}.project_id = ANY(${p.add(whole)}::text[])`);
  for (const s of scopes) {
    if (!s.studyUid && !s.seriesUid) continue;
    const c = [`${a}.project_id = ${p.add(s.projectId)}`];
    if (s.studyUid) c.push(`${a}.study_uid = ${p.add(s.studyUid)}`);
    if (s.seriesUid) {
      c.push(
        table === 'studies'
          ? `EXISTS (SELECT 1 FROM project_series sx WHERE sx.project_id = ${a}.project_id ` +
              `AND sx.study_uid = ${a}.study_uid AND sx.series_uid = ${p.add(s.seriesUid)})`
          : `${a}.series_uid = ${p.add(s.seriesUid)}`,
      );
    }
    parts.push(`(${c.join(' AND ')})`);
  }
  if (parts.length === 0) return 'false';
  return parts.length === 1 ? parts[0] : `(${parts.join(' OR ')})`;
}

/** Alias of each level's table in the generated SQL, and its DICOM JSON column. */
const ALIAS: Record<QidoLevel, string> = { study: 'ps', series: 'se', instance: 'i' };
const JSON_COLUMN: Record<QidoLevel, string> = {
  study: 'ps.study_json',
  series: 'se.series_json',
  instance: 'i.dicom_json',
};

/** SQL folding of a person name like foldName(): accents removed, upper case. */
const sqlFold = (x: string) => `upper(regexp_replace(normalize(${x}, NFD), '[\\u0300-\\u036f]+', '', 'g'))`;
/** SQL normalisation of a TM value to HHMMSS.FFFFFF, as the index stores times. */
const sqlTime = (x: string) =>
  `(rpad(split_part(replace(${x}, ':', ''), '.', 1), 6, '0') || '.' || rpad(split_part(replace(${x}, ':', ''), '.', 2), 6, '0'))`;
/** SQL normalisation of a DT value to YYYYMMDDHHMMSS.FFFFFF, UTC offset dropped. */
const sqlDateTime = (x: string) => {
  const s = `regexp_replace(${x}, '[+-][0-9]{4}$', '')`;
  return `(rpad(split_part(${s}, '.', 1), 14, '0') || '.' || rpad(split_part(${s}, '.', 2), 6, '0'))`;
};

/** A condition on a typed column, or undefined when this matcher cannot apply to it. */
function columnCondition(c: Column, a: string, m: Matcher, p: Params): string | undefined {
  const x = `${a}.${c.col}`;
  switch (c.kind) {
    case 'text':
      return textCondition(x, m, p);
    case 'pn': {
      const n = `${a}.${c.norm}`;
      if (m.type === 'fuzzy') return m.words.map((w) => `${n} ~ ${p.add(fuzzyWordRegex(w))}`).join(' AND ');
      return textCondition(n, m, p);
    }
    case 'int':
      if (m.type !== 'single') return undefined;
      return Number.isInteger(Number(m.value)) && Math.abs(Number(m.value)) < 2 ** 31
        ? `${x} = ${p.add(Number(m.value))}`
        : 'false';
    case 'date':
      if (m.type === 'single') return `${x} = ${p.add(m.value)}`;
      if (m.type === 'range') return rangeCondition(x, m, p);
      if (m.type === 'datetime' && c.time) {
        const t = `coalesce(${a}.${c.time}, '000000.000000')`;
        const parts: string[] = [];
        if (m.from) {
          const d = p.add(m.from[0]);
          parts.push(`${x} >= ${d}`, `(${x} > ${d} OR ${t} >= ${p.add(m.from[1])})`);
        }
        if (m.to) {
          const d = p.add(m.to[0]);
          parts.push(`${x} <= ${d}`, `(${x} < ${d} OR ${t} <= ${p.add(m.to[1])})`);
        }
        return parts.join(' AND ');
      }
      return undefined;
    case 'time':
      return m.type === 'range' ? rangeCondition(x, m, p) : undefined;
    case 'array':
      if (m.type === 'single') return `${x} && ARRAY[${p.add(m.value)}::text]`;
      if (m.type === 'list') return `${x} && ${p.add(m.values)}::text[]`;
      if (m.type === 'wildcard') {
        return `EXISTS (SELECT 1 FROM unnest(${x}) mx WHERE mx LIKE ${p.add(wildcardToLike(m.pattern))})`;
      }
      return undefined;
  }
}

function textCondition(x: string, m: Matcher, p: Params): string | undefined {
  if (m.type === 'single') return `${x} = ${p.add(m.value)}`;
  if (m.type === 'list') return `${x} = ANY(${p.add(m.values)}::text[])`;
  if (m.type === 'wildcard') return `${x} LIKE ${p.add(wildcardToLike(m.pattern))}`;
  return undefined;
}

function rangeCondition(x: string, m: { from?: string; to?: string }, p: Params): string {
  const parts: string[] = [];
  if (m.from !== undefined) parts.push(`${x} >= ${p.add(m.from)}`);
  if (m.to !== undefined) parts.push(`${x} <= ${p.add(m.to)}`);
  return parts.join(' AND ');
}

const JSON_NUMBER_VRS = new Set(['IS', 'DS', 'FL', 'FD', 'SL', 'SS', 'UL', 'US', 'SV', 'UV']);
const JSON_TEXT_VRS = new Set([
  'AE',
  'AS',
  'CS',
  'LO',
  'LT',
  'SH',
  'ST',
  'UC',
  'UI',
  'UR',
  'UT',
  'DA',
  'TM',
  'DT',
]);

/** A condition on an attribute of a DICOM JSON column (any of its values matching), or undefined if unsupported. */
function jsonCondition(json: string, attr: AttributeInfo, m: Matcher, p: Params): string | undefined {
  const values = `${json}->'${attr.tag}'->'Value'`;
  const anyText = (cond: (v: string) => string) =>
    `EXISTS (SELECT 1 FROM jsonb_array_elements_text(${values}) jv WHERE ${cond('jv')})`;
  if (attr.vr === 'UN' && isPrivateTag(attr.tag)) {
    // The VR of a private attribute is only known per object: compare the stored values as text.
    const c = textCondition('jv', m, p);
    return c && anyText(() => c);
  }
  if (attr.vr === 'PN') {
    const name = (v: string) => sqlFold(`${v}->>'Alphabetic'`);
    const anyName = (cond: string) =>
      `EXISTS (SELECT 1 FROM jsonb_array_elements(${values}) jv WHERE jsonb_typeof(jv) = 'object' AND ${cond})`;
    if (m.type === 'fuzzy')
      return anyName(m.words.map((w) => `${name('jv')} ~ ${p.add(fuzzyWordRegex(w))}`).join(' AND '));
    const c = textCondition(name('jv'), m, p);
    return c && anyName(c);
  }
  if (JSON_NUMBER_VRS.has(attr.vr)) {
    if (m.type !== 'single') return undefined;
    return `${json} @> ${p.add(JSON.stringify({ [attr.tag]: { Value: [Number(m.value)] } }))}::jsonb`;
  }
  if (!JSON_TEXT_VRS.has(attr.vr)) return undefined;
  if (m.type === 'single' && attr.vr !== 'TM' && attr.vr !== 'DT') {
    return `${json} @> ${p.add(JSON.stringify({ [attr.tag]: { Value: [m.value] } }))}::jsonb`;
  }
  if (m.type === 'list' || m.type === 'wildcard') return anyText((v) => textCondition(v, m, p) as string);
  if (m.type === 'range') {
    const norm = attr.vr === 'TM' ? sqlTime : attr.vr === 'DT' ? sqlDateTime : (v: string) => v;
    return anyText((v) => rangeCondition(norm(v), m, p));
  }
  if (m.type === 'datetime') {
    const d = `(${json}->'${attr.tag}'->'Value'->>0)`;
    const t = `coalesce(${sqlTime(`(${json}->'${m.time.tag}'->'Value'->>0)`)}, '000000.000000')`;
    const parts: string[] = [];
    if (m.from) parts.push(`(${d}, ${t}) >= (${p.add(m.from[0])}::text, ${p.add(m.from[1])}::text)`);
    if (m.to) parts.push(`(${d}, ${t}) <= (${p.add(m.to[0])}::text, ${p.add(m.to[1])}::text)`);
    return parts.join(' AND ');
  }
  return undefined;
}

/** Exact matching of an attribute inside a sequence's items (`00400275.00400009=X`), through jsonb containment. */
function sequenceCondition(json: string, key: MatchKey, p: Params): string | undefined {
  const leaf = key.attr;
  const m = key.matcher;
  if (m.type !== 'single' && m.type !== 'list') return undefined;
  if (!JSON_TEXT_VRS.has(leaf.vr) && !JSON_NUMBER_VRS.has(leaf.vr)) return undefined;
  if (leaf.vr === 'TM' || leaf.vr === 'DT') return undefined;
  const values = m.type === 'single' ? [m.value] : m.values;
  const docs = values.map((v) => {
    let doc: unknown = { [leaf.tag]: { Value: [JSON_NUMBER_VRS.has(leaf.vr) ? Number(v) : v] } };
    for (let i = key.path.length - 2; i >= 0; i--) doc = { [key.path[i].tag]: { Value: [doc] } };
    return `${json} @> ${p.add(JSON.stringify(doc))}::jsonb`;
  });
  return docs.length === 1 ? docs[0] : `(${docs.join(' OR ')})`;
}

interface Filter {
  /** The level whose table the condition reads (decides joins). */
  on: QidoLevel;
  sql: string;
}

/** Turns the matching keys into SQL conditions; unsupported keys are listed for the Warning header. */
function buildFilters(
  search: QidoSearch,
  p: Params,
  restricted: boolean,
): { filters: Filter[]; unsupported: string[]; matched: Set<string> } {
  const { level } = search;
  const filters: Filter[] = [];
  const unsupported: string[] = [];
  const matched = new Set<string>();
  for (const key of search.query.keys) {
    const top = key.path[0];
    const loc = attributeLevel(top.tag);
    if (RANK[loc] > RANK[level]) {
      unsupported.push(key.param);
      continue;
    }
    matched.add(top.tag);
    const m = key.matcher;
    if (m.type === 'universal') continue;
    let on: QidoLevel = loc;
    let sql: string | undefined;
    if (key.path.length > 1) {
      sql = sequenceCondition(JSON_COLUMN[loc], key, p);
    } else {
      // UIDs of higher levels are on every lower-level row: match them there and spare a join.
      let col: Column | undefined;
      if (top.tag === Tag.StudyInstanceUID && level !== 'study') {
        on = level;
        col = { col: 'study_uid', kind: 'text' };
      } else if (top.tag === Tag.SeriesInstanceUID && level === 'instance') {
        on = level;
        col = { col: 'series_uid', kind: 'text' };
      } else {
        col = (loc === 'study' ? STUDY_COLUMNS : loc === 'series' ? SERIES_COLUMNS : INSTANCE_COLUMNS)[
          top.tag
        ];
      }
      if (col && col.kind === 'array' && restricted) {
        sql = visibleAggregateCondition(top.tag, m, search.scopes, p);
      } else if (col) {
        sql = columnCondition(col, ALIAS[on], m, p);
      } else if (!COMPUTED_STUDY.has(top.tag) && !COMPUTED_SERIES.has(top.tag)) {
        sql = jsonCondition(JSON_COLUMN[loc], top, m, p);
      }
    }
    if (sql === undefined) {
      unsupported.push(key.param);
      matched.delete(top.tag);
      continue;
    }
    if (sql !== '') filters.push({ on, sql });
  }
  return { filters, unsupported, matched };
}

/**
 * ModalitiesInStudy / SOPClassesInStudy for share links that see only some series of a study: match over the
 * visible series, not the project's whole study.
 */
function visibleAggregateCondition(
  tag: string,
  m: Matcher,
  scopes: readonly ReadScope[],
  p: Params,
): string | undefined {
  if (tag === Tag.ModalitiesInStudy) {
    const c = textCondition('mx.modality', m, p);
    return (
      c &&
      `EXISTS (SELECT 1 FROM project_series mx WHERE mx.project_id = ps.project_id AND mx.study_uid = ps.study_uid ` +
        `AND ${scopeCondition(scopes, 'mx', 'series', p)} AND ${c})`
    );
  }
  const c = textCondition('mi.sop_class_uid', m, p);
  return (
    c &&
    `EXISTS (SELECT 1 FROM project_instances mx JOIN instances mi ON mi.sop_instance_uid = mx.sop_instance_uid ` +
      `WHERE mx.project_id = ps.project_id AND mx.study_uid = ps.study_uid ` +
      `AND ${scopeCondition(scopes, 'mx', 'instances', p)} AND ${c})`
  );
}

function wantedAttributes(
  search: QidoSearch,
  matched: Set<string>,
): { wanted: Wanted; unavailable: string[] } {
  const wanted: Wanted = {
    all: search.query.includeAll,
    study: new Set(),
    series: new Set(),
    instance: new Set(),
  };
  const unavailable: string[] = [];
  const add = (tag: string) => wanted[attributeLevel(tag)].add(tag);
  for (const a of search.query.includeFields) {
    if (RANK[attributeLevel(a.tag)] > RANK[search.level]) unavailable.push(a.keyword);
    else add(a.tag);
  }
  for (const tag of matched) add(tag);
  return { wanted, unavailable };
}

const STUDY_ORDER = (a: string) =>
  `${a}.study_date DESC NULLS LAST, ${a}.study_time DESC NULLS LAST, ${a}.study_uid`;

/**
 * The study columns `orderby` may name (Aperture's extension, see parseQidoQuery), each with an index per project and
 * one across projects (migration 290), so a page in any order reads about `offset + limit` index entries instead of
 * sorting every match. Ascending is the index order; descending is its exact reverse (a backward scan). Empty values
 * count as the smallest: first ascending, last descending. Ties go by StudyInstanceUID, so offset paging is stable.
 */
const STUDY_SORTS: Record<string, string[]> = {
  [Tag.PatientName]: ['patient_name_norm'],
  [Tag.PatientID]: ['patient_id'],
  [Tag.StudyDate]: ['study_date', 'study_time'],
  [Tag.AccessionNumber]: ['accession_number'],
  [Tag.StudyDescription]: ['study_description'],
  [Tag.ModalitiesInStudy]: ['modalities'],
  [Tag.NumberOfStudyRelatedSeries]: ['num_series'],
  [Tag.NumberOfStudyRelatedInstances]: ['num_instances'],
};

/** Keywords `orderby` accepts at study level, for the error that lists them. */
export const STUDY_SORT_KEYWORDS = [
  'PatientName',
  'PatientID',
  'StudyDate',
  'AccessionNumber',
  'StudyDescription',
  'ModalitiesInStudy',
  'NumberOfStudyRelatedSeries',
  'NumberOfStudyRelatedInstances',
];

/** ORDER BY of a study search: the index's default (newest first) or the `orderby` column. */
function studyOrder(orderBy: QidoQuery['orderBy']): (a: string) => string {
  if (!orderBy) return STUDY_ORDER;
  const cols = STUDY_SORTS[orderBy.attr.tag];
  if (!cols) {
    throw new BadRequestError(
      `query parameter orderby: studies can be ordered by ${STUDY_SORT_KEYWORDS.join(', ')} ` +
        `(a leading - for descending), not by ${orderBy.attr.keyword}`,
      'bad_query',
    );
  }
  // StudyDate ascending is the reverse of the default index (project_studies_order_idx), read backwards.
  if (orderBy.attr.tag === Tag.StudyDate) {
    return orderBy.descending
      ? STUDY_ORDER
      : (a) => `${a}.study_date ASC NULLS FIRST, ${a}.study_time ASC NULLS FIRST, ${a}.study_uid DESC`;
  }
  const dir = orderBy.descending ? 'DESC NULLS LAST' : 'ASC NULLS FIRST';
  const uid = orderBy.descending ? 'DESC' : 'ASC';
  return (a) => `${cols.map((c) => `${a}.${c} ${dir}`).join(', ')}, ${a}.study_uid ${uid}`;
}

/**
 * SQL for the study aggregates of `uid` (a column expression): the precomputed columns of the project row `row`
 * when that row is all the caller sees of the study, otherwise computed over the visible series and instances.
 */
function studyAggregates(
  row: string,
  uid: string,
  scopes: readonly ReadScope[],
  withSopClasses: boolean,
  p: Params,
): { select: string; join: string } {
  const multi = scopes.length > 1;
  const restricted = scopes.some((s) => s.seriesUid !== undefined);
  const stored = {
    modalities: `${row}.modalities`,
    sopClasses: `${row}.sop_classes`,
    series: `${row}.num_series`,
    instances: `${row}.num_instances`,
  };
  const names = ['agg_modalities', 'agg_sop_classes', 'agg_num_series', 'agg_num_instances'];
  if (!multi && !restricted) {
    const cols = [
      stored.modalities,
      withSopClasses ? stored.sopClasses : 'NULL::text[]',
      stored.series,
      stored.instances,
    ];
    return { select: cols.map((c, i) => `${c} AS ${names[i]}`).join(', '), join: '' };
  }
  const se = scopeCondition(scopes, 'ax', 'series', p);
  const pi = scopeCondition(scopes, 'ax', 'instances', p);
  const computed = [
    `(SELECT coalesce(array_agg(DISTINCT ax.modality) FILTER (WHERE ax.modality IS NOT NULL), '{}') ` +
      `FROM project_series ax WHERE ax.study_uid = ${uid} AND ${se})`,
    withSopClasses
      ? `(SELECT coalesce(array_agg(DISTINCT ai.sop_class_uid), '{}') FROM project_instances ax ` +
        `JOIN instances ai ON ai.sop_instance_uid = ax.sop_instance_uid WHERE ax.study_uid = ${uid} AND ${pi})`
      : 'NULL::text[]',
    `(SELECT count(DISTINCT ax.series_uid)::int FROM project_series ax WHERE ax.study_uid = ${uid} AND ${se})`,
    `(SELECT count(DISTINCT ax.sop_instance_uid)::int FROM project_instances ax WHERE ax.study_uid = ${uid} ` +
      `AND ${pi})`,
  ];
  if (restricted) return { select: computed.map((c, i) => `${c} AS ${names[i]}`).join(', '), join: '' };
  // Most studies live in one of the caller's projects: then that project's stored aggregates are exact.
  const join =
    ` CROSS JOIN LATERAL (SELECT count(*)::int AS n FROM project_studies ax WHERE ax.study_uid = ${uid} ` +
    `AND ${scopeCondition(scopes, 'ax', 'studies', p)}) vis`;
  const cols = [
    stored.modalities,
    withSopClasses ? stored.sopClasses : 'NULL::text[]',
    stored.series,
    stored.instances,
  ];
  return {
    select: cols
      .map((c, i) => `CASE WHEN vis.n = 1 THEN ${c} ELSE ${computed[i]} END AS ${names[i]}`)
      .join(', '),
    join,
  };
}

function seriesInstanceCount(row: string, uid: string, scopes: readonly ReadScope[], p: Params): string {
  if (scopes.length <= 1) return `${row}.num_instances AS agg_series_instances`;
  return (
    `CASE WHEN (SELECT count(*) FROM project_series ax WHERE ax.series_uid = ${uid} ` +
    `AND ${scopeCondition(scopes, 'ax', 'series', p)}) = 1 THEN ${row}.num_instances ` +
    `ELSE (SELECT count(DISTINCT ax.sop_instance_uid)::int FROM project_instances ax WHERE ax.series_uid = ${uid} ` +
    `AND ${scopeCondition(scopes, 'ax', 'instances', p)}) END AS agg_series_instances`
  );
}

/** Renames table aliases in generated SQL (placeholders are shared, values are never inlined). */
function realias(sql: string, renames: Record<string, string>): string {
  return sql.replace(/\b(ps|se)\./g, (m, a: string) => (renames[a] ? `${renames[a]}.` : m));
}

/** Builds the statement for a search (exported for tests and EXPLAIN). */
export function buildQidoStatement(search: QidoSearch): {
  text: string;
  values: unknown[];
  unsupported: string[];
  unavailable: string[];
  wanted: Wanted;
  withStudy: boolean;
  withSeries: boolean;
} {
  const p = new Params();
  const { level, scopes, query } = search;
  const multi = scopes.length > 1;
  const restricted = scopes.some((s) => s.seriesUid !== undefined);
  const { filters, unsupported, matched } = buildFilters(search, p, restricted);
  const { wanted, unavailable } = wantedAttributes(search, matched);
  const withSopClasses = wanted.all || wanted.study.has(Tag.SOPClassesInStudy);
  // Attributes of the levels above the result: always when their UID is not in the path, else only when asked for.
  const withStudy = level === 'study' || !search.studyUid || wanted.all || wanted.study.size > 0;
  const withSeries =
    level === 'series' ||
    (level === 'instance' && (!search.seriesUid || wanted.all || wanted.series.size > 0));
  const noStudyAggregates = {
    select:
      'NULL::text[] AS agg_modalities, NULL::text[] AS agg_sop_classes, NULL::int AS agg_num_series, ' +
      'NULL::int AS agg_num_instances',
    join: '',
  };
  const where = (on: QidoLevel[]) =>
    filters
      .filter((f) => on.includes(f.on))
      .map((f) => ` AND ${f.sql}`)
      .join('');
  const needs = (l: QidoLevel) => filters.some((f) => f.on === l);
  const lim = p.add(query.limit + 1);
  const off = p.add(query.offset);
  let text: string;

  if (level === 'study') {
    const filter = where(['study']);
    // Through several scopes a study can have several project rows: keep the matching one of the lowest project.
    const firstOnly = multi
      ? ` AND NOT EXISTS (SELECT 1 FROM project_studies p2 WHERE p2.study_uid = ps.study_uid ` +
        `AND p2.project_id < ps.project_id AND ${scopeCondition(scopes, 'p2', 'studies', p)}` +
        `${realias(filter, { ps: 'p2' })})`
      : '';
    const aggs = studyAggregates('page', 'page.study_uid', scopes, withSopClasses, p);
    const order = studyOrder(query.orderBy);
    text =
      `SELECT page.study_uid, page.study_json, ${aggs.select} ` +
      `FROM (SELECT ps.* FROM project_studies ps WHERE ${scopeCondition(scopes, 'ps', 'studies', p)}${filter}` +
      `${firstOnly} ORDER BY ${order('ps')} LIMIT ${lim} OFFSET ${off}) page${aggs.join} ` +
      `ORDER BY ${order('page')}`;
  } else if (level === 'series') {
    const path = search.studyUid ? ` AND se.study_uid = ${p.add(search.studyUid)}` : '';
    const studyJoin = (s: string, st: string) =>
      needs('study')
        ? ` JOIN project_studies ${st} ON ${st}.project_id = ${s}.project_id AND ${st}.study_uid = ${s}.study_uid`
        : '';
    const filter = where(['study', 'series']);
    const firstOnly = multi
      ? ` AND NOT EXISTS (SELECT 1 FROM project_series s2${studyJoin('s2', 'q2')} WHERE s2.series_uid = se.series_uid ` +
        `AND s2.project_id < se.project_id AND ${scopeCondition(scopes, 's2', 'series', p)}` +
        `${realias(filter, { se: 's2', ps: 'q2' })})`
      : '';
    const order = (a: string) =>
      `${search.studyUid ? '' : `${a}.study_uid, `}${a}.series_number NULLS LAST, ${a}.series_uid`;
    const aggs = withStudy
      ? studyAggregates('ps2', 'page.study_uid', scopes, withSopClasses, p)
      : noStudyAggregates;
    text =
      `SELECT page.study_uid, page.series_uid, page.series_json, ps2.study_json, ` +
      `${seriesInstanceCount('page', 'page.series_uid', scopes, p)}, ${aggs.select} ` +
      `FROM (SELECT se.* FROM project_series se${studyJoin('se', 'ps')} ` +
      `WHERE ${scopeCondition(scopes, 'se', 'series', p)}${path}${filter}${firstOnly} ` +
      `ORDER BY ${order('se')} LIMIT ${lim} OFFSET ${off}) page ` +
      `JOIN project_studies ps2 ON ps2.project_id = page.project_id AND ps2.study_uid = page.study_uid${aggs.join} ` +
      `ORDER BY ${order('page')}`;
  } else {
    const order = (a: string) =>
      `${search.seriesUid ? '' : `${a}.series_uid, `}${a}.instance_number NULLS LAST, ${a}.sop_instance_uid`;
    const joins =
      (needs('series')
        ? ' JOIN project_series se ON se.project_id = pi.project_id AND se.series_uid = pi.series_uid'
        : '') +
      (needs('study')
        ? ' JOIN project_studies ps ON ps.project_id = pi.project_id AND ps.study_uid = pi.study_uid'
        : '');
    let inner: string;
    if (multi) {
      // One row per instance however many scopes show it: test visibility with EXISTS instead of joining.
      const path =
        (search.studyUid ? ` AND i.study_uid = ${p.add(search.studyUid)}` : '') +
        (search.seriesUid ? ` AND i.series_uid = ${p.add(search.seriesUid)}` : '');
      inner =
        `SELECT i.sop_instance_uid, i.series_uid, i.instance_number FROM instances i ` +
        `WHERE EXISTS (SELECT 1 FROM project_instances pi${joins} WHERE pi.sop_instance_uid = i.sop_instance_uid ` +
        `AND ${scopeCondition(scopes, 'pi', 'instances', p)}${where(['study', 'series'])})${path}${where(['instance'])}`;
    } else {
      const path =
        (search.studyUid ? ` AND pi.study_uid = ${p.add(search.studyUid)}` : '') +
        (search.seriesUid ? ` AND pi.series_uid = ${p.add(search.seriesUid)}` : '');
      inner =
        `SELECT i.sop_instance_uid, i.series_uid, i.instance_number, pi.project_id FROM project_instances pi ` +
        `JOIN instances i ON i.sop_instance_uid = pi.sop_instance_uid${joins} ` +
        `WHERE ${scopeCondition(scopes, 'pi', 'instances', p)}${path}${where(['study', 'series', 'instance'])}`;
    }
    const instanceJson = wanted.all
      ? 'i.dicom_json'
      : `(SELECT jsonb_object_agg(e.key, e.value) FROM jsonb_each(i.dicom_json) e WHERE e.key = ANY(` +
        `${p.add([...new Set([...INSTANCE_RETURN, ...wanted.instance])])}::text[]))`;
    const aggs = withStudy
      ? studyAggregates('ps2', 'i.study_uid', scopes, withSopClasses, p)
      : noStudyAggregates;
    const seriesCount = withSeries
      ? seriesInstanceCount('se2', 'i.series_uid', scopes, p)
      : 'NULL::int AS agg_series_instances';
    text =
      `SELECT i.study_uid, i.series_uid, i.sop_instance_uid, ${instanceJson} AS instance_json, ` +
      `se2.series_json, ps2.study_json, ${seriesCount}, ${aggs.select} ` +
      `FROM (${inner} ORDER BY ${order('i')} LIMIT ${lim} OFFSET ${off}) page ` +
      `JOIN instances i ON i.sop_instance_uid = page.sop_instance_uid ` +
      // Attributes of the series and study come from one project that shows the instance.
      (multi
        ? `CROSS JOIN LATERAL (SELECT x.project_id FROM project_instances x ` +
          `WHERE x.sop_instance_uid = i.sop_instance_uid AND ${scopeCondition(scopes, 'x', 'instances', p)} ` +
          `ORDER BY x.project_id LIMIT 1) pk `
        : `CROSS JOIN LATERAL (SELECT page.project_id) pk `) +
      `JOIN project_series se2 ON se2.project_id = pk.project_id AND se2.series_uid = i.series_uid ` +
      `JOIN project_studies ps2 ON ps2.project_id = pk.project_id AND ps2.study_uid = i.study_uid${aggs.join} ` +
      `ORDER BY ${order('page')}`;
  }
  return { text, values: p.values, unsupported, unavailable, wanted, withStudy, withSeries };
}

/** Runs a QIDO-RS search against the index; the caller projects the rows into DICOM JSON. */
export async function searchQido(db: Pool, search: QidoSearch): Promise<QidoRows> {
  const warnings = [...search.query.warnings];
  // A bad orderby is refused whoever asks, before the caller's scopes are looked at.
  if (search.level === 'study') studyOrder(search.query.orderBy);
  if (search.scopes.length === 0) {
    const wanted: Wanted = { all: false, study: new Set(), series: new Set(), instance: new Set() };
    return { rows: [], more: false, warnings, wanted, withStudy: false, withSeries: false };
  }
  if (search.query.orderBy && search.level !== 'study') {
    warnings.push(
      `orderby is supported for studies only and was ignored; ${search.level} results keep their order`,
    );
  }
  const st = buildQidoStatement(search);
  if (st.unsupported.length) {
    warnings.push(
      `the following attributes are not supported as matching keys and were ignored: ${st.unsupported.join(', ')}`,
    );
  }
  if (st.unavailable.length) {
    warnings.push(
      `the following includefield attributes are not available at ${search.level} level: ${st.unavailable.join(', ')}`,
    );
  }
  const r = await db.query<Row>(st.text, st.values);
  const more = r.rows.length > search.query.limit;
  const rows = more ? r.rows.slice(0, search.query.limit) : r.rows;
  if (more) {
    warnings.push(
      `the number of results exceeded the limit of ${search.query.limit}; ` +
        `request more with offset=${search.query.offset + search.query.limit}`,
    );
  }
  const { wanted, withStudy, withSeries } = st;
  return { rows, more, warnings, wanted, withStudy, withSeries };
}

/** True when the caller's scopes show this study (and series, if given): a search below an invisible one is a 404. */
export async function isVisible(
  db: Pool,
  scopes: readonly ReadScope[],
  studyUid: string,
  seriesUid?: string,
): Promise<boolean> {
  if (scopes.length === 0) return false;
  const p = new Params();
  const text = seriesUid
    ? `SELECT 1 FROM project_series se WHERE se.study_uid = ${p.add(studyUid)} AND se.series_uid = ${p.add(seriesUid)} ` +
      `AND ${scopeCondition(scopes, 'se', 'series', p)} LIMIT 1`
    : `SELECT 1 FROM project_studies ps WHERE ps.study_uid = ${p.add(studyUid)} ` +
      `AND ${scopeCondition(scopes, 'ps', 'studies', p)} LIMIT 1`;
  const r = await db.query(text, p.values);
  return (r.rowCount ?? 0) > 0;
}
