/**
 * Record types as data: a JSON Schema per type (a small, typed subset), compiled once with ajv. The subset keeps
 * every field one of the kinds a research record needs, so import, query, export, de-identification and the
 * summary all know what a field is without guessing:
 *   number  {type: number|integer, x-unit?, minimum?, maximum?}
 *   date    {type: string, format: date}              (YYYY-MM-DD)
 *   code    {type: string, enum: [...]}                (a code list)
 *   text    {type: string, maxLength?}                 (free text: dropped from de-identified exports)
 *   boolean {type: boolean}
 *   ref     {type: string, x-ref: study|series}        (a Study / Series Instance UID of the same project)
 * Top level: {type: object, properties, required?, x-time-to-event?: {time, event}} with additionalProperties false.
 */
import Ajv2020, { type ErrorObject, type ValidateFunction } from 'ajv/dist/2020';
import addFormats from 'ajv-formats';
import { isUid } from '../dicom/uid';
import { BadRequestError } from '../errors';

export type FieldKind = 'number' | 'date' | 'code' | 'text' | 'boolean' | 'ref';

/** One field of a record type, as the rest of the code sees it. */
export interface FieldDef {
  name: string;
  kind: FieldKind;
  unit?: string;
  codes?: string[];
  ref?: 'study' | 'series';
  integer?: boolean;
  required: boolean;
}

/** A record type version, compiled. */
export interface RecordType {
  name: string;
  version: number;
  key: string | null;
  parent: string | null;
  schema: Record<string, unknown>;
  fields: FieldDef[];
  timeToEvent?: { time: string; event: string };
  validate: ValidateFunction;
}

/** A validation problem, naming the field. */
export interface FieldError {
  field: string;
  message: string;
}

const FIELD_NAME = /^[a-z][a-z0-9_]{0,62}$/;
export const TYPE_NAME = /^[A-Za-z][A-Za-z0-9_]{0,63}$/;
const ALLOWED_KEYWORDS = new Set([
  'type',
  'format',
  'enum',
  'minimum',
  'maximum',
  'maxLength',
  'minLength',
  'pattern',
  'description',
  'title',
  'x-unit',
  'x-ref',
]);

const ajv = new Ajv2020({ allErrors: true, strict: false, coerceTypes: false });
addFormats(ajv, ['date']);
ajv.addFormat('dicom-uid', { type: 'string', validate: (s: string) => isUid(s) });
ajv.addKeyword({ keyword: 'x-unit', schemaType: 'string' });
ajv.addKeyword({ keyword: 'x-ref', schemaType: 'string' });
ajv.addKeyword({ keyword: 'x-time-to-event', schemaType: 'object' });

/** Checks a type definition and compiles it; every problem is a 400 naming the field. */
export function compileRecordType(def: {
  name: string;
  version: number;
  key?: string | null;
  parent?: string | null;
  schema: unknown;
}): RecordType {
  const problems: string[] = [];
  if (!TYPE_NAME.test(def.name)) problems.push('name: letters, digits and _ (starting with a letter)');
  const s = def.schema as Record<string, unknown>;
  if (!s || typeof s !== 'object' || Array.isArray(s)) throw new BadRequestError('schema: must be an object');
  if (s.type !== 'object') problems.push('schema.type: must be "object"');
  const props = s.properties as Record<string, Record<string, unknown>> | undefined;
  if (!props || typeof props !== 'object' || Object.keys(props).length === 0)
    problems.push('schema.properties: at least one field');
  const required = Array.isArray(s.required) ? (s.required as unknown[]) : [];
  const fields: FieldDef[] = [];
  for (const [name, p] of Object.entries(props ?? {})) {
    const at = `schema.properties.${name}`;
    if (!FIELD_NAME.test(name)) {
      problems.push(`${at}: field names are lower case letters, digits and _`);
      continue;
    }
    if (!p || typeof p !== 'object') {
      problems.push(`${at}: must be an object`);
      continue;
    }
    for (const k of Object.keys(p)) if (!ALLOWED_KEYWORDS.has(k)) problems.push(`${at}.${k}: not supported`);
    const f: FieldDef = { name, kind: 'text', required: required.includes(name) };
    if (p.type === 'number' || p.type === 'integer') {
      f.kind = 'number';
      f.integer = p.type === 'integer';
      if (p['x-unit'] !== undefined) {
        if (typeof p['x-unit'] !== 'string') problems.push(`${at}.x-unit: must be a string (UCUM)`);
        else f.unit = p['x-unit'];
      }
    } else if (p.type === 'boolean') f.kind = 'boolean';
    else if (p.type === 'string') {
      if (p.format === 'date') f.kind = 'date';
      else if (Array.isArray(p.enum)) {
        if (!p.enum.every((c) => typeof c === 'string') || p.enum.length === 0)
          problems.push(`${at}.enum: a non-empty list of strings`);
        f.kind = 'code';
        f.codes = p.enum as string[];
      } else if (p['x-ref'] !== undefined) {
        if (p['x-ref'] !== 'study' && p['x-ref'] !== 'series') problems.push(`${at}.x-ref: study or series`);
        f.kind = 'ref';
        f.ref = p['x-ref'] as 'study' | 'series';
      } else if (p.format !== undefined) problems.push(`${at}.format: only "date" is supported`);
    } else problems.push(`${at}.type: number, integer, string or boolean`);
    fields.push(f);
  }
  for (const r of required)
    if (typeof r !== 'string' || !props?.[r]) problems.push(`schema.required: ${String(r)} is not a field`);
  const key = def.key ?? null;
  if (key !== null && !fields.some((f) => f.name === key && (f.kind === 'text' || f.kind === 'number')))
    problems.push(`key: ${key} must be a text or number field`);
  if (key !== null && !required.includes(key)) problems.push(`key: ${key} must be required`);
  const parent = def.parent ?? null;
  if (parent !== null && !TYPE_NAME.test(parent)) problems.push('parent: not a type name');
  let timeToEvent: RecordType['timeToEvent'];
  const tte = s['x-time-to-event'] as { time?: unknown; event?: unknown } | undefined;
  if (tte !== undefined) {
    const t = fields.find((f) => f.name === tte.time);
    const e = fields.find((f) => f.name === tte.event);
    if (!t || t.kind !== 'number') problems.push('schema.x-time-to-event.time: must name a number field');
    if (!e || e.kind !== 'boolean') problems.push('schema.x-time-to-event.event: must name a boolean field');
    if (t && e) timeToEvent = { time: t.name, event: e.name };
  }
  for (const k of Object.keys(s))
    if (!['type', 'properties', 'required', 'x-time-to-event', 'title', 'description', '$schema'].includes(k))
      problems.push(`schema.${k}: not supported`);
  if (problems.length) throw new BadRequestError(problems.join('; '));
  const compiled = { ...s, additionalProperties: false };
  delete (compiled as Record<string, unknown>).$schema;
  let validate: ValidateFunction;
  try {
    validate = ajv.compile(compiled);
  } catch (err) {
    throw new BadRequestError(`schema: ${(err as Error).message}`);
  }
  return { name: def.name, version: def.version, key, parent, schema: s, fields, timeToEvent, validate };
}

/** Validates record data; returns the problems, each naming its field. */
export function validateRecord(type: RecordType, data: unknown): FieldError[] {
  if (type.validate(data)) return [];
  return (type.validate.errors ?? []).map(fieldError);
}

function fieldError(e: ErrorObject): FieldError {
  const params = e.params as Record<string, unknown>;
  if (e.keyword === 'required') return { field: String(params.missingProperty), message: 'is required' };
  if (e.keyword === 'additionalProperties')
    return { field: String(params.additionalProperty), message: 'is not a field of this type' };
  const field = e.instancePath.replace(/^\//, '') || 'record';
  if (e.keyword === 'enum')
    return { field, message: `must be one of ${(params.allowedValues as string[]).join(', ')}` };
  return { field, message: e.message ?? 'is not valid' };
}

/**
 * Turns one spreadsheet cell into the field's JSON value. Empty cells are absent. Numbers accept a decimal comma;
 * dates accept YYYY-MM-DD, YYYYMMDD, DD.MM.YYYY and spreadsheet dates; booleans yes/no, true/false, 1/0.
 * A value that does not fit is returned as the raw string so validation names the field.
 */
export function cellToValue(f: FieldDef, cell: unknown): unknown {
  if (cell === null || cell === undefined) return undefined;
  if (cell instanceof Date) {
    if (f.kind === 'date') return cell.toISOString().slice(0, 10);
    return cell.toISOString();
  }
  if (typeof cell === 'object') {
    // exceljs rich text / formula results.
    const o = cell as { result?: unknown; text?: unknown; richText?: Array<{ text: string }> };
    if (o.result !== undefined) return cellToValue(f, o.result);
    if (o.richText) return cellToValue(f, o.richText.map((r) => r.text).join(''));
    if (typeof o.text === 'string') return cellToValue(f, o.text);
    return String(cell);
  }
  if (typeof cell === 'number' || typeof cell === 'boolean') {
    if (f.kind === 'text' || f.kind === 'code' || f.kind === 'ref') return String(cell);
    if (f.kind === 'boolean' && typeof cell === 'number')
      return cell === 1 ? true : cell === 0 ? false : cell;
    return cell;
  }
  const s = String(cell).trim();
  if (s === '') return undefined;
  switch (f.kind) {
    case 'number': {
      const n = Number(s.replace(/^(-?\d+),(\d+)$/, '$1.$2'));
      return Number.isFinite(n) ? n : s;
    }
    case 'boolean': {
      const l = s.toLowerCase();
      if (['true', 'yes', 'y', '1', 'ja', 'oui'].includes(l)) return true;
      if (['false', 'no', 'n', '0', 'nein', 'non'].includes(l)) return false;
      return s;
    }
    case 'date': {
      let m = /^(\d{4})(\d{2})(\d{2})$/.exec(s);
      if (m) return `${m[1]}-${m[2]}-${m[3]}`;
      m = /^(\d{1,2})\.(\d{1,2})\.(\d{4})$/.exec(s);
      if (m) return `${m[3]}-${m[2].padStart(2, '0')}-${m[1].padStart(2, '0')}`;
      return s;
    }
    default:
      return s;
  }
}

/** A value as a spreadsheet cell for export. */
export function valueToCell(v: unknown): string | number | boolean {
  if (v === undefined || v === null) return '';
  if (typeof v === 'number' || typeof v === 'boolean') return v;
  return String(v);
}
