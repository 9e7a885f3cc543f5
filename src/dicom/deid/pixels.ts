/**
 * Clean Pixel Data (PS3.15 E.3.1), the pure half: which regions of an object carry burned-in text (rules as data,
 * `pixel-rules.json`, plus a site's own), how its frames are laid out, blacking those regions out in native
 * samples, and writing the object back with its new pixel data. Decoding and re-encoding compressed frames needs
 * the codec threads and lives in src/cohorts/clean-pixels.ts.
 */
import type { PixelDescription } from '../render';
import builtIn from './pixel-rules.json';
import { type Dataset, type Element, PIXEL_DATA, findElement, rawString, writePart10 } from './codec';

/** One rule: every condition holds on a top-level attribute → every region is blacked out. */
export interface PixelRule {
  name: string;
  /** Where it comes from (`ctp`, `aperture`, or a site's own label). */
  source: string;
  note?: string;
  /** [tag as 8 hex digits, test, value]. */
  when: Array<[string, 'equals' | 'containsIgnoreCase', string]>;
  /** [x, y, width, height] in pixels from the top-left corner. */
  regions: Array<[number, number, number, number]>;
}

/** Reason codes of an object whose pixels cannot be cleaned (no PHI). */
export type PixelRefusal =
  'burned-in-no-rule' | 'pixel-layout-unsupported' | 'pixel-fragments-ambiguous' | 'pixel-undecodable';

/** Checks a rule list read from JSON; throws an Error naming the first problem (the file is configuration). */
export function parsePixelRules(json: unknown): PixelRule[] {
  const list = (json as { rules?: unknown })?.rules;
  if (!Array.isArray(list)) throw new Error('pixel rules: expected an object with a "rules" array');
  return list.map((r: unknown, i) => {
    const rule = r as Partial<PixelRule>;
    const bad = (what: string) => new Error(`pixel rules: rule ${i} ${what}`);
    if (typeof rule.name !== 'string' || !rule.name) throw bad('has no name');
    if (!Array.isArray(rule.when) || rule.when.length === 0) throw bad('has no condition');
    for (const c of rule.when) {
      if (
        !Array.isArray(c) ||
        c.length !== 3 ||
        !/^[0-9A-Fa-f]{8}$/.test(String(c[0])) ||
        (c[1] !== 'equals' && c[1] !== 'containsIgnoreCase') ||
        typeof c[2] !== 'string'
      )
        throw bad('has a condition that is not [tag, "equals" | "containsIgnoreCase", value]');
    }
    if (!Array.isArray(rule.regions) || rule.regions.length === 0) throw bad('has no region');
    for (const g of rule.regions) {
      if (!Array.isArray(g) || g.length !== 4 || !g.every((n) => Number.isInteger(n) && n >= 0))
        throw bad('has a region that is not [x, y, width, height] of whole non-negative numbers');
    }
    return {
      name: rule.name,
      source: typeof rule.source === 'string' ? rule.source : 'site',
      note: rule.note,
      when: rule.when,
      regions: rule.regions,
    };
  });
}

/** The vendored rules (CTP's burned-in annotation library, a documented subset, and Aperture's own). */
export const BUILT_IN_PIXEL_RULES: readonly PixelRule[] = parsePixelRules(builtIn);

const NUMERIC: Record<string, (b: Buffer, o: number) => number> = {
  US: (b, o) => b.readUInt16LE(o),
  SS: (b, o) => b.readInt16LE(o),
  UL: (b, o) => b.readUInt32LE(o),
  SL: (b, o) => b.readInt32LE(o),
};
const WIDTH: Record<string, number> = { US: 2, SS: 2, UL: 4, SL: 4 };

/** An attribute's value as the rules compare it: text trimmed, binary integers as decimals. */
function valueText(e: Element | undefined): string | undefined {
  if (!e?.value) return undefined;
  const read = NUMERIC[e.vr];
  if (read) {
    const w = WIDTH[e.vr];
    const out: string[] = [];
    for (let o = 0; o + w <= e.value.length; o += w) out.push(String(read(e.value, o)));
    return out.join('\\');
  }
  return rawString(e).trim();
}

/** Every rule whose conditions all hold on the data set's top level. */
export function matchPixelRules(ds: Dataset, rules: readonly PixelRule[]): PixelRule[] {
  return rules.filter((rule) =>
    rule.when.every(([tag, test, want]) => {
      const v = valueText(findElement(ds, parseInt(tag, 16)));
      if (v === undefined) return false;
      return test === 'equals' ? v === want : v.toLowerCase().includes(want.toLowerCase());
    }),
  );
}

/** What decoding, blacking out and re-encoding need of the Image Pixel module. */
export interface PixelLayout extends Omit<PixelDescription, 'highBit' | 'numberOfFrames'> {
  frames: number;
}

/** The object's pixel layout, or why it is outside what the cleaner handles. */
export function pixelLayout(ds: Dataset): PixelLayout | PixelRefusal {
  const num = (tag: number) => {
    const v = valueText(findElement(ds, tag));
    return v === undefined || v === '' ? undefined : Number(v.split('\\')[0]);
  };
  const layout: PixelLayout = {
    rows: num(0x00280010) ?? 0,
    columns: num(0x00280011) ?? 0,
    samplesPerPixel: num(0x00280002) ?? 1,
    bitsAllocated: num(0x00280100) ?? 0,
    bitsStored: num(0x00280101) ?? num(0x00280100) ?? 0,
    signed: num(0x00280103) === 1,
    photometric: valueText(findElement(ds, 0x00280004)) ?? '',
    planarConfiguration: num(0x00280006) ?? 0,
    frames: num(0x00280008) ?? 1,
  };
  if (
    !(layout.rows > 0 && layout.columns > 0 && layout.frames >= 1) ||
    (layout.bitsAllocated !== 8 && layout.bitsAllocated !== 16) ||
    (layout.samplesPerPixel !== 1 && layout.samplesPerPixel !== 3) ||
    !Number.isInteger(layout.frames)
  )
    return 'pixel-layout-unsupported';
  return layout;
}

/** Bytes of one native frame. */
export function frameBytes(l: PixelLayout): number {
  return l.rows * l.columns * l.samplesPerPixel * (l.bitsAllocated / 8);
}

/** The items of encapsulated pixel data (PS3.5 A.4): the Basic Offset Table first, then the fragments. */
function encapsulatedItems(data: Buffer): Buffer[] {
  const items: Buffer[] = [];
  let o = 0;
  while (o + 8 <= data.length) {
    const group = data.readUInt16LE(o);
    const element = data.readUInt16LE(o + 2);
    const len = data.readUInt32LE(o + 4);
    if (group !== 0xfffe) break;
    if (element === 0xe0dd) break; // sequence delimiter
    if (element !== 0xe000 || o + 8 + len > data.length) break;
    items.push(data.subarray(o + 8, o + 8 + len));
    o += 8 + len;
  }
  return items;
}

/**
 * The compressed frames of encapsulated pixel data: one frame takes every fragment; otherwise the Basic Offset
 * Table says where each frame starts, or there is one fragment per frame. Undefined when neither tells.
 */
export function splitFrames(encapsulated: Buffer, frames: number): Buffer[] | undefined {
  const [bot, ...fragments] = encapsulatedItems(encapsulated);
  if (bot === undefined || fragments.length === 0) return undefined;
  if (frames === 1) return [Buffer.concat(fragments)];
  if (bot.length === frames * 4) {
    // Offsets are from the first byte of the first fragment's item header.
    const starts: number[] = [];
    let pos = 0;
    const frameOf = new Map<number, number>();
    for (let i = 0; i < frames; i++) starts.push(bot.readUInt32LE(i * 4));
    for (let f = 0; f < fragments.length; f++) {
      frameOf.set(pos, f);
      pos += 8 + fragments[f].length;
    }
    if (!starts.every((s) => frameOf.has(s))) return undefined;
    const firsts = starts.map((s) => frameOf.get(s)!);
    return firsts.map((first, i) =>
      Buffer.concat(fragments.slice(first, i + 1 < firsts.length ? firsts[i + 1] : fragments.length)),
    );
  }
  if (fragments.length === frames) return fragments;
  return undefined;
}

/** Encapsulated pixel data of one fragment per frame, with a Basic Offset Table (PS3.5 A.4). */
export function encapsulate(frames: readonly Uint8Array[]): Buffer {
  const parts: Buffer[] = [];
  const bot = Buffer.alloc(frames.length > 1 ? frames.length * 4 : 0);
  const item = (len: number) => {
    const h = Buffer.alloc(8);
    h.writeUInt16LE(0xfffe, 0);
    h.writeUInt16LE(0xe000, 2);
    h.writeUInt32LE(len, 4);
    return h;
  };
  parts.push(item(bot.length), bot);
  let offset = 0;
  frames.forEach((f, i) => {
    const padded = f.length & 1 ? Buffer.concat([f, Buffer.alloc(1)]) : Buffer.from(f);
    if (bot.length) bot.writeUInt32LE(offset, i * 4);
    parts.push(item(padded.length), padded);
    offset += 8 + padded.length;
  });
  const end = Buffer.alloc(8);
  end.writeUInt16LE(0xfffe, 0);
  end.writeUInt16LE(0xe0dd, 2);
  parts.push(end);
  return Buffer.concat(parts);
}

/**
 * The sample values that show black: 0, except MONOCHROME1 (its maximum), signed monochrome (its minimum) and
 * YBR_FULL (no luminance, neutral chrominance). PALETTE COLOR gets index 0: the object's own lookup table says
 * what colour that is, but whatever was written there is gone.
 */
function blackSamples(l: PixelLayout): number[] {
  const max = 2 ** l.bitsStored - 1;
  const mid = 2 ** (l.bitsStored - 1);
  if (l.samplesPerPixel === 3) return l.photometric.startsWith('YBR_FULL') ? [0, mid, mid] : [0, 0, 0];
  if (l.photometric === 'MONOCHROME1') return [l.signed ? mid - 1 : max];
  if (l.signed) return [-mid];
  return [0];
}

/**
 * Blacks out the regions in one native frame, in place: little-endian samples of Bits Allocated, pixel-interleaved
 * (planar configuration 0) or colour-by-plane (1). Regions are clipped to the image.
 */
export function blackoutFrame(
  frame: Uint8Array,
  l: PixelLayout,
  regions: ReadonlyArray<readonly [number, number, number, number]>,
): void {
  const bytes = l.bitsAllocated / 8;
  const spp = l.samplesPerPixel;
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const black = blackSamples(l);
  const mask = l.bitsAllocated === 16 ? 0xffff : 0xff;
  const write = (at: number, v: number) => {
    if (bytes === 1) frame[at] = v & mask;
    else view.setUint16(at, v & mask, true);
  };
  const planar = spp === 3 && l.planarConfiguration === 1;
  const plane = l.rows * l.columns * bytes;
  for (const [x, y, w, h] of regions) {
    const x1 = Math.min(l.columns, x + w);
    const y1 = Math.min(l.rows, y + h);
    for (let row = y; row < y1; row++) {
      for (let col = x; col < x1; col++) {
        const px = row * l.columns + col;
        for (let s = 0; s < spp; s++) {
          write(planar ? s * plane + px * bytes : (px * spp + s) * bytes, black[s]);
        }
      }
    }
  }
}

/** Sets (or adds) a string attribute of the top level, padded to even length. */
function setString(ds: Dataset, tag: number, vr: string, value: string): void {
  let b = Buffer.from(value, 'latin1');
  if (b.length & 1) b = Buffer.concat([b, Buffer.from(' ')]);
  const e: Element = { tag, vr, value: b };
  const i = ds.findIndex((x) => x.tag === tag);
  if (i >= 0) ds[i] = e;
  else ds.push(e);
}

function setUs(ds: Dataset, tag: number, value: number): void {
  const b = Buffer.alloc(2);
  b.writeUInt16LE(value);
  const i = ds.findIndex((x) => x.tag === tag);
  const e: Element = { tag, vr: 'US', value: b };
  if (i >= 0) ds[i] = e;
  else ds.push(e);
}

/**
 * The object again with cleaned pixel data: native (written Explicit VR Little Endian) or encapsulated frames in
 * `transferSyntaxUid`, the photometric interpretation they are in, and Burned In Annotation (0028,0301) NO —
 * the caller calls this only once every region of every matching rule was blacked out in every frame.
 */
export function withCleanedPixels(
  meta: Dataset,
  dataset: Dataset,
  pixels: { native: Buffer } | { frames: readonly Uint8Array[] },
  transferSyntaxUid: string,
  photometric: string,
  planarConfiguration: number,
): Buffer {
  const ds: Dataset = dataset.map((e) => e);
  const i = ds.findIndex((e) => e.tag === PIXEL_DATA);
  const pixel: Element =
    'native' in pixels
      ? { tag: PIXEL_DATA, vr: ds[i]?.vr === 'OW' ? 'OW' : 'OB', value: pixels.native }
      : { tag: PIXEL_DATA, vr: 'OB', encapsulated: encapsulate(pixels.frames) };
  if (i >= 0) ds[i] = pixel;
  else ds.push(pixel);
  setString(ds, 0x00280004, 'CS', photometric);
  if (ds.some((e) => e.tag === 0x00280006) || photometric === 'RGB' || photometric.startsWith('YBR'))
    setUs(ds, 0x00280006, planarConfiguration);
  setString(ds, 0x00280301, 'CS', 'NO');
  ds.sort((a, b) => a.tag - b.tag);
  const m = meta.filter((e) => e.tag !== 0x00020010 && e.tag !== 0x00020000);
  let ts = Buffer.from(transferSyntaxUid, 'latin1');
  if (ts.length & 1) ts = Buffer.concat([ts, Buffer.alloc(1)]);
  m.push({ tag: 0x00020010, vr: 'UI', value: ts });
  m.sort((a, b) => a.tag - b.tag);
  return writePart10(m, ds);
}
