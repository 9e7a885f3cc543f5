/**
 * Builders of small Part-10 objects and the mutators the fuzz suites apply to real samples: truncation, huge and
 * odd lengths, VR-inconsistent lengths, flipped bytes, deep nesting, bad UIDs, polyglot preambles, and broken
 * multipart framing. Pure (no I/O) so that unit tests, test/fuzz.itest.ts and bench/fuzz.ts share one generator.
 */
import { deflateRawSync } from 'node:zlib';
import fc from 'fast-check';
import { DicomParseError, LONG_VRS } from '../../src/dicom/structure';

/** One Explicit VR Little Endian element; `undefinedLength` only for SQ/OB/OW/UN. */
export function el(tag: number, vr: string, value: Buffer, undefinedLength = false): Buffer {
  const long = LONG_VRS.has(vr);
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(tag >>> 16, 0);
  head.writeUInt16LE(tag & 0xffff, 2);
  head.write(vr, 4, 'latin1');
  if (long) head.writeUInt32LE(undefinedLength ? 0xffffffff : value.length, 8);
  else head.writeUInt16LE(value.length, 6);
  return Buffer.concat([head, value]);
}

/** A text value padded to even length as PS3.5 wants (UI with NUL, others with space). */
export function text(s: string, vr = 'LO'): Buffer {
  const b = Buffer.from(s, 'latin1');
  return b.length % 2 ? Buffer.concat([b, Buffer.from(vr === 'UI' ? [0] : [0x20])]) : b;
}

export const ui = (tag: number, uid: string) => el(tag, 'UI', text(uid, 'UI'));

function tagBytes(group: number, element: number, length: number): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(group, 0);
  b.writeUInt16LE(element, 2);
  b.writeUInt32LE(length, 4);
  return b;
}

/** A sequence of items, each a concatenation of elements; undefined lengths with delimiters unless `defined`. */
export function sq(tag: number, items: Buffer[], defined = false): Buffer {
  const body = Buffer.concat(
    items.map((it) =>
      defined
        ? Buffer.concat([tagBytes(0xfffe, 0xe000, it.length), it])
        : Buffer.concat([tagBytes(0xfffe, 0xe000, 0xffffffff), it, tagBytes(0xfffe, 0xe00d, 0)]),
    ),
  );
  return defined
    ? el(tag, 'SQ', body)
    : Buffer.concat([
        el(tag, 'SQ', Buffer.alloc(0), true).subarray(0, 12),
        body,
        tagBytes(0xfffe, 0xe0dd, 0),
      ]);
}

export interface SyntheticUids {
  sopClassUid?: string;
  sopInstanceUid?: string;
  studyInstanceUid?: string;
  seriesInstanceUid?: string;
}

/** Default UIDs of synthetic objects (2.25 = UUID-derived root, PS3.5 §B.2). */
export function syntheticUids(n: number | string): Required<SyntheticUids> {
  return {
    sopClassUid: '1.2.840.10008.5.1.4.1.1.7',
    studyInstanceUid: `2.25.1000${n}`,
    seriesInstanceUid: `2.25.2000${n}`,
    sopInstanceUid: `2.25.3000${n}`,
  };
}

/**
 * A Secondary Capture Part-10 object without pixel data (Explicit VR LE, or Deflated when `deflate`), with
 * `extra` elements after the identifying ones (their tags must sort after (0020,000E) for a well-ordered object,
 * which the walker does not require).
 */
export function part10(
  uids: SyntheticUids,
  extra: Buffer[] = [],
  opts: { preamble?: Buffer; deflate?: boolean; transferSyntax?: string } = {},
): Buffer {
  const ts = opts.transferSyntax ?? (opts.deflate ? '1.2.840.10008.1.2.1.99' : '1.2.840.10008.1.2.1');
  const ds: Buffer[] = [];
  if (uids.sopClassUid !== undefined) ds.push(ui(0x00080016, uids.sopClassUid));
  if (uids.sopInstanceUid !== undefined) ds.push(ui(0x00080018, uids.sopInstanceUid));
  ds.push(el(0x00080060, 'CS', text('OT', 'CS')));
  ds.push(el(0x00100010, 'PN', text('Fuzz^Synthetic', 'PN')));
  ds.push(el(0x00100020, 'LO', text('FUZZ-1')));
  if (uids.studyInstanceUid !== undefined) ds.push(ui(0x0020000d, uids.studyInstanceUid));
  if (uids.seriesInstanceUid !== undefined) ds.push(ui(0x0020000e, uids.seriesInstanceUid));
  for (const e of extra) ds.push(e);
  let dataset = Buffer.concat(ds);
  if (opts.deflate) dataset = deflateRawSync(dataset);
  const metaBody = Buffer.concat([
    el(0x00020001, 'OB', Buffer.from([0, 1])),
    ui(0x00020002, uids.sopClassUid ?? '1.2.840.10008.5.1.4.1.1.7'),
    ui(0x00020003, uids.sopInstanceUid ?? '2.25.1'),
    ui(0x00020010, ts),
    ui(0x00020012, '1.2.826.0.1.3680043.9.7433.1'),
  ]);
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(metaBody.length);
  const preamble = opts.preamble ?? Buffer.alloc(128);
  return Buffer.concat([preamble, Buffer.from('DICM'), el(0x00020000, 'UL', groupLength), metaBody, dataset]);
}

/**
 * (0040,A730) Content Sequence nested `depth` levels, as in an SR content tree: each item holds a text value and
 * the next level. Built from the inside out without recursion, so depth 100,000 costs only its bytes.
 */
export function nestedContent(depth: number, defined = false): Buffer {
  const leaf = el(0x0040a160, 'UT', text('leaf'));
  if (!defined) {
    // Undefined lengths: the prefix and suffix of each level simply repeat.
    const open = Buffer.concat([
      el(0x0040a730, 'SQ', Buffer.alloc(0), true),
      tagBytes(0xfffe, 0xe000, 0xffffffff),
    ]);
    const close = Buffer.concat([tagBytes(0xfffe, 0xe00d, 0), tagBytes(0xfffe, 0xe0dd, 0)]);
    return Buffer.concat([...Array<Buffer>(depth).fill(open), leaf, ...Array<Buffer>(depth).fill(close)]);
  }
  let inner = leaf;
  for (let i = 0; i < depth; i++) inner = sq(0x0040a730, [inner], true);
  return inner;
}

/** Polyglot preambles (CVE-2019-11687): what a file would also be if its first 128 bytes were run. */
export const POLYGLOT_PREAMBLES: Record<string, Buffer> = {
  pe: preamble(Buffer.concat([Buffer.from('MZ'), Buffer.alloc(58), Buffer.from([0x80, 0, 0, 0])])),
  elf: preamble(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0])),
  html: preamble(Buffer.from('<html><script>alert(document.domain)</script><!--')),
  pdf: preamble(Buffer.from('%PDF-1.4\n1 0 obj<<>>endobj\n')),
  shell: preamble(Buffer.from('#!/bin/sh\necho polyglot; exit 0\n')),
};

function preamble(prefix: Buffer): Buffer {
  const b = Buffer.alloc(128);
  prefix.copy(b);
  return b;
}

/** Offsets of data-element headers found by a forgiving linear scan (for targeted mutations). */
export function elementOffsets(bytes: Buffer): Array<{ offset: number; vr: string; long: boolean }> {
  const out: Array<{ offset: number; vr: string; long: boolean }> = [];
  for (let p = 132; p + 12 <= bytes.length; p += 2) {
    const vr = bytes.toString('latin1', p + 4, p + 6);
    if (!/^[A-Z]{2}$/.test(vr)) continue;
    const group = bytes.readUInt16LE(p);
    if (group === 0 || group === 0xfffe || group > 0x7fe0) continue;
    out.push({ offset: p, vr, long: LONG_VRS.has(vr) });
  }
  return out;
}

/** One mutation of a sample: what was done (for reports) and the bytes. */
export interface Mutant {
  kind: string;
  bytes: Buffer;
}

/**
 * A fast-check generator of mutants of `sample` (a valid Part-10 object). No filters: a filter that can never pass
 * (a sample without UI elements found by the scan) would make fast-check generate forever.
 */
export function mutantOf(sample: Buffer): fc.Arbitrary<Mutant> {
  const offsets = elementOffsets(sample);
  const pickEl = fc.nat({ max: Math.max(0, offsets.length - 1) });
  const fixed = offsets.filter((o) => ['US', 'SS', 'UL', 'SL', 'FL', 'FD', 'AT'].includes(o.vr));
  const uiEls = offsets.filter((o) => o.vr === 'UI');
  const copy = () => Buffer.from(sample);
  const arbs: Array<fc.Arbitrary<Mutant>> = [
    fc.integer({ min: 1, max: Math.max(1, sample.length - 1) }).map((n) => ({
      kind: 'truncate',
      bytes: sample.subarray(0, n),
    })),
    fc.tuple(pickEl, fc.constantFrom(0xfffffff0, 0x7fffffff, 0x10000000, 0xfffe, 0x0001)).map(([i, len]) => {
      if (!offsets.length) return { kind: 'huge-length', bytes: copy().fill(0xff, 132, 140) };
      const b = copy();
      const o = offsets[i];
      if (o.long) b.writeUInt32LE(len >>> 0, o.offset + 8);
      else b.writeUInt16LE(len & 0xffff, o.offset + 6);
      return { kind: 'huge-length', bytes: b };
    }),
    fc.tuple(pickEl, fc.constantFrom(1, 3, -1)).map(([i, delta]) => {
      if (!offsets.length) return { kind: 'odd-length', bytes: sample.subarray(0, sample.length - 1) };
      const b = copy();
      const o = offsets[i];
      if (o.long) b.writeUInt32LE((b.readUInt32LE(o.offset + 8) + delta) >>> 0, o.offset + 8);
      else b.writeUInt16LE((b.readUInt16LE(o.offset + 6) + delta) & 0xffff, o.offset + 6);
      return { kind: 'odd-length', bytes: b };
    }),
    fc.nat({ max: Math.max(0, fixed.length - 1) }).map((i) => {
      if (!fixed.length) return { kind: 'wrong-vr-length', bytes: sample.subarray(0, sample.length - 3) };
      // A fixed-size VR relabelled so that its length no longer fits (US of 4 bytes read as FD ...).
      const b = copy();
      const o = fixed[i];
      b.write(o.vr === 'FD' ? 'UL' : 'FD', o.offset + 4, 'latin1');
      return { kind: 'wrong-vr-length', bytes: b };
    }),
    fc
      .array(fc.tuple(fc.integer({ min: 0, max: sample.length - 1 }), fc.integer({ min: 1, max: 255 })), {
        minLength: 1,
        maxLength: 8,
      })
      .map((flips) => {
        const b = copy();
        for (const [at, x] of flips) b[at] ^= x;
        return { kind: 'flipped-bytes', bytes: b };
      }),
    fc.tuple(fc.constantFrom(2, 8, 15, 16, 17, 30, 45, 60, 200), fc.boolean()).map(([depth, defined]) => ({
      kind: depth > 16 ? 'deep-nesting' : 'nesting',
      bytes: Buffer.concat([sample, nestedContent(depth, defined)]),
    })),
    fc
      .tuple(
        fc.nat({ max: Math.max(0, uiEls.length - 1) }),
        fc.constantFrom('n', 'a', ' ', '.', '..', '\\1.2', '1'.repeat(70)),
      )
      .map(([i, junk]) => {
        if (!uiEls.length) return { kind: 'bad-uid', bytes: sample.subarray(0, sample.length - 5) };
        // Replace the middle of a UI value, keeping its length (so the structure stays valid).
        const b = copy();
        const o = uiEls[i];
        const len = b.readUInt16LE(o.offset + 6);
        const j = Buffer.from(junk, 'latin1').subarray(0, Math.max(0, len - 2));
        j.copy(b, o.offset + 8 + Math.floor((len - j.length) / 2));
        return { kind: 'bad-uid', bytes: b };
      }),
    fc.constantFrom(...Object.keys(POLYGLOT_PREAMBLES)).map((k) => {
      const b = copy();
      POLYGLOT_PREAMBLES[k].copy(b, 0);
      return { kind: 'polyglot-preamble', bytes: b };
    }),
  ];
  return fc.oneof(...arbs);
}

/** Broken multipart framings around one valid part; `body` is what is sent, with `contentType`. */
export interface FramingMutant {
  kind: string;
  body: Buffer;
  contentType: string;
}

export function framingMutantOf(part: Buffer): fc.Arbitrary<FramingMutant> {
  const boundary = 'fuzz-boundary-1';
  const ct = (b: string) => `multipart/related; type="application/dicom"; boundary=${b}`;
  const good = () =>
    Buffer.concat([
      Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`),
      part,
      Buffer.from(`\r\n--${boundary}--\r\n`),
    ]);
  return fc.oneof(
    fc.integer({ min: 1, max: part.length + 60 }).map((n) => ({
      kind: 'truncated-body',
      body: good().subarray(0, n),
      contentType: ct(boundary),
    })),
    fc.constantFrom('', '"', 'a'.repeat(300), 'bad boundary ', 'semi;colon', '"unterminated').map((b) => ({
      kind: 'bad-boundary',
      body: good(),
      contentType: b === '' ? 'multipart/related; type="application/dicom"' : ct(b),
    })),
    fc.constant({
      kind: 'missing-crlf',
      body: Buffer.concat([
        Buffer.from(`--${boundary}Content-Type: application/dicom\r\n\r\n`),
        part,
        Buffer.from(`--${boundary}--`),
      ]),
      contentType: ct(boundary),
    }),
    fc.integer({ min: 17 * 1024, max: 256 * 1024 }).map((n) => ({
      kind: 'huge-part-headers',
      body: Buffer.concat([
        Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\nX-Pad: ${'p'.repeat(n)}\r\n\r\n`),
        part,
        Buffer.from(`\r\n--${boundary}--\r\n`),
      ]),
      contentType: ct(boundary),
    })),
    fc.constant({
      kind: 'no-closing-delimiter',
      body: Buffer.concat([Buffer.from(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`), part]),
      contentType: ct(boundary),
    }),
  );
}

/**
 * The bytes the archive holds for a Part-10 object sent through the gateway: the same, with the 128-byte
 * preamble zeroed (CVE-2019-11687; several samples carry TIFF headers or stray bytes there).
 */
export function asArchived(bytes: Buffer): Buffer {
  if (bytes.length < 132 || bytes.subarray(0, 128).every((b) => b === 0)) return bytes;
  return Buffer.concat([Buffer.alloc(128), bytes.subarray(128)]);
}

/** The Failure Reason a parse refuses with, or 'accepted'; other errors propagate. */
export function reasonOf(f: () => unknown): number | 'accepted' {
  try {
    f();
    return 'accepted';
  } catch (err) {
    if (err instanceof DicomParseError) return err.reason;
    throw err;
  }
}
