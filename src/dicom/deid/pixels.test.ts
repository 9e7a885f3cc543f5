import { el, part10, requiredUids } from '../../../test/helpers/deid-synthetic';
import { findElement, rawString, readPart10 } from './codec';
import { deidentify } from './deidentify';
import {
  BUILT_IN_PIXEL_RULES,
  blackoutFrame,
  encapsulate,
  matchPixelRules,
  parsePixelRules,
  type PixelLayout,
  pixelLayout,
  splitFrames,
  withCleanedPixels,
} from './pixels';
import { BASIC_PROFILE } from './profile';

const us = (v: number) => {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(v);
  return b;
};
const layout = (p: Partial<PixelLayout>): PixelLayout => ({
  rows: 4,
  columns: 5,
  samplesPerPixel: 1,
  bitsAllocated: 8,
  bitsStored: 8,
  signed: false,
  photometric: 'MONOCHROME2',
  planarConfiguration: 0,
  frames: 1,
  ...p,
});
const keys = { uidSecret: Buffer.from('pixels'), patientName: 'P^1', patientId: 'P1', dateOffsetDays: 0 };

describe('pixel rules (Clean Pixel Data)', () => {
  it('vendors the documented rule subset, each with a source and at least one region', () => {
    expect(BUILT_IN_PIXEL_RULES.length).toBe(28);
    for (const r of BUILT_IN_PIXEL_RULES) {
      expect(['ctp', 'aperture']).toContain(r.source);
      expect(r.regions.length).toBeGreaterThan(0);
    }
  });

  it('matches on every condition: text case-insensitively, binary Rows/Columns as decimals', () => {
    const ds = [
      el(0x00080060, 'CS', 'US'),
      el(0x00080070, 'LO', 'ATL'),
      el(0x00081090, 'LO', 'HDI5000/DVS'),
      { tag: 0x00280010, vr: 'US', value: us(480) },
      { tag: 0x00280011, vr: 'US', value: us(640) },
    ];
    expect(matchPixelRules(ds, BUILT_IN_PIXEL_RULES).map((r) => r.name)).toEqual(['ATL HDI5000 US 480x640']);
    // One condition off (476 rows is CTP's HDI 5000 rule, which also wants "HDI 5000" with a space): no match.
    ds[3] = { tag: 0x00280010, vr: 'US', value: us(476) };
    expect(matchPixelRules(ds, BUILT_IN_PIXEL_RULES)).toEqual([]);
    // A missing attribute never satisfies a condition.
    expect(matchPixelRules([el(0x00080060, 'CS', 'US')], BUILT_IN_PIXEL_RULES)).toEqual([]);
  });

  it('refuses a malformed site rule file with the rule and the problem named', () => {
    expect(() => parsePixelRules({})).toThrow(/rules/);
    expect(() =>
      parsePixelRules({ rules: [{ name: 'x', when: [['0008', 'equals', 'US']], regions: [[0, 0, 1, 1]] }] }),
    ).toThrow(/rule 0 has a condition/);
    expect(() =>
      parsePixelRules({
        rules: [{ name: 'x', when: [['00080060', 'equals', 'US']], regions: [[0, 0, -1, 1]] }],
      }),
    ).toThrow(/rule 0 has a region/);
    expect(
      parsePixelRules({
        rules: [{ name: 'x', when: [['00080060', 'equals', 'US']], regions: [[0, 0, 1, 1]] }],
      })[0].source,
    ).toBe('site');
  });
});

describe('blacking out regions', () => {
  it('zeroes an interleaved RGB region, clipped to the image, and leaves every other sample alone', () => {
    const l = layout({ samplesPerPixel: 3, photometric: 'RGB' });
    const f = new Uint8Array(4 * 5 * 3).fill(200);
    blackoutFrame(f, l, [[3, 2, 10, 10]]);
    for (let row = 0; row < 4; row++)
      for (let col = 0; col < 5; col++)
        for (let s = 0; s < 3; s++) expect(f[(row * 5 + col) * 3 + s]).toBe(row >= 2 && col >= 3 ? 0 : 200);
  });

  it('writes black as the photometric interpretation means it: MONOCHROME1 max, signed minimum, YBR neutral, planes', () => {
    const m1 = layout({ bitsAllocated: 16, bitsStored: 12, photometric: 'MONOCHROME1' });
    const a = new Uint8Array(40);
    blackoutFrame(a, m1, [[0, 0, 1, 1]]);
    expect(new DataView(a.buffer).getUint16(0, true)).toBe(4095);
    expect(a[2]).toBe(0);
    const signed = layout({ bitsAllocated: 16, bitsStored: 16, signed: true });
    const b = new Uint8Array(40);
    blackoutFrame(b, signed, [[1, 0, 1, 1]]);
    expect(new DataView(b.buffer).getInt16(2, true)).toBe(-32768);
    const ybr = layout({ samplesPerPixel: 3, photometric: 'YBR_FULL', planarConfiguration: 1 });
    const c = new Uint8Array(60).fill(7);
    blackoutFrame(c, ybr, [[0, 0, 1, 1]]);
    expect([c[0], c[20], c[40], c[1]]).toEqual([0, 128, 128, 7]);
  });
});

describe('encapsulated frames', () => {
  it('splits by the Basic Offset Table (a frame in two fragments) and round-trips encapsulate()', () => {
    const frames = [Buffer.from('abcd'), Buffer.from('efghij'), Buffer.from('kl')];
    const enc = encapsulate(frames);
    expect(splitFrames(enc, 3)).toEqual(frames);
    // Two fragments for frame 1: rebuild by hand with an offset table [0, 8+2+8+2].
    const item = (b: Buffer) => {
      const h = Buffer.alloc(8);
      h.writeUInt16LE(0xfffe, 0);
      h.writeUInt16LE(0xe000, 2);
      h.writeUInt32LE(b.length, 4);
      return Buffer.concat([h, b]);
    };
    const bot = Buffer.alloc(8);
    bot.writeUInt32LE(0, 0);
    bot.writeUInt32LE(20, 4);
    const end = Buffer.from([0xfe, 0xff, 0xdd, 0xe0, 0, 0, 0, 0]);
    const two = Buffer.concat([
      item(bot),
      item(Buffer.from('ab')),
      item(Buffer.from('cd')),
      item(Buffer.from('ef')),
      end,
    ]);
    expect(splitFrames(two, 2)).toEqual([Buffer.from('abcd'), Buffer.from('ef')]);
    // Without an offset table, three fragments for two frames cannot be assigned.
    const ambiguous = Buffer.concat([
      item(Buffer.alloc(0)),
      item(Buffer.from('ab')),
      item(Buffer.from('cd')),
      item(Buffer.from('ef')),
      end,
    ]);
    expect(splitFrames(ambiguous, 2)).toBeUndefined();
    expect(splitFrames(ambiguous, 1)).toEqual([Buffer.from('abcdef')]);
  });
});

describe('the cleaned object', () => {
  const source = () =>
    part10([
      ...requiredUids(),
      el(0x00080060, 'CS', 'US'),
      el(0x00100010, 'PN', 'Doe^Jane'),
      el(0x00280002, 'US', us(1)),
      el(0x00280004, 'CS', 'MONOCHROME2'),
      el(0x00280010, 'US', us(4)),
      el(0x00280011, 'US', us(5)),
      el(0x00280100, 'US', us(8)),
      el(0x00280101, 'US', us(8)),
      el(0x00280103, 'US', us(0)),
      el(0x00280301, 'CS', 'YES'),
      { tag: 0x7fe00010, vr: 'OB', value: Buffer.alloc(20, 9) },
    ]);

  it('is withheld before cleaning; after, it says Burned In Annotation NO and records Clean Pixel Data (113101)', () => {
    expect(deidentify(source(), BASIC_PROFILE, keys)).toEqual({ withheld: 'burned-in-annotation' });
    const parsed = readPart10(source());
    const l = pixelLayout(parsed.dataset);
    if (typeof l === 'string') throw new Error(l);
    const native = Buffer.alloc(20, 9);
    blackoutFrame(native, l, [[0, 0, 5, 1]]);
    const cleaned = withCleanedPixels(
      parsed.meta,
      parsed.dataset,
      { native },
      '1.2.840.10008.1.2.1',
      'MONOCHROME2',
      0,
    );
    const out = deidentify(cleaned, BASIC_PROFILE, keys, { pixelsCleaned: true });
    if ('withheld' in out) throw new Error(out.withheld);
    const ds = readPart10(out.bytes).dataset;
    expect(rawString(findElement(ds, 0x00280301)!)).toBe('NO');
    const px = findElement(ds, 0x7fe00010)!.value!;
    expect([...px.subarray(0, 5)]).toEqual([0, 0, 0, 0, 0]);
    expect([...px.subarray(5)].every((v) => v === 9)).toBe(true);
    const codes = findElement(ds, 0x00120064)!.items!.map((it) => rawString(findElement(it, 0x00080100)!));
    expect(codes).toEqual(['113100', '113101']);
  });

  it('refuses layouts it cannot black out (1-bit, 32-bit, two samples)', () => {
    for (const [tag, v] of [
      [0x00280100, 1],
      [0x00280100, 32],
      [0x00280002, 2],
    ] as const) {
      const ds = readPart10(source()).dataset.map((e) => (e.tag === tag ? { ...e, value: us(v) } : e));
      expect(pixelLayout(ds)).toBe('pixel-layout-unsupported');
    }
  });
});
