/**
 * A bounded structural walk over the raw bytes of a DICOM Part-10 object (PS3.10 §7, PS3.5 §7), done before any
 * full parser sees the object and before anything reaches the archive.
 *
 * Why: the archive (Orthanc 1.10, DCMTK's libdcmdata) recurses once per nested sequence and trusts declared
 * lengths; a 2.6 KB object nested 60 deep crashes it, and a huge declared length keeps it busy for seconds. dcmjs
 * is recursive too, and "repairs" what it cannot read. So every object is checked here to its last byte, with an
 * explicit stack (depth 100,000 must not blow ours), and refused unless it is whole, within bounds and says
 * unambiguously which instance it is.
 */
import { TransferSyntax, transferSyntaxInfo } from './transfer-syntax';
import { isStrictUid, isUid } from './uid';
import { inflateRawSync } from 'node:zlib';
import dcmjs from 'dcmjs';

/** Failure reasons of PS3.18 Table I.2-2 used at ingest. */
export const FailureReason = {
  OutOfResources: 0xa700,
  DataSetDoesNotMatchSopClass: 0xa900,
  CannotUnderstand: 0xc000,
  TransferSyntaxNotSupported: 0xc122,
  ProcessingFailure: 0x0110,
  SopClassNotSupported: 0x0122,
  /** Study Instance UID differs from the one in the request URL (an A9xx "does not match" refinement). */
  StudyUidMismatch: 0xa910,
  /** A different object is already stored under this SOP Instance UID. */
  DuplicateSopInstance: 0x0111,
} as const;

/** The object could not be accepted; `reason` is the Failure Reason (0008,1197) to report. Message carries no PHI. */
export class DicomParseError extends Error {
  /**
   * The object's SOP Class and Instance UIDs, when they were read as plausible UIDs before it was refused: the
   * Failed SOP item of the Store Instances Response names them (PS3.18 Annex I, Type 1).
   */
  known?: { sopClassUid?: string; sopInstanceUid?: string };

  constructor(
    readonly reason: number,
    message: string,
  ) {
    super(message);
    this.name = 'DicomParseError';
  }
}

/** The UID checks live in dicom/uid.ts; these names are kept for the parser's callers. */
export const isPlausibleUid = isUid;
export const isValidUid = isStrictUid;

/** Bounds of the structural walk. */
export interface StructureLimits {
  /** Deepest sequence nesting accepted (a sequence at the top level is depth 1). */
  maxDepth: number;
  /** Most data elements (File Meta, items and fragments included). */
  maxElements: number;
  /** Most items in one sequence, and in the whole object (fragments are not items). */
  maxItemsPerSequence: number;
  maxItems: number;
  /** Largest inflated data set of a Deflated Explicit VR Little Endian object. */
  maxInflatedBytes: number;
}

/**
 * Defaults: the deepest real object among the gateway's samples and pydicom's ~180 test files nests 4 deep, SR
 * trees rarely pass 10, and Orthanc 1.10 crashes from about 50 (40 is fine): 16 leaves a wide margin both ways.
 * Element count: an Enhanced multi-frame object of 3,000 frames holds ~300,000; 1,000,000 bounds the walk's time
 * (~50 ms) without refusing real data. Items: Orthanc 1.10's time grows faster than linearly with the items of one
 * sequence (10,000: 0.7 s; 20,000: 3.3 s; 100,000: over 60 s, measured on this machine), while real objects hold
 * one item per frame (per-frame functional groups) or per contour: 10,000 per sequence and 100,000 in all leave
 * room for 10,000-frame objects and bound the archive's work to seconds. Inflated size: deflate is used for SR and small objects; 256 MiB is far
 * above them and bounds what a zip bomb can allocate.
 */
export const DEFAULT_STRUCTURE_LIMITS: StructureLimits = {
  maxDepth: 16,
  maxElements: 1_000_000,
  maxItemsPerSequence: 10_000,
  maxItems: 100_000,
  maxInflatedBytes: 256 * 1024 ** 2,
};

/** What the walk learnt: the identifying UIDs read from the raw bytes, and the object's shape. */
export interface Part10Structure {
  transferSyntaxUid: string;
  /** Top-level UIDs as encoded, trailing padding removed; undefined when absent. Not yet validated. */
  sopClassUid?: string;
  sopInstanceUid?: string;
  studyInstanceUid?: string;
  seriesInstanceUid?: string;
  /** True when the 128-byte preamble is all zero. */
  preambleIsZero: boolean;
  elements: number;
  /** Deepest sequence nesting seen. */
  depth: number;
  /**
   * Top-level Pixel Data in an explicit VR: its VR and value length (undefined when encapsulated), and whether it is
   * the last element of the data set (a full parse may then stop before it).
   */
  pixelData?: { vr: string; length?: number; last: boolean };
}

// Encoding constants shared with the data-set hash (ingest/identity.ts).
export const TS_IMPLICIT_LE = TransferSyntax.implicitVrLittleEndian;
export const TS_EXPLICIT_LE = TransferSyntax.explicitVrLittleEndian;
export const TS_EXPLICIT_BE = TransferSyntax.explicitVrBigEndian;
export const TS_DEFLATED = TransferSyntax.deflatedExplicitVrLittleEndian;

export const ITEM = 0xfffee000;
export const ITEM_DELIM = 0xfffee00d;
export const SEQ_DELIM = 0xfffee0dd;
const PIXEL_DATA = 0x7fe00010;
export const UNDEFINED = 0xffffffff;

const TAG_TS = 0x00020010;
const KEY_UIDS: Record<number, 'sopClassUid' | 'sopInstanceUid' | 'studyInstanceUid' | 'seriesInstanceUid'> =
  {
    0x00080016: 'sopClassUid',
    0x00080018: 'sopInstanceUid',
    0x0020000d: 'studyInstanceUid',
    0x0020000e: 'seriesInstanceUid',
  };

/** Explicit VRs with a 2-byte reserved field and a 4-byte length (PS3.5 Table 7.1-1). */
export const LONG_VRS = new Set([
  'OB',
  'OD',
  'OF',
  'OL',
  'OV',
  'OW',
  'SQ',
  'SV',
  'UC',
  'UN',
  'UR',
  'UT',
  'UV',
]);
const KNOWN_VRS = new Set([
  ...LONG_VRS,
  ...['AE', 'AS', 'AT', 'CS', 'DA', 'DS', 'DT', 'FD', 'FL', 'IS', 'LO', 'LT', 'PN', 'SH', 'SL', 'SS', 'ST'],
  ...['TM', 'UI', 'UL', 'US'],
]);
/** Value lengths of binary VRs must be a multiple of their size (dictionary pseudo-VRs included). */
const VR_UNIT: Record<string, number> = {
  AT: 4, FL: 4, FD: 8, SL: 4, SS: 2, UL: 4, US: 2, SV: 8, UV: 8,
  OD: 8, OF: 4, OL: 4, OV: 8, OW: 2, xs: 2, up: 4, lt: 2,
}; // prettier-ignore

let dictionary: Map<number, string> | undefined;

/**
 * The data dictionary's VR per tag (dcmjs's PS3.6 table), for Implicit VR data sets; undefined for private and
 * unknown tags. Repeating groups (curves, overlays) are listed under their first group.
 */
export function dictionaryVr(tag: number): string | undefined {
  if (!dictionary) {
    dictionary = new Map();
    for (const e of Object.values(dcmjs.data.DicomMetaDictionary.nameMap)) {
      const m = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(e.tag);
      if (m) dictionary.set(parseInt(m[1] + m[2], 16) >>> 0, e.vr);
    }
  }
  const group = tag >>> 16;
  if (group & 1) return undefined;
  if ((group & 0xff00) === 0x5000 || (group & 0xff00) === 0x6000) {
    return dictionary.get((((group & 0xff00) << 16) | (tag & 0xffff)) >>> 0);
  }
  return dictionary.get(tag);
}

type Frame =
  | { kind: 'dataset'; end?: number; bound: number; explicit: boolean; little: boolean }
  | { kind: 'sequence'; end?: number; bound: number; explicit: boolean; little: boolean; items?: number }
  | { kind: 'fragments'; bound: number; little: boolean };

function fail(message: string, reason: number = FailureReason.CannotUnderstand): never {
  throw new DicomParseError(reason, message);
}

const hex = (tag: number) => `(${(tag >>> 16).toString(16).padStart(4, '0')},${(tag & 0xffff).toString(16).padStart(4, '0')})`.toUpperCase(); // prettier-ignore

/** UI value as the archive will see it: trailing NUL/space padding removed, nothing else changed. */
function uidText(buf: Uint8Array, start: number, length: number): string {
  let end = start + length;
  while (end > start && (buf[end - 1] === 0 || buf[end - 1] === 0x20)) end--;
  return Buffer.from(buf.buffer, buf.byteOffset + start, end - start).toString('latin1');
}

/**
 * Walks a whole Part-10 object: preamble, "DICM", File Meta (Explicit VR LE) and the data set in its transfer
 * syntax, to its last byte. Throws DicomParseError (0xC000) for anything truncated, overlong, odd-length,
 * inconsistent or beyond the limits. Messages name tags and offsets, never values.
 */
export function walkPart10(
  buf: Uint8Array,
  limits: StructureLimits = DEFAULT_STRUCTURE_LIMITS,
): Part10Structure {
  const seen: Partial<Part10Structure> = {};
  try {
    return walk(buf, limits, seen);
  } catch (err) {
    // The UIDs come early in a data set: an object truncated further on still says which instance it was.
    if (err instanceof DicomParseError) noteKnownUids(err, seen);
    throw err;
  }
}

/** Records on a refusal the SOP Class and Instance UIDs read so far, when they are plausible UIDs. */
export function noteKnownUids(
  err: DicomParseError,
  raw: Pick<Part10Structure, 'sopClassUid' | 'sopInstanceUid'>,
): void {
  if (err.known) return;
  err.known = {};
  if (isPlausibleUid(raw.sopClassUid)) err.known.sopClassUid = raw.sopClassUid;
  if (isPlausibleUid(raw.sopInstanceUid)) err.known.sopInstanceUid = raw.sopInstanceUid;
}

function walk(buf: Uint8Array, limits: StructureLimits, seen: Partial<Part10Structure>): Part10Structure {
  if (
    buf.byteLength < 132 ||
    buf[128] !== 0x44 ||
    buf[129] !== 0x49 ||
    buf[130] !== 0x43 ||
    buf[131] !== 0x4d
  ) {
    fail('not a DICOM Part-10 object (no DICM prefix)');
  }
  let preambleIsZero = true;
  for (let i = 0; i < 128; i++) if (buf[i] !== 0) preambleIsZero = false;

  const view = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  let elements = 0;
  const count = () => {
    if (++elements > limits.maxElements) fail(`more than ${limits.maxElements} data elements`);
  };

  // File Meta Information: Explicit VR Little Endian, group 0002 only, no sequences.
  let p = 132;
  let tsRaw: string | undefined;
  while (p + 4 <= buf.byteLength && view.getUint16(p, true) === 0x0002) {
    if (p + 8 > buf.byteLength) fail('File Meta Information is truncated');
    const tag = ((view.getUint16(p, true) << 16) | view.getUint16(p + 2, true)) >>> 0;
    const vr = String.fromCharCode(buf[p + 4], buf[p + 5]);
    if (!KNOWN_VRS.has(vr) || vr === 'SQ') fail(`invalid VR in File Meta Information at ${hex(tag)}`);
    let len: number;
    let hdr: number;
    if (LONG_VRS.has(vr)) {
      if (p + 12 > buf.byteLength) fail('File Meta Information is truncated');
      len = view.getUint32(p + 8, true);
      hdr = 12;
    } else {
      len = view.getUint16(p + 6, true);
      hdr = 8;
    }
    if (len === UNDEFINED || p + hdr + len > buf.byteLength)
      fail(`File Meta element ${hex(tag)} overruns the object`);
    if (len & 1) fail(`odd value length in ${hex(tag)}`);
    if (VR_UNIT[vr] && len % VR_UNIT[vr]) fail(`value length of ${hex(tag)} does not fit its VR ${vr}`);
    count();
    if (tag === TAG_TS) tsRaw = uidText(buf, p + hdr, len);
    p += hdr + len;
  }
  if (tsRaw === undefined || tsRaw === '') fail('File Meta Information has no Transfer Syntax UID');
  if (!isPlausibleUid(tsRaw)) fail('invalid Transfer Syntax UID', FailureReason.DataSetDoesNotMatchSopClass);
  // A syntax the gateway does not know cannot be walked, so it is not passed on for the archive to guess at
  // (Orthanc 1.10 went down on a STOW whose Transfer Syntax UID had one digit moved, found by the fuzz test).
  if (!transferSyntaxInfo(tsRaw))
    fail(`transfer syntax ${tsRaw} is not supported`, FailureReason.TransferSyntaxNotSupported);
  const ts = tsRaw;

  let data = buf;
  let dview = view;
  if (ts === TS_DEFLATED) {
    let inflated: Buffer;
    let consumed: number;
    try {
      const r = inflateRawSync(buf.subarray(p), {
        maxOutputLength: limits.maxInflatedBytes,
        info: true,
      }) as unknown as {
        buffer: Buffer;
        engine: { bytesWritten: number };
      };
      inflated = r.buffer;
      consumed = r.engine.bytesWritten;
    } catch (err) {
      const tooBig = (err as { code?: string }).code === 'ERR_BUFFER_TOO_LARGE';
      fail(
        tooBig
          ? `inflated data set exceeds ${limits.maxInflatedBytes} bytes`
          : 'deflated data set is corrupt',
      );
    }
    // zlib stops at the end of the deflate stream. Writers add a pad byte for an even length, and some a gzip
    // trailer (CRC-32 and size, 8 bytes, as in the deflate sample); anything longer is data no parser would read.
    if (buf.byteLength - p - consumed > 8) fail('data after the deflated data set');
    data = inflated;
    dview = new DataView(inflated.buffer, inflated.byteOffset, inflated.byteLength);
    p = 0;
  }
  const explicit = ts !== TS_IMPLICIT_LE;
  const little = ts !== TS_EXPLICIT_BE;
  const out: Part10Structure = Object.assign(seen, {
    transferSyntaxUid: ts,
    preambleIsZero,
    elements: 0,
    depth: 0,
  });
  const root: Frame = { kind: 'dataset', end: data.byteLength, bound: data.byteLength, explicit, little };
  const stack: Frame[] = [root];
  let depth = 0;
  let items = 0;
  let lastTopTag = 0;
  const enter = (frame: Frame) => {
    if (frame.kind === 'sequence') {
      if (++depth > limits.maxDepth) fail(`sequences nested deeper than ${limits.maxDepth}`);
      if (depth > out.depth) out.depth = depth;
    }
    stack.push(frame);
  };

  for (;;) {
    const top = stack[stack.length - 1];
    if (top.kind !== 'fragments' && top.end !== undefined && p === top.end) {
      stack.pop();
      if (top.kind === 'sequence') depth--;
      if (stack.length === 0) break;
      continue;
    }
    if (p + 8 > top.bound) {
      fail(
        top === root
          ? `the data set is truncated at offset ${p}`
          : `a sequence or item is truncated at offset ${p}`,
      );
    }
    const tlittle = top.little;
    const tag = ((dview.getUint16(p, tlittle) << 16) | dview.getUint16(p + 2, tlittle)) >>> 0;

    if (top.kind === 'sequence' || top.kind === 'fragments') {
      const len = dview.getUint32(p + 4, tlittle);
      if (tag === SEQ_DELIM && (top.kind === 'fragments' || top.end === undefined)) {
        if (len !== 0) fail(`sequence delimiter with non-zero length at offset ${p}`);
        count();
        p += 8;
        stack.pop();
        if (top.kind === 'sequence') depth--;
        continue;
      }
      if (tag !== ITEM) fail(`expected an item at offset ${p}, found ${hex(tag)}`);
      count();
      if (top.kind === 'sequence') {
        top.items = (top.items ?? 0) + 1;
        if (top.items > limits.maxItemsPerSequence)
          fail(`more than ${limits.maxItemsPerSequence} items in a sequence`);
        if (++items > limits.maxItems) fail(`more than ${limits.maxItems} items`);
      }
      if (top.kind === 'fragments') {
        if (len === UNDEFINED || p + 8 + len > top.bound) fail(`pixel data fragment overruns at offset ${p}`);
        if (len & 1) fail(`odd pixel data fragment length at offset ${p}`);
        p += 8 + len;
        continue;
      }
      if (len === UNDEFINED) {
        stack.push({ kind: 'dataset', bound: top.bound, explicit: top.explicit, little: tlittle });
      } else {
        if (p + 8 + len > top.bound) fail(`item overruns its sequence at offset ${p}`);
        if (len & 1) fail(`odd item length at offset ${p}`);
        stack.push({
          kind: 'dataset',
          end: p + 8 + len,
          bound: p + 8 + len,
          explicit: top.explicit,
          little: tlittle,
        });
      }
      p += 8;
      continue;
    }

    // An element of a data set (the top level or an item).
    if (tag >>> 16 === 0xfffe) {
      if (tag === ITEM_DELIM && top !== root && top.end === undefined) {
        if (dview.getUint32(p + 4, tlittle) !== 0) fail(`item delimiter with non-zero length at offset ${p}`);
        count();
        p += 8;
        stack.pop();
        continue;
      }
      fail(`misplaced delimiter ${hex(tag)} at offset ${p}`);
    }
    if (tag >>> 16 === 0x0002 && top === root) fail('File Meta element inside the data set');
    count();
    if (top === root) lastTopTag = tag;
    let vr: string;
    let len: number;
    let hdr: number;
    if (top.explicit) {
      vr = String.fromCharCode(data[p + 4], data[p + 5]);
      if (!KNOWN_VRS.has(vr)) fail(`invalid VR at ${hex(tag)}, offset ${p}`);
      if (LONG_VRS.has(vr)) {
        if (p + 12 > top.bound) fail(`the data set is truncated at offset ${p}`);
        len = dview.getUint32(p + 8, tlittle);
        hdr = 12;
      } else {
        len = dview.getUint16(p + 6, tlittle);
        hdr = 8;
      }
    } else {
      // Group lengths (gggg,0000) are UL in every group, private ones included (PS3.5 §7.2).
      vr = (tag & 0xffff) === 0 ? 'UL' : (dictionaryVr(tag) ?? 'UN');
      len = dview.getUint32(p + 4, tlittle);
      hdr = 8;
    }
    const start = p + hdr;
    if (len === UNDEFINED) {
      if (vr === 'SQ') {
        enter({ kind: 'sequence', bound: top.bound, explicit: top.explicit, little: tlittle });
      } else if (tag === PIXEL_DATA || (top.explicit && (vr === 'OB' || vr === 'OW'))) {
        if (top === root && tag === PIXEL_DATA && top.explicit) out.pixelData = { vr, last: false };
        stack.push({ kind: 'fragments', bound: top.bound, little: tlittle });
      } else if (vr === 'UN') {
        // PS3.5 §6.2.2: a sequence of unknown VR is encoded Implicit VR Little Endian.
        enter({ kind: 'sequence', bound: top.bound, explicit: false, little: true });
      } else {
        fail(`undefined length on ${hex(tag)} (VR ${vr})`);
      }
      p = start;
      continue;
    }
    if (start + len > top.bound) fail(`value of ${hex(tag)} overruns the data set at offset ${p}`);
    if (len & 1) fail(`odd value length in ${hex(tag)}`);
    if (vr === 'SQ') {
      enter({
        kind: 'sequence',
        end: start + len,
        bound: start + len,
        explicit: top.explicit,
        little: tlittle,
      });
      p = start;
      continue;
    }
    if (vr === 'UN' && len >= 8 && data[start] === 0xfe && data[start + 1] === 0xff && data[start + 2] === 0x00 && data[start + 3] === 0xe0) {
      // An unknown (private or retired) tag whose value is an item: the archive's dictionary may know it as a
      // sequence and parse it as one, so it is walked as one (Implicit VR LE, PS3.5 §6.2.2).
      enter({ kind: 'sequence', end: start + len, bound: start + len, explicit: false, little: true });
      p = start;
      continue;
    } // prettier-ignore
    const unit = VR_UNIT[vr];
    if (unit && len % unit) fail(`value length of ${hex(tag)} does not fit its VR ${vr}`);
    if (top === root) {
      const key = KEY_UIDS[tag];
      if (key) out[key] = uidText(data, start, len);
      if (tag === PIXEL_DATA && top.explicit) out.pixelData = { vr, length: len, last: false };
    }
    p = start + len;
  }
  out.elements = elements;
  if (out.pixelData) out.pixelData.last = lastTopTag === PIXEL_DATA;
  return out;
}
