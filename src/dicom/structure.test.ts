import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import fc from 'fast-check';
import {
  el,
  mutantOf,
  nestedContent,
  part10,
  reasonOf,
  syntheticUids,
  text,
} from '../../test/helpers/dicom-fuzz';
import { DEFAULT_STRUCTURE_LIMITS, FailureReason, isPlausibleUid, walkPart10 } from './structure';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../../shared/dicom-samples');
/** Samples that are not whole Part-10 objects: refused by the walk (the others fail later, on UIDs or dcmjs). */
const NOT_WHOLE = new Set([
  'malformed/MR_truncated.dcm',
  'malformed/emri_small_jpeg_2k_lossless_too_short.dcm',
  'malformed/meta_missing_tsyntax.dcm',
  'malformed/no_meta.dcm',
  'malformed/rtplan_truncated.dcm',
  'rt-sr-seg/rtstruct_no-file-meta.dcm',
]);

function files(dir: string, base = dir): string[] {
  return readdirSync(dir).flatMap((f) => {
    const p = join(dir, f);
    if (statSync(p).isDirectory()) return files(p, base);
    return /\.(md|tsv)$/.test(f) ? [] : [p.slice(base.length + 1)];
  });
}

/** Implicit VR Little Endian element. */
function iel(tag: number, value: Buffer, undefinedLength = false): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt16LE(tag >>> 16, 0);
  h.writeUInt16LE(tag & 0xffff, 2);
  h.writeUInt32LE(undefinedLength ? 0xffffffff : value.length, 4);
  return Buffer.concat([h, value]);
}
const delim = (element: number) => iel(0xfffee000 | (element & 0xffff), Buffer.alloc(0));

describe('walkPart10 over the samples', () => {
  const all = files(SAMPLES);
  it('walks every whole sample to its end, and refuses exactly the truncated or meta-less ones', () => {
    const refused = all.filter(
      (f) => reasonOf(() => walkPart10(readFileSync(join(SAMPLES, f)))) !== 'accepted',
    );
    expect(refused.sort()).toEqual([...NOT_WHOLE].sort());
  });

  it('nests no sample deeper than 5, far below the default limit of 16', () => {
    const depths = all
      .filter((f) => !NOT_WHOLE.has(f))
      .map((f) => walkPart10(readFileSync(join(SAMPLES, f))).depth);
    expect(Math.max(...depths)).toBe(5);
  });

  it('reads the identifying UIDs as encoded, and every sample UID passes the one validator', () => {
    const s = walkPart10(readFileSync(join(SAMPLES, 'mr/MR_small_bigendian.dcm')));
    expect(s.sopInstanceUid).toBe('1.3.6.1.4.1.5962.1.1.4.1.1.20040826185059.5457');
    expect(s.transferSyntaxUid).toBe('1.2.840.10008.1.2.2');
    for (const f of all.filter((x) => !NOT_WHOLE.has(x))) {
      const w = walkPart10(readFileSync(join(SAMPLES, f)));
      for (const u of [w.sopClassUid, w.sopInstanceUid, w.studyInstanceUid, w.seriesInstanceUid])
        if (u !== undefined) expect({ f, u, ok: isPlausibleUid(u) }).toEqual({ f, u, ok: true });
    }
  });

  it('refuses every truncation of a sample, in each transfer syntax family', () => {
    for (const f of ['mr/MR_small.dcm', 'mr/MR_small_implicit.dcm', 'mr/MR_small_bigendian.dcm', 'sc/image_dfl_deflate.dcm', 'mr/MR_small_RLE.dcm']) {
      const b = readFileSync(join(SAMPLES, f));
      // (Deflated: the last 8 bytes are a gzip trailer, which no reader needs.) Element boundaries are even: a cut at one leaves a shorter whole object, which no parser can tell apart.
      for (let n = 133; n < b.length - (f.includes('dfl') ? 8 : 0); n += f.includes('dfl') ? 1 : 6) {
        const r = reasonOf(() => walkPart10(b.subarray(0, n)));
        if (r === 'accepted') throw new Error(`${f} cut at ${n} of ${b.length} was accepted`);
      }
    }
  }); // prettier-ignore

  it('tells whether the preamble is zero', () => {
    expect(walkPart10(readFileSync(join(SAMPLES, 'ct/CT_small.dcm'))).preambleIsZero).toBe(false);
    expect(walkPart10(readFileSync(join(SAMPLES, 'ct/LCTSC-CT01.dcm'))).preambleIsZero).toBe(true);
  });
});

describe('walkPart10 bounds', () => {
  it.each([false, true])('accepts depth 16 and refuses 17 (defined lengths: %s)', (defined) => {
    expect(walkPart10(part10(syntheticUids(1), [nestedContent(16, defined)])).depth).toBe(16);
    expect(reasonOf(() => walkPart10(part10(syntheticUids(1), [nestedContent(17, defined)])))).toBe(
      FailureReason.CannotUnderstand,
    );
  });

  it('counts depth through Implicit VR sequences, undefined-length UN, and unknown tags holding items', () => {
    // Implicit VR LE: (0040,A730) is SQ by the dictionary; (0009,1010) is private, so UN.
    let inner = iel(0x0040a160, text('leaf'));
    for (let i = 0; i < 20; i++) {
      const tag = i % 2 ? 0x0040a730 : 0x00091010;
      inner = Buffer.concat([iel(tag, Buffer.alloc(0), true), delim(0xe000).fill(0xff, 4), inner, delim(0xe00d), delim(0xe0dd)]);
    }
    const implicit = part10(syntheticUids(2), [inner], { transferSyntax: '1.2.840.10008.1.2' });
    expect(reasonOf(() => walkPart10(implicit))).toBe(FailureReason.CannotUnderstand);
    // A private defined-length value that is a sequence in disguise.
    let un = iel(0x0040a160, text('leaf'));
    for (let i = 0; i < 20; i++) un = iel(0x00091010, Buffer.concat([iel(0xfffee000, un)]));
    const hidden = part10(syntheticUids(3), [un], { transferSyntax: '1.2.840.10008.1.2' });
    expect(reasonOf(() => walkPart10(hidden))).toBe(FailureReason.CannotUnderstand);
    const explicitUn = part10(syntheticUids(3), [el(0x00091010, 'UN', nestedContent(30).subarray(0, 0))]);
    expect(reasonOf(() => walkPart10(explicitUn))).toBe('accepted');
  }); // prettier-ignore

  it('refuses depth 100,000 in milliseconds, and walks depth 200,000 when allowed without a stack overflow', () => {
    const bomb = part10(syntheticUids(4), [nestedContent(100_000)]);
    const t0 = performance.now();
    expect(reasonOf(() => walkPart10(bomb))).toBe(FailureReason.CannotUnderstand);
    expect(performance.now() - t0).toBeLessThan(100);
    const limits = {
      ...DEFAULT_STRUCTURE_LIMITS,
      maxDepth: 2_000_000,
      maxElements: 10_000_000,
      maxItems: 1e7,
    };
    expect(walkPart10(part10(syntheticUids(4), [nestedContent(200_000)]), limits).depth).toBe(200_000);
  });

  it('refuses more elements than maxElements', () => {
    const many = part10(
      syntheticUids(5),
      Array.from({ length: 200 }, () => el(0x00091010, 'LO', text('x1'))),
    );
    const limits = { ...DEFAULT_STRUCTURE_LIMITS, maxElements: 100 };
    expect(reasonOf(() => walkPart10(many, limits))).toBe(FailureReason.CannotUnderstand);
    expect(reasonOf(() => walkPart10(many))).toBe('accepted');
  });

  it('refuses more than 10,000 items in one sequence (Orthanc 1.10 needs over a minute for 100,000) or 100,000 in all', () => {
    const emptyItem = Buffer.concat([delim(0xe000).fill(0xff, 4), delim(0xe00d)]);
    const seq = (n: number) => Buffer.concat([el(0x0040a730, 'SQ', Buffer.alloc(0), true), ...Array<Buffer>(n).fill(emptyItem), delim(0xe0dd)]);
    expect(reasonOf(() => walkPart10(part10(syntheticUids(11), [seq(10_000)])))).toBe('accepted');
    expect(reasonOf(() => walkPart10(part10(syntheticUids(11), [seq(10_001)])))).toBe(FailureReason.CannotUnderstand);
    const spread = Array.from({ length: 11 }, (_, i) => Buffer.concat([seq(10_000).subarray(0, 0), el(0x00400000 | (0xa730 + i), 'SQ', Buffer.alloc(0), true), ...Array<Buffer>(10_000).fill(emptyItem), delim(0xe0dd)]));
    expect(reasonOf(() => walkPart10(part10(syntheticUids(11), spread)))).toBe(FailureReason.CannotUnderstand);
  }); // prettier-ignore

  it('bounds the inflated size of a deflated object (a zip bomb) and refuses corrupt deflate streams', () => {
    const ok = part10(syntheticUids(6), [], { deflate: true });
    expect(walkPart10(ok).sopInstanceUid).toBe(syntheticUids(6).sopInstanceUid);
    // 8 MiB of zeros deflate to a few KB.
    const bomb = part10(syntheticUids(6), [el(0x00091011, 'OB', Buffer.alloc(8 * 1024 ** 2))], {
      deflate: true,
    });
    expect(bomb.length).toBeLessThan(20_000);
    const limits = { ...DEFAULT_STRUCTURE_LIMITS, maxInflatedBytes: 1024 ** 2 };
    expect(reasonOf(() => walkPart10(bomb, limits))).toBe(FailureReason.CannotUnderstand);
    expect(reasonOf(() => walkPart10(bomb))).toBe('accepted');
    const corrupt = Buffer.from(ok);
    corrupt.fill(0xff, corrupt.length - 40);
    expect(reasonOf(() => walkPart10(corrupt))).toBe(FailureReason.CannotUnderstand);
  });

  it('refuses a Transfer Syntax UID it does not know with 0xC122 (a digit moved: Orthanc 1.10 went down on it)', () => {
    const moved = part10(syntheticUids(8), [], { transferSyntax: '1.2.840.1.008.1.2.1' });
    expect(reasonOf(() => walkPart10(moved))).toBe(FailureReason.TransferSyntaxNotSupported);
    const video = part10(syntheticUids(8), [], { transferSyntax: '1.2.840.10008.1.2.4.102' });
    expect(reasonOf(() => walkPart10(video))).toBe('accepted');
  });

  it('refuses lengths past the end, odd lengths, VR-inconsistent lengths, invalid VRs and stray delimiters', () => {
    const base = syntheticUids(7);
    const cases: Record<string, Buffer> = {
      huge: Buffer.concat([part10(base), el(0x00091010, 'OB', Buffer.alloc(0)).fill(0xff, 8, 12)]),
      odd: part10(base, [el(0x00081030, 'LO', Buffer.from('abc'))]),
      ul6: part10(base, [el(0x00280101, 'UL', Buffer.alloc(6))]),
      fd4: part10(base, [el(0x00181050, 'FD', Buffer.alloc(4))]),
      at2: part10(base, [el(0x00209165, 'AT', Buffer.alloc(2))]),
      vr: part10(base, [el(0x00081030, 'ZZ', text('ab'))]),
      itemDelimAtTop: part10(base, [delim(0xe00d)]),
      seqDelimAtTop: part10(base, [delim(0xe0dd)]),
      undefinedLo: part10(base, [el(0x00081030, 'UT', Buffer.alloc(0), true)]),
      trailingByte: Buffer.concat([part10(base), Buffer.from([0])]),
    };
    for (const [what, bytes] of Object.entries(cases))
      expect({ what, r: reasonOf(() => walkPart10(bytes)) }).toEqual({
        what,
        r: FailureReason.CannotUnderstand,
      });
  });

  it('never throws anything but DicomParseError on fuzzed samples (seeded)', () => {
    const samples = ['mr/MR_small.dcm', 'rt-sr-seg/test-SR_comprehensive.dcm', 'mr/MR_small_implicit.dcm', 'us/US-RGB-8-epicard_bigendian.dcm', 'sc/image_dfl_deflate.dcm'].map((f) => readFileSync(join(SAMPLES, f)));
    fc.assert(
      fc.property(fc.constantFrom(...samples).chain(mutantOf), (m) => {
        const r = reasonOf(() => walkPart10(m.bytes));
        if (m.kind === 'deep-nesting') expect(r === FailureReason.CannotUnderstand ? r : `${m.bytes.length} bytes accepted`).toBe(FailureReason.CannotUnderstand);
        if (m.kind === 'truncate' && m.bytes.length % 2) expect(r).not.toBe('accepted');
      }),
      { seed: 8, numRuns: 3000 },
    );
  }); // prettier-ignore
});
