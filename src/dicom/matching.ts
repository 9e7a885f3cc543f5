/**
 * QIDO-RS query model: the query parameters of PS3.18 §8.3.4 (matching keys, includefield, fuzzymatching,
 * limit, offset) parsed into matchers that follow the attribute matching rules of PS3.4 C.2.2.2.
 *
 * Pure module: no HTTP, no SQL. Errors are BadRequestErrors whose message names the offending parameter
 * (never its value: query values may be patient names).
 */
import { isUid } from './uid';
import dcmjs from 'dcmjs';
import { BadRequestError } from '../errors';
import { foldName } from './text';

/** A data element as the query names it: tag (8 upper-case hex digits), keyword and VR. */
export interface AttributeInfo {
  tag: string;
  keyword: string;
  vr: string;
}

/**
 * How one matching key matches (PS3.4 C.2.2.2). Values are already normalised:
 * DA as YYYYMMDD; TM as HHMMSS.FFFFFF; DT as YYYYMMDDHHMMSS.FFFFFF; numbers in canonical decimal form;
 * person names (PN) folded (upper case, accents removed) as stored in the index's *_norm columns.
 */
export type Matcher =
  /** Empty value (or a lone `*`): matches everything; the attribute is returned (C.2.2.2.3). */
  | { type: 'universal' }
  /** Single value matching (C.2.2.2.1). */
  | { type: 'single'; value: string }
  /** List of values, matching any of them (C.2.2.2.2 for UIDs; also for other short string VRs). */
  | { type: 'list'; values: string[] }
  /** Wildcard matching (C.2.2.2.4): `*` any run, `?` one character. */
  | { type: 'wildcard'; pattern: string }
  /** Range matching (C.2.2.2.5), bounds inclusive; a missing bound is open. TM/DT bounds cover their precision. */
  | { type: 'range'; from?: string; to?: string }
  /** fuzzymatching=true on a person name: every word must start a component of the name. */
  | { type: 'fuzzy'; words: string[] }
  /**
   * Combined date and time range (C.2.2.2.5.1): a Date key and its Time key given together match one datetime
   * range, e.g. StudyDate=20240101-20240102&StudyTime=2200-0600 means 2024-01-01 22:00 to 2024-01-02 06:00.
   * Bounds are [date YYYYMMDD, time HHMMSS.FFFFFF]. The Time key's own matcher becomes `universal`.
   */
  | { type: 'datetime'; time: AttributeInfo; from?: [string, string]; to?: [string, string] };

/** One matching key of the query. */
export interface MatchKey {
  /** The query parameter name as the client wrote it, for messages. */
  param: string;
  /** The attribute path: one element, or a sequence and its item attribute (`00400275.00400009`). */
  path: AttributeInfo[];
  /** The matched attribute (the last of `path`). */
  attr: AttributeInfo;
  matcher: Matcher;
}

/** A QIDO-RS query, parsed. */
export interface QidoQuery {
  keys: MatchKey[];
  /** `includefield=all`. */
  includeAll: boolean;
  /** Top-level attributes named by includefield. */
  includeFields: AttributeInfo[];
  fuzzy: boolean;
  limit: number;
  offset: number;
  /** Problems that do not fail the query, answered as `Warning: 299` (e.g. a clamped limit). */
  warnings: string[];
  /**
   * `orderby=[-]Keyword`, Aperture's extension (dcm4chee-arc's spelling; PS3.18 defines no ordering): the attribute
   * to order the results by, descending with a leading `-`. Which attributes can order which level is the index's
   * business (src/index-db/qido.ts).
   */
  orderBy?: { attr: AttributeInfo; descending: boolean };
}

export interface QueryLimits {
  defaultLimit: number;
  maxLimit: number;
}

/** Query parameters that are not attribute keys (PS3.18 §8.3.4 and §8.3.3.1), compared case-insensitively. */
const RESERVED = new Set([
  'limit',
  'offset',
  'fuzzymatching',
  'includefield',
  'accept',
  'charset',
  'orderby',
]);

const NUMBER_VRS = new Set(['IS', 'DS', 'FL', 'FD', 'SL', 'SS', 'UL', 'US', 'SV', 'UV']);
/** Text VRs that may hold a backslash as a character: no list matching for them. */
const SINGLE_VALUED_TEXT_VRS = new Set(['LT', 'ST', 'UT', 'UR']);
const TEXT_VRS = new Set(['AE', 'AS', 'CS', 'LO', 'LT', 'PN', 'SH', 'ST', 'UC', 'UR', 'UT']);
/** dcmjs marks VRs that depend on context with these; pick what queries can use. */
const AMBIGUOUS_VR: Record<string, string> = { xs: 'US', up: 'UL', ox: 'OB', lt: 'OW', na: 'UN' };

let byKeyword: Map<string, AttributeInfo> | undefined;
let byKeywordFolded: Map<string, AttributeInfo> | undefined;
let byTag: Map<string, AttributeInfo> | undefined;

function dictionary(): {
  byKeyword: Map<string, AttributeInfo>;
  byKeywordFolded: Map<string, AttributeInfo>;
  byTag: Map<string, AttributeInfo>;
} {
  if (!byKeyword || !byTag || !byKeywordFolded) {
    byKeyword = new Map();
    byKeywordFolded = new Map();
    byTag = new Map();
    for (const [keyword, entry] of Object.entries(dcmjs.data.DicomMetaDictionary.nameMap)) {
      const m = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(entry.tag);
      if (!m) continue;
      const info: AttributeInfo = {
        tag: (m[1] + m[2]).toUpperCase(),
        keyword,
        vr: AMBIGUOUS_VR[entry.vr] ?? entry.vr,
      };
      byKeyword.set(keyword, info);
      if (!byKeywordFolded.has(keyword.toLowerCase())) byKeywordFolded.set(keyword.toLowerCase(), info);
      if (!byTag.has(info.tag)) byTag.set(info.tag, info);
    }
  }
  return { byKeyword, byKeywordFolded, byTag };
}

/**
 * The attribute a keyword (`PatientName`) or tag (`00100010`) names; undefined when the dictionary does not know it.
 * A private tag is known by its tag alone: its VR depends on its private creator, so it is `UN` here and the stored
 * DICOM JSON says what it really is.
 */
export function lookupAttribute(key: string): AttributeInfo | undefined {
  const d = dictionary();
  if (/^[0-9A-Fa-f]{8}$/.test(key)) {
    const tag = key.toUpperCase();
    return d.byTag.get(tag) ?? (isPrivateTag(tag) ? { tag, keyword: tag, vr: 'UN' } : undefined);
  }
  return d.byKeyword.get(key) ?? d.byKeywordFolded.get(key.toLowerCase());
}

/**
 * True for a private data element or private creator (PS3.5 §7.8.1): an odd group other than 0001, 0003, 0005,
 * 0007 and FFFF, and an element number from 0010 (group lengths and 0001-000F are not private attributes).
 */
export function isPrivateTag(tag: string): boolean {
  if (!/^[0-9A-F]{8}$/.test(tag)) return false;
  const group = parseInt(tag.slice(0, 4), 16);
  const element = parseInt(tag.slice(4), 16);
  return group % 2 === 1 && group > 0x0007 && group !== 0xffff && element >= 0x0010;
}

/** The attribute a tag names, for tags the index holds (falls back to an unknown VR). */
export function attributeByTag(tag: string): AttributeInfo {
  return (
    dictionary().byTag.get(tag.toUpperCase()) ?? {
      tag: tag.toUpperCase(),
      keyword: tag.toUpperCase(),
      vr: 'UN',
    }
  );
}

/**
 * Parses QIDO-RS query parameters (pairs in the order given, repeats kept, already percent-decoded).
 * Throws BadRequestError naming the parameter for anything malformed.
 */
export function parseQidoQuery(params: Iterable<[string, string]>, limits: QueryLimits): QidoQuery {
  const raw: Array<[string, string]> = [];
  const includeValues: string[] = [];
  let fuzzyRaw: string | undefined;
  let limitRaw: string | undefined;
  let offsetRaw: string | undefined;
  let orderRaw: string | undefined;
  for (const [name, value] of params) {
    // PostgreSQL text cannot hold U+0000, and no DICOM string value may contain it (PS3.5 §6.1.2.3): refused here,
    // for every parameter, before it can reach SQL as a 500.
    if (name.includes('\0') || value.includes('\0')) {
      const shown = name.replace(/\0/g, '%00');
      throw new BadRequestError(`query parameter ${shown} contains a NUL character`, 'bad_query');
    }
    const lower = name.toLowerCase();
    if (RESERVED.has(lower)) {
      if (lower === 'includefield') includeValues.push(value);
      else if (lower === 'fuzzymatching') fuzzyRaw = once(name, fuzzyRaw, value);
      else if (lower === 'limit') limitRaw = once(name, limitRaw, value);
      else if (lower === 'offset') offsetRaw = once(name, offsetRaw, value);
      else if (lower === 'orderby') orderRaw = once(name, orderRaw, value);
      // accept and charset are content negotiation, read by the handler.
      continue;
    }
    raw.push([name, value]);
  }

  const warnings: string[] = [];
  const fuzzy = parseBoolean('fuzzymatching', fuzzyRaw);
  let limit = limits.defaultLimit;
  if (limitRaw !== undefined) {
    limit = parseCount('limit', limitRaw, 1);
    if (limit > limits.maxLimit) {
      warnings.push(
        `limit ${limit} exceeds the maximum of ${limits.maxLimit}; at most ${limits.maxLimit} results are returned`,
      );
      limit = limits.maxLimit;
    }
  }
  const offset = offsetRaw === undefined ? 0 : parseCount('offset', offsetRaw, 0);
  const orderBy = orderRaw === undefined ? undefined : parseOrderBy(orderRaw);

  // PS3.18 §8.3.4 (and §8.1.4): what the origin server does not support is ignored and reported, never refused.
  const unknown: string[] = [];
  let includeAll = false;
  const includeFields: AttributeInfo[] = [];
  const seenInclude = new Set<string>();
  for (const value of includeValues) {
    for (const item of value.split(',').map((s) => s.trim())) {
      if (item === '') continue;
      if (item.toLowerCase() === 'all') {
        includeAll = true;
        continue;
      }
      const path = parsePath('includefield', item);
      if (!path) {
        unknown.push(item);
        continue;
      }
      const top = path[0];
      if (!seenInclude.has(top.tag)) {
        seenInclude.add(top.tag);
        includeFields.push(top);
      }
    }
  }

  const keys: MatchKey[] = [];
  const seenKeys = new Set<string>();
  for (const [name, value] of raw) {
    const path = parsePath(name, name);
    if (!path) {
      unknown.push(name);
      continue;
    }
    const id = path.map((a) => a.tag).join('.');
    if (seenKeys.has(id))
      throw new BadRequestError(`query parameter ${name} is given more than once`, 'bad_query');
    seenKeys.add(id);
    const attr = path[path.length - 1];
    keys.push({ param: name, path, attr, matcher: parseMatcher(name, attr, value, fuzzy) });
  }
  if (unknown.length) {
    // Names only, never values; bounded and printable ASCII, as a header value must be (a name may hold CR LF).
    const shown = unknown
      .slice(0, 10)
      .map((n) => (n.length > 64 ? `${n.slice(0, 64)}...` : n).replace(/[^\x20-\x7e]/g, '?'));
    warnings.push(
      `the following query parameters name no known DICOM attribute and were ignored: ${shown.join(', ')}` +
        (unknown.length > shown.length ? ` and ${unknown.length - shown.length} more` : ''),
    );
  }
  combineDateTime(keys);
  for (const k of keys) {
    const m = k.matcher;
    if (m.type === 'range' && m.from !== undefined && m.to !== undefined && m.from > m.to) {
      throw bad(
        k.param,
        'the range starts after it ends (a time range may only wrap midnight together with a date)',
      );
    }
  }
  return { keys, includeAll, includeFields, fuzzy, limit, offset, warnings, ...(orderBy && { orderBy }) };
}

/** `orderby=[-]Keyword` (one attribute; `-` for descending); an unknown attribute is refused, not ignored. */
function parseOrderBy(raw: string): { attr: AttributeInfo; descending: boolean } {
  const text = raw.trim();
  if (text.includes(',')) throw bad('orderby', 'orders by one attribute only (e.g. orderby=-StudyDate)');
  const descending = text.startsWith('-');
  const name = (descending || text.startsWith('+') ? text.slice(1) : text).trim();
  const attr = name === '' || name.includes('.') ? undefined : lookupAttribute(name);
  if (!attr)
    throw bad('orderby', 'names no known DICOM attribute (e.g. orderby=PatientName or orderby=-StudyDate)');
  return { attr, descending };
}

function once(name: string, previous: string | undefined, value: string): string {
  if (previous !== undefined)
    throw new BadRequestError(`query parameter ${name} is given more than once`, 'bad_query');
  return value;
}

function parseBoolean(name: string, v: string | undefined): boolean {
  if (v === undefined) return false;
  const s = v.trim().toLowerCase();
  if (s === 'true') return true;
  if (s === 'false' || s === '') return false;
  throw new BadRequestError(`query parameter ${name} must be true or false`, 'bad_query');
}

function parseCount(name: string, v: string, min: number): number {
  const s = v.trim();
  if (!/^\d{1,9}$/.test(s) || Number(s) < min) {
    throw new BadRequestError(
      `query parameter ${name} must be ${min > 0 ? 'a positive' : 'a non-negative'} integer`,
      'bad_query',
    );
  }
  return Number(s);
}

/**
 * `PatientName`, `00100010` or a sequence path `00400275.00400009` / `RequestAttributesSequence.RequestedProcedureID`;
 * undefined when a part names no attribute the gateway knows (the caller ignores the parameter with a warning).
 * A path through an attribute that is known not to be a sequence stays malformed.
 */
function parsePath(param: string, text: string): AttributeInfo[] | undefined {
  const parts = text.split('.');
  const path: AttributeInfo[] = [];
  for (const part of parts) {
    const info = lookupAttribute(part.trim());
    if (!info) return undefined;
    path.push(info);
  }
  for (let i = 0; i < path.length - 1; i++) {
    // A private sequence's VR is not known here; its items are matched through the stored JSON like any other.
    if (path[i].vr !== 'SQ' && !isPrivateTag(path[i].tag)) {
      throw new BadRequestError(
        `query parameter ${param}: ${path[i].keyword} is not a sequence`,
        'bad_query',
      );
    }
  }
  return path;
}

function bad(param: string, what: string): BadRequestError {
  return new BadRequestError(`query parameter ${param}: ${what}`, 'bad_query');
}

/** Builds the matcher for one key from its value and VR (PS3.4 C.2.2.2). */
function parseMatcher(param: string, attr: AttributeInfo, rawValue: string, fuzzy: boolean): Matcher {
  const value = rawValue.trim();
  // A lone '*' matches everything, like an empty value (C.2.2.2.4).
  if (value === '' || /^\*+$/.test(value)) return { type: 'universal' };
  const vr = attr.vr;

  if (vr === 'SQ')
    throw bad(param, 'a sequence is matched through an attribute of its items, e.g. 00400275.00400009');
  if (vr === 'UI') {
    const values = value.split(/[\\,]/).map((s) => s.trim());
    for (const v of values)
      if (!isUid(v)) throw bad(param, 'malformed UID (digits and dots, at most 64 characters)');
    return values.length === 1 ? { type: 'single', value: values[0] } : { type: 'list', values };
  }
  if (vr === 'DA' || vr === 'TM' || vr === 'DT') return parseTemporal(param, vr, value);
  if (NUMBER_VRS.has(vr)) {
    const integer = vr !== 'DS' && vr !== 'FL' && vr !== 'FD';
    const ok = integer
      ? /^[+-]?\d{1,18}$/.test(value)
      : /^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$/.test(value);
    if (!ok) throw bad(param, integer ? 'must be an integer' : 'must be a number');
    return { type: 'single', value: String(Number(value)) };
  }
  // A private attribute of unknown VR is matched as text against its stored values (a number as its decimal form).
  if (vr === 'UN' && isPrivateTag(attr.tag)) return textMatcher(param, value, true);
  if (!TEXT_VRS.has(vr)) {
    // Binary and AT values cannot be matched; the caller reports the key as unsupported.
    return { type: 'single', value };
  }
  if (vr === 'PN') {
    if (fuzzy) {
      const words = (foldName(value) ?? '')
        .split(/[\^\s=,\\]+/)
        .map((w) => w.replace(/\*+$/, ''))
        .filter((w) => w !== '' && !/^\*+$/.test(w));
      return words.length ? { type: 'fuzzy', words } : { type: 'universal' };
    }
    return textMatcher(param, foldName(value) ?? value, true);
  }
  // Code strings cannot contain a comma, so a comma list is unambiguous there (ModalitiesInStudy=CT,MR).
  if (vr === 'CS' && value.includes(',')) return textMatcher(param, value.replace(/,/g, '\\'), true);
  return textMatcher(param, value, !SINGLE_VALUED_TEXT_VRS.has(vr));
}

function textMatcher(param: string, value: string, allowList: boolean): Matcher {
  if (allowList && value.includes('\\')) {
    const values = value.split('\\').map((s) => s.trim());
    if (values.some((v) => /[*?]/.test(v))) {
      // A list of wildcards is not one of the standard's matching types; keep the common case simple.
      throw bad(param, 'wildcards cannot be combined with a list of values');
    }
    return { type: 'list', values };
  }
  if (/[*?]/.test(value)) return { type: 'wildcard', pattern: value };
  return { type: 'single', value };
}

/** UIDs are checked by the one rule of dicom/uid.ts. */
export { isUid };

function parseTemporal(param: string, vr: 'DA' | 'TM' | 'DT', value: string): Matcher {
  const dash = vr === 'DT' ? findDtRangeDash(value) : value.indexOf('-');
  if (dash === -1) {
    const lo = temporalBound(param, vr, value, 'low');
    if (vr === 'DA') return { type: 'single', value: lo };
    // A time or datetime of a given precision stands for its whole span: 1730 matches 17:30:00 to 17:30:59.999999.
    return { type: 'range', from: lo, to: temporalBound(param, vr, value, 'high') };
  }
  const a = value.slice(0, dash).trim();
  const b = value.slice(dash + 1).trim();
  if (a === '' && b === '') throw bad(param, 'a range needs at least one bound');
  const from = a === '' ? undefined : temporalBound(param, vr, a, 'low');
  const to = b === '' ? undefined : temporalBound(param, vr, b, 'high');
  // A reversed time range is fine with a date range (22:00 one day to 06:00 the next): checked after combining.
  if (vr !== 'TM' && from !== undefined && to !== undefined && from > to) {
    throw bad(param, 'the range starts after it ends');
  }
  return { type: 'range', from, to };
}

/** The '-' that separates a DT range, not the one of a UTC offset (`20240101120000-0500`). */
function findDtRangeDash(value: string): number {
  for (let i = 0; i < value.length; i++) {
    if (value[i] !== '-') continue;
    const before = value.slice(0, i);
    // An offset '-ZZXX' follows a time of at least hours and is itself four digits ending the bound.
    const isOffset = /^\d{10,}(\.\d+)?$/.test(before) && /^\d{4}($|-)/.test(value.slice(i + 1)) && i >= 10;
    if (!isOffset) return i;
  }
  return -1;
}

/**
 * Normalises one DA/TM/DT bound so that bounds and stored values compare as strings.
 * `low` pads missing components with their minimum, `high` with nines so the bound covers the whole given precision.
 */
function temporalBound(param: string, vr: 'DA' | 'TM' | 'DT', v: string, side: 'low' | 'high'): string {
  if (vr === 'DA') {
    const s = v.replace(/\./g, '');
    if (!/^\d{8}$/.test(s) || !validDate(s)) throw bad(param, 'dates are YYYYMMDD, ranges YYYYMMDD-YYYYMMDD');
    return s;
  }
  if (vr === 'TM') {
    const s = v.replace(/:/g, '');
    const m = /^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$/.exec(s);
    if (!m || Number(m[1]) > 23 || Number(m[2] ?? 0) > 59 || Number(m[3] ?? 0) > 60 || (m[4] && !m[3])) {
      throw bad(param, 'times are HHMMSS.FFFFFF (trailing parts optional), ranges HHMM-HHMM');
    }
    return padTemporal(`${m[1]}${m[2] ?? ''}${m[3] ?? ''}`, m[4], 6, side);
  }
  // DT: YYYY[MM[DD[HH[MM[SS[.F{1,6}]]]]]][&ZZXX]; the UTC offset is ignored (the index keeps local values).
  const m = /^(\d{4}(?:\d{2}){0,5})(?:\.(\d{1,6}))?(?:[+-]\d{4})?$/.exec(v);
  if (!m || (m[2] && m[1].length !== 14))
    throw bad(param, 'datetimes are YYYYMMDDHHMMSS.FFFFFF (trailing parts optional)');
  return padTemporal(m[1], m[2], 14, side);
}

function padTemporal(whole: string, frac: string | undefined, width: number, side: 'low' | 'high'): string {
  const fill = side === 'low' ? '0' : '9';
  return `${whole.padEnd(width, fill)}.${(frac ?? '').padEnd(6, fill)}`;
}

function validDate(s: string): boolean {
  const y = Number(s.slice(0, 4));
  const m = Number(s.slice(4, 6));
  const d = Number(s.slice(6, 8));
  if (m < 1 || m > 12 || d < 1) return false;
  return d <= new Date(Date.UTC(y, m, 0)).getUTCDate();
}

/** Date/time attribute pairs that combine into one datetime range when both are given (PS3.4 C.2.2.2.5.1). */
const DATE_TIME_PAIRS: Array<[string, string]> = [
  ['00080020', '00080030'], // StudyDate, StudyTime
  ['00080021', '00080031'], // SeriesDate, SeriesTime
  ['00080022', '00080032'], // AcquisitionDate, AcquisitionTime
  ['00080023', '00080033'], // ContentDate, ContentTime
  ['00400244', '00400245'], // PerformedProcedureStepStartDate, ...Time
];

function combineDateTime(keys: MatchKey[]): void {
  for (const [dateTag, timeTag] of DATE_TIME_PAIRS) {
    const d = keys.find((k) => k.path.length === 1 && k.attr.tag === dateTag);
    const t = keys.find((k) => k.path.length === 1 && k.attr.tag === timeTag);
    if (!d || !t || d.matcher.type === 'universal' || t.matcher.type === 'universal') continue;
    let dFrom: string | undefined;
    let dTo: string | undefined;
    if (d.matcher.type === 'single') dFrom = dTo = d.matcher.value;
    else if (d.matcher.type === 'range') ({ from: dFrom, to: dTo } = d.matcher);
    else continue;
    if (t.matcher.type !== 'range') continue;
    const { from: tFrom, to: tTo } = t.matcher;
    d.matcher = {
      type: 'datetime',
      time: t.attr,
      from: dFrom === undefined ? undefined : [dFrom, tFrom ?? '000000.000000'],
      to: dTo === undefined ? undefined : [dTo, tTo ?? '999999.999999'],
    };
    t.matcher = { type: 'universal' };
  }
}

/** A wildcard pattern as a SQL LIKE pattern (escape character backslash). */
export function wildcardToLike(pattern: string): string {
  return pattern
    .replace(/[\\%_]/g, (c) => '\\' + c)
    .replace(/\*/g, '%')
    .replace(/\?/g, '_');
}

/**
 * A fuzzy name word as a POSIX regular expression that matches it at the start of a name component
 * (components and words of a stored name are separated by ^, =, space, comma, dot, hyphen or apostrophe).
 */
export function fuzzyWordRegex(word: string): string {
  const body = word
    .replace(/[.+()[\]{}|^$\\]/g, (c) => '\\' + c)
    .replace(/\*/g, '.*')
    .replace(/\?/g, '.');
  return `(^|[\\^= ,.'-])${body}`;
}
