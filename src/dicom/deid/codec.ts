/**
 * A small data-set tree read from and written back to Part-10 bytes, for the de-identifier.
 *
 * Why not dcmjs: its reader drops or "repairs" what it does not understand (UN sequences, private sequences,
 * odd lengths), and its writer re-encodes encapsulated pixel data. The de-identifier must see every element at
 * every depth and must pass encapsulated pixel data through byte for byte, so it reads the bytes itself, after
 * walkPart10 has checked the whole object against the gateway's bounds (depth, element count, lengths). Recursion
 * here is therefore bounded by StructureLimits.maxDepth.
 *
 * Values are kept little-endian: Big Endian input is swapped per VR as it is read, and output is always
 * Explicit VR Little Endian (or the source's encapsulated transfer syntax, whose data set encoding is the same).
 */
import { inflateRawSync } from 'node:zlib';
import {
  DEFAULT_STRUCTURE_LIMITS,
  dictionaryVr,
  ITEM,
  ITEM_DELIM,
  LONG_VRS,
  SEQ_DELIM,
  type StructureLimits,
  TS_DEFLATED,
  TS_EXPLICIT_BE,
  TS_EXPLICIT_LE,
  TS_IMPLICIT_LE,
  UNDEFINED,
  walkPart10,
} from '../structure';

// The de-identifier's callers reach these through this module.
export { dictionaryVr, TS_EXPLICIT_LE };

export const PIXEL_DATA = 0x7fe00010;

/** One data element. Exactly one of value, items, encapsulated is set. */
export interface Element {
  tag: number;
  vr: string;
  /** Little-endian value bytes (string VRs: the raw bytes in the data set's character set, padding included). */
  value?: Buffer;
  items?: Dataset[];
  /** Encapsulated pixel data: the items and the sequence delimiter, as in the source (little-endian). */
  encapsulated?: Buffer;
  /** The source encoded it as UN (kept for the leak check's paths; written with its real VR when known). */
  wasUn?: boolean;
}

export type Dataset = Element[];

export interface ParsedObject {
  transferSyntaxUid: string;
  meta: Dataset;
  dataset: Dataset;
}

const BYTE_UNIT: Record<string, number> = {
  AT: 2, FL: 4, FD: 8, SL: 4, SS: 2, UL: 4, US: 2, SV: 8, UV: 8, OD: 8, OF: 4, OL: 4, OV: 8, OW: 2,
}; // prettier-ignore

/** dcmjs's pseudo-VRs (US or SS, OB or OW, …) resolved to one real VR. */
function realVr(vr: string | undefined, pixelRepresentation: number): string {
  switch (vr) {
    case undefined:
    case 'na':
      return 'UN';
    case 'xs':
      return pixelRepresentation === 1 ? 'SS' : 'US';
    case 'ox':
    case 'lt':
      return 'OW';
    case 'up':
      return 'UL';
    default:
      return vr;
  }
}

function swapInPlace(b: Buffer, unit: number): void {
  if (unit === 2) b.swap16();
  else if (unit === 4) b.swap32();
  else if (unit === 8) b.swap64();
}

interface Ctx {
  data: Buffer;
  little: boolean;
}

/** Reads a Part-10 object into a tree. Throws DicomParseError (from walkPart10) for anything out of bounds. */
export function readPart10(buf: Buffer, limits: StructureLimits = DEFAULT_STRUCTURE_LIMITS): ParsedObject {
  walkPart10(buf, limits);
  let p = 132;
  const meta: Dataset = [];
  let ts = '';
  while (p + 8 <= buf.length && buf.readUInt16LE(p) === 0x0002) {
    const tag = ((buf.readUInt16LE(p) << 16) | buf.readUInt16LE(p + 2)) >>> 0;
    const vr = buf.toString('latin1', p + 4, p + 6);
    let len: number;
    let hdr: number;
    if (LONG_VRS.has(vr)) {
      len = buf.readUInt32LE(p + 8);
      hdr = 12;
    } else {
      len = buf.readUInt16LE(p + 6);
      hdr = 8;
    }
    const value = Buffer.from(buf.subarray(p + hdr, p + hdr + len));
    meta.push({ tag, vr, value });
    if (tag === 0x00020010) ts = value.toString('latin1').replace(/[\0 ]+$/, '');
    p += hdr + len;
  }
  let data = buf;
  if (ts === TS_DEFLATED) {
    data = inflateRawSync(buf.subarray(p), { maxOutputLength: limits.maxInflatedBytes });
    p = 0;
  }
  const ctx: Ctx = { data, little: ts !== TS_EXPLICIT_BE };
  const { ds } = readDataset(ctx, p, data.length, ts !== TS_IMPLICIT_LE, false, 0);
  return { transferSyntaxUid: ts, meta, dataset: ds };
}

function readDataset(
  ctx: Ctx,
  start: number,
  end: number,
  explicit: boolean,
  untilDelimiter: boolean,
  depth: number,
): { ds: Dataset; next: number } {
  const { data } = ctx;
  const ds: Dataset = [];
  let p = start;
  let pixelRepresentation = 0;
  const little = explicit ? ctx.little : true;
  const u16 = (o: number) => (little ? data.readUInt16LE(o) : data.readUInt16BE(o));
  const u32 = (o: number) => (little ? data.readUInt32LE(o) : data.readUInt32BE(o));
  while (p < end) {
    const tag = ((u16(p) << 16) | u16(p + 2)) >>> 0;
    if (tag === ITEM_DELIM) {
      if (untilDelimiter) return { ds, next: p + 8 };
      p += 8;
      continue;
    }
    let vr: string;
    let len: number;
    let hdr: number;
    if (explicit) {
      vr = data.toString('latin1', p + 4, p + 6);
      if (LONG_VRS.has(vr)) {
        len = u32(p + 8);
        hdr = 12;
      } else {
        len = u16(p + 6);
        hdr = 8;
      }
    } else {
      vr = realVr(dictionaryVr(tag), pixelRepresentation);
      if ((tag & 0xffff) === 0) vr = 'UL';
      len = u32(p + 4);
      hdr = 8;
    }
    const vstart = p + hdr;
    const wasUn = vr === 'UN';
    if (wasUn) {
      const known = dictionaryVr(tag);
      if (known) vr = realVr(known, pixelRepresentation);
    }
    if (len === UNDEFINED) {
      if (tag === PIXEL_DATA || ((vr === 'OB' || vr === 'OW') && !wasUn)) {
        const stop = fragmentsEnd(ctx, vstart);
        ds.push({ tag, vr: 'OB', encapsulated: data.subarray(vstart, stop) });
        p = stop;
        continue;
      }
      // SQ, or UN of undefined length (PS3.5 §6.2.2: Implicit VR Little Endian inside).
      const seqExplicit = vr === 'SQ' && !wasUn ? explicit : false;
      const r = readItems(ctx, vstart, end, seqExplicit, true, depth + 1);
      ds.push({ tag, vr: 'SQ', items: r.items, wasUn });
      p = r.next;
      continue;
    }
    const vend = vstart + len;
    if (vr === 'SQ' && !wasUn) {
      const r = readItems(ctx, vstart, vend, explicit, false, depth + 1);
      ds.push({ tag, vr: 'SQ', items: r.items });
      p = vend;
      continue;
    }
    if (wasUn && len >= 8 && data.readUInt32LE(vstart) === 0xe000fffe) {
      // A UN value that is an item: a sequence written by a system that did not know the tag (Implicit VR LE).
      try {
        const r = readItems({ data, little: true }, vstart, vend, false, false, depth + 1);
        ds.push({ tag, vr: 'SQ', items: r.items, wasUn: true });
        p = vend;
        continue;
      } catch {
        // Not a well-formed sequence after all: kept as opaque bytes (removed unless something keeps it).
      }
    }
    // Views into the source, not copies (pixel data is most of the bytes); Big Endian values are swapped in a copy.
    let value = data.subarray(vstart, vend);
    if (!little && BYTE_UNIT[vr]) {
      value = Buffer.from(value);
      swapInPlace(value, BYTE_UNIT[vr]);
    }
    if (tag === 0x00280103 && value.length >= 2) pixelRepresentation = value.readUInt16LE(0);
    ds.push({ tag, vr: wasUn && vr === 'SQ' ? 'UN' : vr, value, wasUn });
    p = vend;
  }
  if (untilDelimiter) throw new Error('item without delimiter');
  return { ds, next: p };
}

function readItems(
  ctx: Ctx,
  start: number,
  end: number,
  explicit: boolean,
  untilDelimiter: boolean,
  depth: number,
): { items: Dataset[]; next: number } {
  if (depth > 64) throw new Error('sequences nested too deep');
  const { data } = ctx;
  const little = explicit ? ctx.little : true;
  const u16 = (o: number) => (little ? data.readUInt16LE(o) : data.readUInt16BE(o));
  const u32 = (o: number) => (little ? data.readUInt32LE(o) : data.readUInt32BE(o));
  const items: Dataset[] = [];
  let p = start;
  while (p < end) {
    const tag = ((u16(p) << 16) | u16(p + 2)) >>> 0;
    const len = u32(p + 4);
    if (tag === SEQ_DELIM) {
      if (untilDelimiter) return { items, next: p + 8 };
      p += 8;
      continue;
    }
    if (tag !== ITEM) throw new Error('expected an item');
    if (len === UNDEFINED) {
      const r = readDataset(ctx, p + 8, end, explicit, true, depth);
      items.push(r.ds);
      p = r.next;
    } else {
      const r = readDataset(ctx, p + 8, p + 8 + len, explicit, false, depth);
      items.push(r.ds);
      p = p + 8 + len;
    }
  }
  if (untilDelimiter) throw new Error('sequence without delimiter');
  return { items, next: p };
}

function fragmentsEnd(ctx: Ctx, start: number): number {
  let p = start;
  for (;;) {
    const tag = ((ctx.data.readUInt16LE(p) << 16) | ctx.data.readUInt16LE(p + 2)) >>> 0;
    const len = ctx.data.readUInt32LE(p + 4);
    p += 8;
    if (tag === SEQ_DELIM) return p;
    p += len;
  }
}

/** Writes File Meta and data set as a Part-10 object; the data set in Explicit VR Little Endian encoding. */
export function writePart10(meta: Dataset, dataset: Dataset): Buffer {
  const chunks: Buffer[] = [Buffer.alloc(128), Buffer.from('DICM', 'latin1')];
  const metaBody: Buffer[] = [];
  for (const e of meta) if (e.tag !== 0x00020000) writeElement(metaBody, e);
  const metaLen = metaBody.reduce((n, b) => n + b.length, 0);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(metaLen);
  writeElement(chunks, { tag: 0x00020000, vr: 'UL', value: groupLength });
  chunks.push(...metaBody);
  for (const e of dataset) writeElement(chunks, e);
  return Buffer.concat(chunks);
}

function header(out: Buffer[], tag: number, vr: string, len: number): void {
  const long = LONG_VRS.has(vr);
  // allocUnsafe draws from Node's pool (headers are tiny and many); every byte is written below.
  const h = Buffer.allocUnsafe(long ? 12 : 8);
  h.writeUInt16LE(tag >>> 16, 0);
  h.writeUInt16LE(tag & 0xffff, 2);
  h.write(vr, 4, 'latin1');
  if (long) {
    h.writeUInt16LE(0, 6);
    h.writeUInt32LE(len >>> 0, 8);
  } else h.writeUInt16LE(len, 6);
  out.push(h);
}

function marker(out: Buffer[], tag: number, len: number): void {
  const h = Buffer.allocUnsafe(8);
  h.writeUInt16LE(tag >>> 16, 0);
  h.writeUInt16LE(tag & 0xffff, 2);
  h.writeUInt32LE(len >>> 0, 4);
  out.push(h);
}

function writeElement(out: Buffer[], e: Element): void {
  if (e.items) {
    // Undefined lengths: no length bookkeeping, and the output is still byte-for-byte deterministic.
    header(out, e.tag, 'SQ', UNDEFINED);
    for (const item of e.items) {
      marker(out, ITEM, UNDEFINED);
      for (const child of item) writeElement(out, child);
      marker(out, ITEM_DELIM, 0);
    }
    marker(out, SEQ_DELIM, 0);
    return;
  }
  if (e.encapsulated) {
    header(out, e.tag, 'OB', UNDEFINED);
    out.push(e.encapsulated);
    return;
  }
  let value = e.value ?? Buffer.alloc(0);
  let vr = e.vr;
  if (value.length & 1) value = Buffer.concat([value, Buffer.from([padByte(vr)])]);
  // A short-length VR cannot hold more than 64 KiB: such a (non-conformant) value is kept as UN.
  if (!LONG_VRS.has(vr) && value.length > 0xffff) vr = 'UN';
  header(out, e.tag, vr, value.length);
  out.push(value);
}

function padByte(vr: string): number {
  if (vr === 'UI' || vr === 'OB' || vr === 'UN') return 0;
  return 0x20;
}

/** Value bytes of a string element, trailing padding removed. */
export function rawString(e: Element): string {
  return (e.value ?? Buffer.alloc(0)).toString('latin1').replace(/[\0 ]+$/, '');
}

export function findElement(ds: Dataset, tag: number): Element | undefined {
  return ds.find((e) => e.tag === tag);
}

export const hexTag = (tag: number) =>
  `(${(tag >>> 16).toString(16).padStart(4, '0')},${(tag & 0xffff).toString(16).padStart(4, '0')})`.toUpperCase();
