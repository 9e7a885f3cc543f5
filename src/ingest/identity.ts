/**
 * Identity of an archived object, judged on its data set: the File Meta group (0002) says how a file was wrapped
 * (a C-STORE makes the receiver write its own Implementation Class UID and Version Name) and the preamble is zeroed
 * on ingest, so neither may make one object look like two. The transfer syntax is part of the identity: the same
 * attributes in another encoding are other bytes in the archive, and answering them as "already stored" would hand
 * the sender an encoding it never sent; they stay "different" (0x0111).
 */
import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { inflateRawSync } from 'node:zlib';
import {
  ITEM,
  ITEM_DELIM,
  LONG_VRS,
  SEQ_DELIM,
  TS_DEFLATED,
  TS_EXPLICIT_BE,
  TS_IMPLICIT_LE,
  UNDEFINED,
} from '../dicom/structure';

/** Bytes before the File Meta group: preamble and "DICM". */
const META_START = 132;
/** A File Meta group larger than this is not a real one; reading back stops there (memory stays bounded). */
export const MAX_META_BYTES = 64 * 1024;

/** Where the data set starts and which transfer syntax the File Meta names; 'more' when the head is too short. */
export function locateDataSet(
  head: Uint8Array,
): { offset: number; transferSyntaxUid: string } | 'more' | 'invalid' {
  if (head.length < META_START) return 'more';
  if (head[128] !== 0x44 || head[129] !== 0x49 || head[130] !== 0x43 || head[131] !== 0x4d) return 'invalid';
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let pos = META_START;
  let ts = '';
  // File Meta is always Explicit VR Little Endian (PS3.10 §7.1); it ends at the first element of another group.
  for (;;) {
    if (pos + 8 > head.length) return 'more';
    const group = view.getUint16(pos, true);
    if (group !== 0x0002) return { offset: pos, transferSyntaxUid: ts };
    const element = view.getUint16(pos + 2, true);
    const vr = String.fromCharCode(head[pos + 4], head[pos + 5]);
    let len: number;
    let valueAt: number;
    if (['OB', 'OW', 'OF', 'SQ', 'UT', 'UN', 'UC', 'UR', 'OD', 'OL', 'OV', 'SV', 'UV'].includes(vr)) {
      if (pos + 12 > head.length) return 'more';
      len = view.getUint32(pos + 8, true);
      valueAt = pos + 12;
    } else {
      len = view.getUint16(pos + 6, true);
      valueAt = pos + 8;
    }
    if (len === 0xffffffff || valueAt + len > MAX_META_BYTES) return 'invalid';
    if (valueAt + len > head.length) return 'more';
    if (element === 0x0010) {
      ts = Buffer.from(head.subarray(valueAt, valueAt + len))
        .toString('latin1')
        .replace(/[\0 ]+$/, '');
    }
    pos = valueAt + len;
  }
}

const PADDING = 0xfffcfffc;
const MAX_DEPTH = 64;
const TEXT_VRS = new Set([
  'AE',
  'AS',
  'CS',
  'DA',
  'DS',
  'DT',
  'IS',
  'LO',
  'LT',
  'PN',
  'SH',
  'ST',
  'TM',
  'UC',
  'UI',
  'UR',
  'UT',
]);

class NotCanonical extends Error {}

const SCRATCH_BYTES = 64 * 1024;

/**
 * Hashes a data set as content, not as layout: each element's tag and value bytes, sequences and items as
 * nesting marks, whatever their length encoding (defined or undefined: DCMTK re-encodes undefined lengths as
 * explicit ones when it sends), without group lengths (gggg,0000) and Data Set Trailing Padding (FFFC,FFFC), which
 * carry no content and which writers add or drop, and without the trailing padding of string values. The VR is left out: DCMTK names the dictionary VR where a file
 * said UN, with the same value bytes. Everything else, every value byte and every fragment of encapsulated Pixel
 * Data, counts.
 */
function canonicalHash(ts: string, data: Uint8Array): string {
  const explicit = ts !== TS_IMPLICIT_LE;
  const little = ts !== TS_EXPLICIT_BE;
  const view = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const hash = createHash('md5').update(ts, 'latin1').update('\0');
  // Marks and small values are gathered in one scratch buffer and hashed together: one hash update per element
  // would cost more than the hashing itself. The hashed byte stream is the same.
  const scratch = Buffer.allocUnsafe(SCRATCH_BYTES);
  let used = 0;
  const drain = () => {
    if (used) hash.update(scratch.subarray(0, used));
    used = 0;
  };
  const h = {
    update(bytes: Uint8Array) {
      if (bytes.length > SCRATCH_BYTES / 4) {
        drain();
        hash.update(bytes);
        return;
      }
      if (used + bytes.length > SCRATCH_BYTES) drain();
      scratch.set(bytes, used);
      used += bytes.length;
    },
    digest() {
      drain();
      return hash.digest('hex');
    },
  };
  const u16 = (p: number, le: boolean) => view.getUint16(p, le);
  const u32 = (p: number, le: boolean) => view.getUint32(p, le);
  const mark = (kind: number, a = 0, b = 0) => {
    if (used + 9 > SCRATCH_BYTES) drain();
    scratch[used] = kind;
    scratch.writeUInt32BE(a >>> 0, used + 1);
    scratch.writeUInt32BE(b >>> 0, used + 5);
    used += 9;
  };
  const need = (p: number, n: number) => {
    if (p + n > data.length) throw new NotCanonical('truncated');
  };
  const readTag = (p: number, le: boolean) => ((u16(p, le) << 16) | u16(p + 2, le)) >>> 0;
  const looksLikeItem = (p: number, end: number, le: boolean) => p + 8 <= end && readTag(p, le) === ITEM;

  /** Walks elements from p to end (or to a delimiter when end is undefined); returns the position after. */
  const walk = (
    p: number,
    end: number | undefined,
    depth: number,
    isExplicit: boolean,
    le: boolean,
  ): number => {
    if (depth > MAX_DEPTH) throw new NotCanonical('too deep');
    const stop = end ?? data.length;
    while (p < stop) {
      need(p, 8);
      const tag = readTag(p, le);
      if (tag === ITEM_DELIM) {
        if (end !== undefined) throw new NotCanonical('stray delimiter');
        return p + 8;
      }
      let vr = '';
      let len: number;
      let at: number;
      if (isExplicit && tag !== ITEM && tag !== SEQ_DELIM) {
        vr = String.fromCharCode(data[p + 4], data[p + 5]);
        if (LONG_VRS.has(vr)) {
          need(p, 12);
          len = u32(p + 8, le);
          at = p + 12;
        } else {
          len = u16(p + 6, le);
          at = p + 8;
        }
      } else {
        len = u32(p + 4, le);
        at = p + 8;
      }
      const skip = (tag & 0xffff) === 0 || tag === PADDING;
      if (tag === 0x7fe00010 && len === UNDEFINED) {
        // Encapsulated Pixel Data: the offset table and every fragment, as items of bytes.
        mark(0x46, tag);
        p = at;
        for (;;) {
          need(p, 8);
          const t = readTag(p, le);
          const l = u32(p + 4, le);
          if (t === SEQ_DELIM) {
            p += 8;
            break;
          }
          if (t !== ITEM || l === UNDEFINED) throw new NotCanonical('bad fragment');
          need(p + 8, l);
          mark(0x66, l);
          h.update(data.subarray(p + 8, p + 8 + l));
          p += 8 + l;
        }
        mark(0x45);
        continue;
      }
      const sequence =
        vr === 'SQ' ||
        (len === UNDEFINED && (vr === 'UN' || vr === '')) ||
        (!isExplicit && len !== UNDEFINED && looksLikeItem(at, at + len, le));
      if (sequence) {
        // An undefined-length UN holds an Implicit VR Little Endian sequence (PS3.5 §6.2.2).
        const innerExplicit = vr === 'UN' ? false : isExplicit;
        const innerLe = vr === 'UN' ? true : le;
        mark(0x53, tag);
        const seqEnd = len === UNDEFINED ? undefined : at + len;
        if (seqEnd !== undefined) need(at, len);
        p = at;
        for (;;) {
          if (seqEnd !== undefined && p >= seqEnd) break;
          need(p, 8);
          const t = readTag(p, innerLe);
          const l = u32(p + 4, innerLe);
          if (t === SEQ_DELIM) {
            if (seqEnd !== undefined) throw new NotCanonical('stray delimiter');
            p += 8;
            break;
          }
          if (t !== ITEM) throw new NotCanonical('not an item');
          mark(0x49);
          p = walk(p + 8, l === UNDEFINED ? undefined : p + 8 + l, depth + 1, innerExplicit, innerLe);
          mark(0x69);
        }
        if (seqEnd !== undefined) p = seqEnd;
        mark(0x73);
        continue;
      }
      if (len === UNDEFINED) throw new NotCanonical('undefined length');
      need(at, len);
      if (!skip) {
        let n = len;
        // Trailing spaces and NULs of a string value are padding (PS3.5 §6.2), which writers keep or drop (DCMTK
        // sends an all-space value as empty). Implicit VR does not say which values are strings: left as they are.
        if (TEXT_VRS.has(vr)) while (n > 0 && (data[at + n - 1] === 0x20 || data[at + n - 1] === 0)) n--;
        mark(0x44, tag, n);
        h.update(data.subarray(at, at + n));
      }
      p = at + len;
    }
    if (end === undefined && depth > 0) throw new NotCanonical('unterminated item');
    return p;
  };
  walk(0, data.length, 0, explicit, little);
  return h.digest();
}

/**
 * The identity hash of a Part-10 object in memory: its transfer syntax and data-set content (see canonicalHash).
 * Undefined when it is not Part 10 or its data set cannot be walked. `maxInflated` bounds a deflated data set.
 */
export function dataSetMd5(bytes: Uint8Array, maxInflated = 4 * 1024 ** 3 - 1): string | undefined {
  const at = locateDataSet(bytes);
  if (typeof at === 'string') return undefined;
  try {
    let data = bytes.subarray(at.offset);
    if (at.transferSyntaxUid === TS_DEFLATED) {
      data = inflateRawSync(data, { maxOutputLength: Math.min(maxInflated, 2 ** 31 - 1) });
      return canonicalHash(TS_DEFLATED, data);
    }
    return canonicalHash(at.transferSyntaxUid, data);
  } catch (err) {
    if (err instanceof NotCanonical || err instanceof RangeError || (err as { code?: string })?.code)
      return undefined;
    throw err;
  }
}

/** What reading an archived file back tells about it. */
export interface ArchivedDigest {
  /** MD5 of the whole file, as the index keeps it. */
  md5: string;
  /** See dataSetMd5; undefined when the archived file is not Part 10 or cannot be walked. */
  datasetMd5?: string;
  size: number;
}

/**
 * Reads an archived file into memory, at most `maxBytes` of it ('too-large' beyond: the caller compares with an
 * object of known size, and a file much larger than it cannot hold the same data set), and digests it.
 */
export async function digestArchived(
  body: Readable,
  maxBytes: number,
): Promise<ArchivedDigest | 'too-large'> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > maxBytes) {
      body.destroy();
      return 'too-large';
    }
    chunks.push(chunk);
  }
  const bytes = Buffer.concat(chunks, size);
  return {
    md5: createHash('md5').update(bytes).digest('hex'),
    datasetMd5: dataSetMd5(bytes, maxBytes * 8),
    size,
  };
}
