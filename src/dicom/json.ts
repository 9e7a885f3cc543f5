import { BINARY_VRS } from './tags';
import { indexText } from './text';

/** One attribute in the DICOM JSON model (PS3.18 Annex F). */
export interface DicomJsonElement {
  vr: string;
  Value?: unknown[];
  BulkDataURI?: string;
  InlineBinary?: string;
}
/** A data set in the DICOM JSON model: tag (8 upper-case hex digits) → attribute. */
export type DicomJson = Record<string, DicomJsonElement>;

/** Binary values up to this size are inlined (base64); larger ones become BulkDataURIs. Pixel data always is bulk. */
export const INLINE_BINARY_MAX = 256;
const PIXEL_TAGS = new Set(['7FE00008', '7FE00009', '7FE00010']);
const NUMBER_VRS = new Set(['IS', 'DS', 'FL', 'FD', 'SL', 'SS', 'UL', 'US', 'SV', 'UV']);

interface DcmjsElement {
  vr: string;
  Value?: unknown[];
  InlineBinary?: string;
  BulkDataURI?: string;
}

/**
 * Converts a dcmjs dictionary (as DicomMessage.readFile returns it) to DICOM JSON without bulk data.
 * Bulk values are replaced by relative BulkDataURIs: the tag path, e.g. `7FE00010` or `00540016/0/00181078`,
 * which the metadata handler turns into an absolute URL under the instance's `/bulk/` resource.
 */
export function toDicomJson(dict: Record<string, DcmjsElement>, pathPrefix = ''): DicomJson {
  const out: DicomJson = {};
  for (const rawTag of Object.keys(dict).sort()) {
    const tag = rawTag.toUpperCase();
    // Group lengths carry nothing once re-encoded and are not part of the JSON model.
    if (tag.endsWith('0000')) continue;
    const el = dict[rawTag];
    if (!el) continue;
    // A VR the parser could not make sense of (bytes of a broken file) is kept as what it is: unknown.
    const vr = typeof el.vr === 'string' && /^[A-Z]{2}$/.test(el.vr) ? el.vr : 'UN';
    const path = pathPrefix + tag;
    out[tag] = convertElement(vr, el, tag, path);
  }
  return out;
}

function convertElement(vr: string, el: DcmjsElement, tag: string, path: string): DicomJsonElement {
  if (vr === 'SQ') {
    const items = (el.Value ?? []) as Record<string, DcmjsElement>[];
    if (items.length === 0) return { vr };
    return { vr, Value: items.map((item, i) => toDicomJson(item ?? {}, `${path}/${i}/`)) };
  }
  if (BINARY_VRS.has(vr)) {
    const values = (el.Value ?? []) as unknown[];
    const size = values.reduce<number>((n, v) => n + byteLength(v), 0);
    if (size === 0 && !el.BulkDataURI) return { vr };
    if (PIXEL_TAGS.has(tag) || size > INLINE_BINARY_MAX || values.length !== 1) {
      return { vr, BulkDataURI: path };
    }
    return { vr, InlineBinary: Buffer.from(toUint8(values[0])).toString('base64') };
  }
  const values = el.Value ?? [];
  if (values.length === 0) return { vr };
  let converted: unknown[];
  if (vr === 'PN') {
    converted = values.map((v) => normalisePersonName(v));
  } else if (NUMBER_VRS.has(vr)) {
    converted = values.map((v) => (typeof v === 'number' && Number.isFinite(v) ? v : toNumberOrNull(v)));
  } else if (vr === 'AT') {
    converted = values.map((v) =>
      typeof v === 'number' ? v.toString(16).padStart(8, '0').toUpperCase() : textValue(v),
    );
  } else {
    converted = values.map(textValue);
  }
  if (converted.every((v) => v === null)) return { vr };
  return { vr, Value: converted };
}

/**
 * A string value as the index stores it. Trailing NUL padding goes like trailing spaces (PS3.5 §6.2), and nothing
 * PostgreSQL's jsonb refuses may remain (NULs inside a value are dropped: see text.ts); empty becomes null.
 */
function textValue(v: unknown): string | null {
  if (typeof v === 'string') {
    const s = indexText(v);
    return s === '' ? null : s;
  }
  if (typeof v === 'number' || typeof v === 'bigint' || typeof v === 'boolean') return String(v);
  return null;
}

function normalisePersonName(v: unknown): unknown {
  if (v === null || v === undefined) return null;
  if (typeof v === 'string') {
    const s = textValue(v);
    return s === null ? null : { Alphabetic: s };
  }
  if (typeof v !== 'object') return null;
  const pn = v as Record<string, unknown>;
  const out: Record<string, string> = {};
  for (const group of ['Alphabetic', 'Ideographic', 'Phonetic']) {
    const g = textValue(pn[group]);
    if (g !== null) out[group] = g;
  }
  return Object.keys(out).length ? out : null;
}

function toNumberOrNull(v: unknown): number | null {
  if (typeof v === 'bigint') {
    const n = Number(v);
    return Number.isSafeInteger(n) ? n : null;
  }
  const s = typeof v === 'string' ? indexText(v).trim() : '';
  if (s === '') return null;
  const n = Number(s);
  return Number.isFinite(n) ? n : null;
}

function byteLength(v: unknown): number {
  if (v instanceof ArrayBuffer) return v.byteLength;
  if (ArrayBuffer.isView(v)) return v.byteLength;
  return 0;
}

function toUint8(v: unknown): Uint8Array {
  if (v instanceof ArrayBuffer) return new Uint8Array(v);
  if (ArrayBuffer.isView(v)) return new Uint8Array(v.buffer, v.byteOffset, v.byteLength);
  return new Uint8Array();
}

/** First value of an attribute as a string, or undefined. Person names give their Alphabetic group. */
export function getString(ds: DicomJson, tag: string): string | undefined {
  const v = ds[tag]?.Value?.[0];
  if (v === null || v === undefined) return undefined;
  if (typeof v === 'object') {
    const a = (v as { Alphabetic?: string }).Alphabetic;
    return a === undefined ? undefined : String(a);
  }
  return String(v);
}

/** All values of an attribute as strings (empty values dropped). */
export function getStrings(ds: DicomJson, tag: string): string[] {
  return (ds[tag]?.Value ?? []).filter((v) => v !== null && v !== undefined).map((v) => String(v));
}

/** First value of an attribute as an integer, or undefined. */
export function getInt(ds: DicomJson, tag: string): number | undefined {
  const v = ds[tag]?.Value?.[0];
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number.parseInt(v, 10) : NaN;
  return Number.isFinite(n) ? Math.trunc(n) : undefined;
}

/** A copy of the data set with only the given tags. */
export function pick(ds: DicomJson, tags: readonly string[]): DicomJson {
  const out: DicomJson = {};
  for (const t of tags) if (ds[t]) out[t] = ds[t];
  return out;
}
