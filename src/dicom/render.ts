/**
 * Rendering of DICOM frames to consumer images (PS3.18 §8.3.5 rendered resources and thumbnails), following the
 * grayscale and colour pipelines of PS3.4 Annex N: stored values → Modality LUT (rescale) → VOI LUT (window) →
 * presentation (MONOCHROME1 inversion) → 8-bit image, or palette / YBR → RGB for colour.
 *
 * Pure module: no network, no database. The caller fetches the frame (raw native bytes, or a compressed frame
 * decoded to native bytes by src/codecs) and hands it here.
 */
import type sharpModule from 'sharp';
import type { Sharp } from 'sharp';
import { BadRequestError, UnrecoverableInputError } from '../errors';
import { nativeFrameSpan } from './bulk';
import { type DicomJson, type DicomJsonElement, getInt, getString } from './json';
import { Tag } from './tags';
import { attachIccToPng } from './icc';
import { type OutputColourSpace, outputProfilePath } from './icc-profiles';

/** How the stored pixels of an instance are laid out (Image Pixel module, PS3.3 C.7.6.3). */
export interface PixelDescription {
  rows: number;
  columns: number;
  samplesPerPixel: number;
  bitsAllocated: number;
  bitsStored: number;
  highBit: number;
  /** True for two's complement stored values (PixelRepresentation 1). */
  signed: boolean;
  photometric: string;
  /** 0 = interleaved (R1 G1 B1 R2...), 1 = by plane (R1 R2 ... G1 G2 ... B1 B2 ...). */
  planarConfiguration: number;
  numberOfFrames: number;
}

/** VOI LUT functions of PS3.3 C.11.2.1.3, as the `window` query parameter names them (PS3.18 §8.3.5.1.4). */
export type VoiFunction = 'linear' | 'linear-exact' | 'sigmoid';

/** A window to apply to modality values. */
export interface WindowSpec {
  center: number;
  width: number;
  fn: VoiFunction;
}

/** What turns stored values of one frame into displayed values, as the data set says. */
export interface FramePresentation {
  rescaleSlope: number;
  rescaleIntercept: number;
  /** Windows of the data set, first one preferred; empty when it has none. */
  windows: WindowSpec[];
}

/** A frame as decoded, before any presentation. */
export type StoredFrame =
  /** Stored values (masked to BitsStored, sign-extended when signed), one per pixel, row by row. */
  | { kind: 'gray'; rows: number; columns: number; values: ArrayLike<number> }
  /** 8-bit RGB, interleaved. */
  | { kind: 'rgb'; rows: number; columns: number; data: Uint8Array }
  /** Palette indices, one per pixel. */
  | { kind: 'palette'; rows: number; columns: number; indices: ArrayLike<number> };

/** An 8-bit image ready to encode: 1 channel (gray) or 3 (RGB), interleaved. */
export interface DisplayImage {
  width: number;
  height: number;
  channels: 1 | 3;
  data: Uint8Array;
}

/** One colour channel of a Palette Color Lookup Table (PS3.3 C.7.6.3.1.5), values scaled to 8 bits. */
export interface PaletteChannel {
  firstMapped: number;
  table: Uint8Array;
}
/** A full palette: red, green and blue channels. */
export interface PaletteLut {
  red: PaletteChannel;
  green: PaletteChannel;
  blue: PaletteChannel;
}

/** The largest Rows/Columns DICOM can express; anything beyond is a broken header. */
const MAX_DIMENSION = 65535;

function firstNumber(el: DicomJsonElement | undefined): number | undefined {
  const v = el?.Value?.[0];
  const n = typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN;
  return Number.isFinite(n) ? n : undefined;
}

function numbers(el: DicomJsonElement | undefined): number[] {
  return (el?.Value ?? [])
    .map((v) => (typeof v === 'number' ? v : typeof v === 'string' ? Number(v) : NaN))
    .filter((n) => Number.isFinite(n));
}

/**
 * Reads the Image Pixel module of an instance and checks it describes something renderable.
 * Throws UnrecoverableInputError (no PHI in the message) when it cannot be rendered at all.
 */
export function describePixels(ds: DicomJson): PixelDescription {
  if (!ds[Tag.PixelData]) throw new UnrecoverableInputError('the instance has no pixel data to render');
  const rows = getInt(ds, Tag.Rows);
  const columns = getInt(ds, Tag.Columns);
  const bitsAllocated = getInt(ds, Tag.BitsAllocated);
  if (!rows || !columns || !bitsAllocated || rows > MAX_DIMENSION || columns > MAX_DIMENSION) {
    throw new UnrecoverableInputError('the instance declares no usable image size');
  }
  if (![1, 8, 16, 32].includes(bitsAllocated)) {
    throw new UnrecoverableInputError(`cannot render Bits Allocated ${bitsAllocated}`);
  }
  const samplesPerPixel = getInt(ds, Tag.SamplesPerPixel) ?? 1;
  if (samplesPerPixel !== 1 && samplesPerPixel !== 3) {
    throw new UnrecoverableInputError(`cannot render Samples per Pixel ${samplesPerPixel}`);
  }
  const photometric = (
    getString(ds, Tag.PhotometricInterpretation) ?? (samplesPerPixel === 3 ? 'RGB' : 'MONOCHROME2')
  )
    .trim()
    .toUpperCase();
  let bitsStored = getInt(ds, Tag.BitsStored) ?? bitsAllocated;
  if (bitsStored < 1 || bitsStored > bitsAllocated) bitsStored = bitsAllocated;
  let highBit = getInt(ds, Tag.HighBit) ?? bitsStored - 1;
  if (highBit < bitsStored - 1 || highBit >= bitsAllocated) highBit = bitsStored - 1;
  const frames = getInt(ds, Tag.NumberOfFrames);
  return {
    rows,
    columns,
    samplesPerPixel,
    bitsAllocated,
    bitsStored,
    highBit,
    signed: getInt(ds, Tag.PixelRepresentation) === 1,
    photometric,
    planarConfiguration: getInt(ds, Tag.PlanarConfiguration) === 1 ? 1 : 0,
    numberOfFrames: frames && frames > 0 ? frames : 1,
  };
}

/** Maps a data set's VOI LUT Function (0028,1056) to the query parameter's keyword. */
function voiFunctionOf(value: string | undefined): VoiFunction {
  switch ((value ?? '').trim().toUpperCase()) {
    case 'LINEAR_EXACT':
      return 'linear-exact';
    case 'SIGMOID':
      return 'sigmoid';
    default:
      return 'linear';
  }
}

function windowsOf(ds: DicomJson): WindowSpec[] {
  const centers = numbers(ds[Tag.WindowCenter]);
  const widths = numbers(ds[Tag.WindowWidth]);
  const fn = voiFunctionOf(getString(ds, Tag.VOILUTFunction));
  const out: WindowSpec[] = [];
  for (let i = 0; i < Math.min(centers.length, widths.length); i++) {
    if (widths[i] > 0) out.push({ center: centers[i], width: widths[i], fn });
  }
  return out;
}

function firstItem(ds: DicomJson | undefined, tag: string): DicomJson | undefined {
  const v = ds?.[tag]?.Value?.[0];
  return v && typeof v === 'object' ? (v as DicomJson) : undefined;
}

/**
 * Rescale and window for one frame (1-based). Enhanced multi-frame objects keep them in the Per-frame or Shared
 * Functional Groups (Pixel Value Transformation, Frame VOI LUT); classic objects at the top level.
 */
export function framePresentation(ds: DicomJson, frameNumber = 1): FramePresentation {
  const perFrameItems = ds[Tag.PerFrameFunctionalGroups]?.Value as DicomJson[] | undefined;
  const perFrame = perFrameItems?.[frameNumber - 1];
  const shared = firstItem(ds, Tag.SharedFunctionalGroups);
  const sources = [perFrame, shared].filter((s): s is DicomJson => !!s);

  let slope: number | undefined;
  let intercept: number | undefined;
  let windows: WindowSpec[] = [];
  for (const group of sources) {
    const pvt = firstItem(group, Tag.PixelValueTransformationSequence);
    if (pvt && slope === undefined) {
      slope = firstNumber(pvt[Tag.RescaleSlope]);
      intercept = firstNumber(pvt[Tag.RescaleIntercept]);
    }
    const voi = firstItem(group, Tag.FrameVOILUTSequence);
    if (voi && windows.length === 0) windows = windowsOf(voi);
  }
  if (slope === undefined) {
    slope = firstNumber(ds[Tag.RescaleSlope]);
    intercept = firstNumber(ds[Tag.RescaleIntercept]);
  }
  if (windows.length === 0) windows = windowsOf(ds);
  return {
    rescaleSlope: slope !== undefined && slope !== 0 ? slope : 1,
    rescaleIntercept: intercept ?? 0,
    windows,
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Decoding

/** Copies bytes into a fresh, aligned buffer so typed arrays can view them whatever the source offset. */
function aligned(bytes: Uint8Array, offset: number, length: number): ArrayBuffer {
  const out = new ArrayBuffer(length);
  new Uint8Array(out).set(bytes.subarray(offset, offset + length));
  return out;
}

/**
 * Extracts stored values from native sample words: shifts out bits below the low bit, masks to Bits Stored and
 * sign-extends when the data are signed (PS3.5 §8.1.1), so a 12-bit signed value in 16 bits reads correctly.
 */
function maskStored(words: ArrayLike<number>, count: number, px: PixelDescription): ArrayLike<number> {
  const shift = px.highBit + 1 - px.bitsStored;
  if (px.bitsStored >= 32) {
    const out = new Float64Array(count);
    for (let i = 0; i < count; i++) out[i] = px.signed ? words[i] | 0 : words[i] >>> 0;
    return out;
  }
  // Unsigned words that use every bit need no masking: the typed array already holds the stored values.
  if (!px.signed && shift === 0 && px.bitsStored === px.bitsAllocated) return words;
  // 16 bits or fewer fit a 16-bit array: a third of the memory traffic of 32-bit values on large frames.
  const small = px.bitsStored <= 16;
  const mask = 2 ** px.bitsStored - 1;
  if (!px.signed) {
    const out = small ? new Uint16Array(count) : new Int32Array(count);
    for (let i = 0; i < count; i++) out[i] = (words[i] >>> shift) & mask;
    return out;
  }
  // Sign extension by shifting the sign bit into bit 31 and back (arithmetic shift).
  const out = small ? new Int16Array(count) : new Int32Array(count);
  const up = 32 - px.bitsStored;
  for (let i = 0; i < count; i++) out[i] = (((words[i] >>> shift) & mask) << up) >> up;
  return out;
}

/** Reads `count` little-endian words of Bits Allocated from native bytes. */
function nativeWords(
  bytes: Uint8Array,
  offset: number,
  count: number,
  bitsAllocated: number,
): ArrayLike<number> {
  switch (bitsAllocated) {
    case 1: {
      // Bits are packed least significant bit first (PS3.5 §8.1.1, Bits Allocated 1).
      const out = new Uint8Array(count);
      for (let i = 0; i < count; i++) out[i] = (bytes[offset + (i >> 3)] >> (i & 7)) & 1;
      return out;
    }
    case 8:
      return bytes.subarray(offset, offset + count);
    // Little-endian hosts only (x86, arm64): an aligned view is read in place, without a copy.
    case 16:
      return (bytes.byteOffset + offset) % 2 === 0
        ? new Uint16Array(bytes.buffer, bytes.byteOffset + offset, count)
        : new Uint16Array(aligned(bytes, offset, count * 2));
    case 32:
      return (bytes.byteOffset + offset) % 4 === 0
        ? new Uint32Array(bytes.buffer, bytes.byteOffset + offset, count)
        : new Uint32Array(aligned(bytes, offset, count * 4));
    default:
      throw new UnrecoverableInputError(`cannot render Bits Allocated ${bitsAllocated}`);
  }
}

const clamp8 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/** YCbCr (full range, PS3.3 C.7.6.3.1.2) to RGB for one pixel, written at `o`. */
function ybrToRgb(y: number, cb: number, cr: number, out: Uint8Array, o: number): void {
  out[o] = clamp8(y + 1.402 * (cr - 128));
  out[o + 1] = clamp8(y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128));
  out[o + 2] = clamp8(y + 1.772 * (cb - 128));
}

/** Colour samples to 8-bit interleaved RGB, handling planar configuration, YBR_FULL and YBR_FULL_422. */
function colourToRgb(bytes: Uint8Array, px: PixelDescription): Uint8Array {
  const n = px.rows * px.columns;
  const out = new Uint8Array(n * 3);
  const photometric = px.photometric;
  if (photometric === 'YBR_FULL_422') {
    // Native YBR_FULL_422: each pair of pixels is Y1 Y2 Cb Cr (PS3.3 C.7.6.3.1.2); 8 bits only.
    if (px.bitsAllocated !== 8) throw new UnrecoverableInputError('cannot render YBR_FULL_422 above 8 bits');
    for (let p = 0, i = 0; p < n; p += 2, i += 4) {
      const cb = bytes[i + 2];
      const cr = bytes[i + 3];
      ybrToRgb(bytes[i], cb, cr, out, p * 3);
      if (p + 1 < n) ybrToRgb(bytes[i + 1], cb, cr, out, (p + 1) * 3);
    }
    return out;
  }
  const words = nativeWords(bytes, 0, n * 3, px.bitsAllocated);
  const stored =
    px.bitsAllocated === 8 && px.bitsStored === 8
      ? words
      : maskStored(words, n * 3, { ...px, signed: false });
  const down = Math.max(0, px.bitsStored - 8);
  const sample = (pixel: number, channel: number): number => {
    const idx = px.planarConfiguration === 1 ? channel * n + pixel : pixel * 3 + channel;
    return down ? Math.floor(stored[idx] / 2 ** down) : stored[idx];
  };
  const ybr = photometric === 'YBR_FULL';
  for (let p = 0; p < n; p++) {
    const a = sample(p, 0);
    const b = sample(p, 1);
    const c = sample(p, 2);
    if (ybr) ybrToRgb(a, b, c, out, p * 3);
    else {
      out[p * 3] = a;
      out[p * 3 + 1] = b;
      out[p * 3 + 2] = c;
    }
  }
  return out;
}

/**
 * Decodes one native (uncompressed) frame given as little-endian words, which is how the archive hands out frames
 * even of Explicit VR Big Endian objects (it keeps pixel data in host byte order once parsed).
 */
export function decodeNativeFrame(bytes: Uint8Array, px: PixelDescription): StoredFrame {
  const expected = nativeFrameSpan(px);
  if (bytes.length < expected) {
    throw new UnrecoverableInputError(
      `frame data holds ${bytes.length} bytes where ${expected} are declared`,
    );
  }
  const { rows, columns } = px;
  if (px.samplesPerPixel === 3) return { kind: 'rgb', rows, columns, data: colourToRgb(bytes, px) };
  const n = rows * columns;
  const words = nativeWords(bytes, 0, n, px.bitsAllocated);
  if (px.photometric === 'PALETTE COLOR') {
    return { kind: 'palette', rows, columns, indices: maskStored(words, n, { ...px, signed: false }) };
  }
  return { kind: 'gray', rows, columns, values: maskStored(words, n, px) };
}

/** Builds one palette channel from its descriptor (entries, first mapped value, bits) and LUT data bytes. */
export function paletteChannel(descriptor: number[], data: Uint8Array): PaletteChannel {
  const entries = descriptor[0] === 0 ? 65536 : descriptor[0];
  const firstMapped = descriptor[1] ?? 0;
  const bits = descriptor[2] ?? 8;
  const table = new Uint8Array(entries);
  if (bits === 16 || data.length >= entries * 2) {
    const words = new Uint16Array(aligned(data, 0, Math.min(entries, Math.floor(data.length / 2)) * 2));
    let max = 0;
    for (const w of words) if (w > max) max = w;
    // Some writers declare 16 bits but store 8-bit values: scale only when the data really use 16 bits.
    const down = max > 255 ? 8 : 0;
    for (let i = 0; i < words.length; i++) table[i] = words[i] >> down;
  } else {
    table.set(data.subarray(0, entries));
  }
  return { firstMapped, table };
}

// ---------------------------------------------------------------------------------------------------------------
// Presentation

/**
 * The VOI LUT functions of PS3.3 C.11.2.1.2 (linear, linear exact, sigmoid), mapping a modality value to 0..255.
 * Exported for unit tests of the window/level math.
 */
export function applyWindow(x: number, w: WindowSpec): number {
  const { center: c } = w;
  if (w.fn === 'sigmoid') return 255 / (1 + Math.exp((-4 * (x - c)) / w.width));
  if (w.fn === 'linear-exact') {
    if (x <= c - w.width / 2) return 0;
    if (x > c + w.width / 2) return 255;
    return ((x - c) / w.width + 0.5) * 255;
  }
  const width = Math.max(1, w.width);
  if (x <= c - 0.5 - (width - 1) / 2) return 0;
  if (x > c - 0.5 + (width - 1) / 2) return 255;
  return ((x - (c - 0.5)) / (width - 1 || 1) + 0.5) * 255;
}

/**
 * The window used when neither the request nor the data set gives one: the full stored range for small unsigned
 * data without rescale (8-bit US, masks), otherwise the frame's own modality value range.
 */
export function defaultWindow(
  values: ArrayLike<number>,
  px: PixelDescription,
  pres: FramePresentation,
): WindowSpec {
  const full = fullRangeWindow(px, pres);
  if (full) return full;
  const { min, max } = valueRange(values);
  return windowOverRange(min, max, pres);
}

/**
 * Whether a grey frame's default window comes from its own range of values (no window asked for or in the object,
 * and none implied by the stored bits): a decode at reduced resolution would then window differently from the full
 * frame (smoothing narrows the range), so thumbnails of such frames decode at full resolution.
 */
export function windowFromFrameRange(
  px: PixelDescription,
  pres: FramePresentation,
  window: WindowSpec | undefined,
): boolean {
  return (
    px.samplesPerPixel === 1 &&
    px.photometric !== 'PALETTE COLOR' &&
    !window &&
    pres.windows.length === 0 &&
    !fullRangeWindow(px, pres)
  );
}

/** Unsigned data of up to 8 bits with the identity Modality LUT is shown over its whole range, as stored. */
function fullRangeWindow(px: PixelDescription, pres: FramePresentation): WindowSpec | undefined {
  if (px.bitsStored > 8 || px.signed || pres.rescaleSlope !== 1 || pres.rescaleIntercept !== 0)
    return undefined;
  const max = 2 ** px.bitsStored - 1;
  return { center: max / 2, width: max, fn: 'linear-exact' };
}

/** The smallest and largest of the values (Infinity, -Infinity when there are none). */
function valueRange(values: ArrayLike<number>): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < values.length; i++) {
    const v = values[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { min, max };
}

function windowOverRange(min: number, max: number, pres: FramePresentation): WindowSpec {
  if (!Number.isFinite(min)) return { center: 0, width: 1, fn: 'linear-exact' };
  const a = min * pres.rescaleSlope + pres.rescaleIntercept;
  const b = max * pres.rescaleSlope + pres.rescaleIntercept;
  const lo = Math.min(a, b);
  const hi = Math.max(a, b);
  return { center: (lo + hi) / 2, width: Math.max(hi - lo, 1), fn: 'linear-exact' };
}

/** Integer stored values spanning at most this many levels are mapped through a lookup table. */
const MAX_LUT_LEVELS = 1 << 20;

/** Options of one rendering, from the request or the thumbnail job. */
export interface PresentationOptions {
  /** Overrides the data set's window (the `window` query parameter). */
  window?: WindowSpec;
  /** Palette for PALETTE COLOR images. */
  palette?: PaletteLut;
}

/**
 * Applies the grayscale pipeline (Modality LUT, VOI LUT, MONOCHROME1 inversion) or the colour pipeline (palette)
 * and returns an 8-bit image.
 */
export function toDisplayImage(
  frame: StoredFrame,
  px: PixelDescription,
  pres: FramePresentation,
  opts: PresentationOptions = {},
): DisplayImage {
  const { rows: height, columns: width } = frame;
  const n = width * height;
  if (frame.kind === 'rgb') return { width, height, channels: 3, data: frame.data };
  if (frame.kind === 'palette') {
    const lut = opts.palette;
    if (!lut) throw new UnrecoverableInputError('palette colour image without a usable palette');
    const data = new Uint8Array(n * 3);
    const look = (ch: PaletteChannel, idx: number): number => {
      const i = idx - ch.firstMapped;
      return ch.table[i < 0 ? 0 : i >= ch.table.length ? ch.table.length - 1 : i];
    };
    for (let p = 0; p < n; p++) {
      const idx = frame.indices[p];
      data[p * 3] = look(lut.red, idx);
      data[p * 3 + 1] = look(lut.green, idx);
      data[p * 3 + 2] = look(lut.blue, idx);
    }
    return { width, height, channels: 3, data };
  }
  const values = frame.values;
  const invert = px.photometric === 'MONOCHROME1';
  const { rescaleSlope: slope, rescaleIntercept: intercept } = pres;
  const data = new Uint8Array(n);
  const integer = !(values instanceof Float64Array || values instanceof Float32Array);
  const explicit = opts.window ?? pres.windows[0];
  // The range is needed for the default window, and bounds the lookup table either way.
  const { min, max } = explicit && px.bitsStored <= 16 && integer ? storedRange(px) : valueRange(values);
  const window =
    explicit ??
    (px.bitsStored <= 8 && !px.signed && slope === 1 && intercept === 0
      ? defaultWindow(values, px, pres)
      : windowOverRange(min, max, pres));
  const level = (v: number): number => {
    const y = clamp8(applyWindow(v * slope + intercept, window));
    return invert ? 255 - y : y;
  };
  if (integer && Number.isFinite(min) && max - min < MAX_LUT_LEVELS) {
    // One window evaluation per stored level instead of per pixel: the same result, several times faster.
    const lut = new Uint8Array(max - min + 1);
    for (let v = min; v <= max; v++) lut[v - min] = level(v);
    if (min === 0) for (let p = 0; p < n; p++) data[p] = lut[values[p]];
    else for (let p = 0; p < n; p++) data[p] = lut[values[p] - min];
    return { width, height, channels: 1, data };
  }
  for (let p = 0; p < n; p++) data[p] = level(values[p]);
  return { width, height, channels: 1, data };
}

/**
 * Native sample words straight to the 8-bit image: the same result as `toDisplayImage(decodeNativeFrame(...))`, in
 * one or two passes over the words and without the intermediate array of stored values. Grey frames of 8 or 16 bits
 * go through a lookup table indexed by the stored bits themselves (masking and sign extension folded into the
 * table); colour, palette, 1- and 32-bit frames take the general path.
 */
export function renderNativeFrame(
  bytes: Uint8Array,
  px: PixelDescription,
  pres: FramePresentation,
  opts: PresentationOptions = {},
): DisplayImage {
  const gray =
    px.samplesPerPixel === 1 &&
    px.photometric !== 'PALETTE COLOR' &&
    (px.bitsAllocated === 8 || px.bitsAllocated === 16) &&
    px.bitsStored <= 16;
  if (!gray) return toDisplayImage(decodeNativeFrame(bytes, px), px, pres, opts);
  const expected = nativeFrameSpan(px);
  if (bytes.length < expected) {
    throw new UnrecoverableInputError(
      `frame data holds ${bytes.length} bytes where ${expected} are declared`,
    );
  }
  const { rows: height, columns: width } = px;
  const n = width * height;
  const words = nativeWords(bytes, 0, n, px.bitsAllocated) as Uint8Array | Uint16Array;
  const shift = px.highBit + 1 - px.bitsStored;
  const mask = 2 ** px.bitsStored - 1;
  const up = 32 - px.bitsStored;
  // Stored bits → stored value (PS3.5 §8.1.1): sign extension by shifting the sign bit into bit 31 and back.
  const valueOf = px.signed ? (r: number) => (r << up) >> up : (r: number) => r;
  const { rescaleSlope: slope, rescaleIntercept: intercept } = pres;
  const plain = shift === 0 && px.bitsStored === px.bitsAllocated;
  let window = opts.window ?? pres.windows[0] ?? fullRangeWindow(px, pres);
  let lo = 0;
  let hi = mask;
  if (!window) {
    // The frame's own range of stored values; the table then only needs the bit patterns of that range.
    const { min, max } = storedValueRange(words, n, shift, mask, px.signed ? up : 0);
    window = windowOverRange(min, max, pres);
    if (!px.signed && Number.isFinite(min)) {
      lo = min;
      hi = max;
    }
  }
  const invert = px.photometric === 'MONOCHROME1';
  const w = window;
  // One window evaluation per bit pattern (of the range present, when it is known) instead of per pixel.
  const lut = new Uint8Array(mask + 1);
  for (let r = lo; r <= hi; r++) {
    const y = clamp8(applyWindow(valueOf(r) * slope + intercept, w));
    lut[r] = invert ? 255 - y : y;
  }
  const data = new Uint8Array(n);
  mapStoredBits(words, n, shift, plain ? -1 : mask, lut, data);
  return { width, height, channels: 1, data };
}

/**
 * Thumbnails: shrinks a display image by the largest whole factor that still leaves it covering `target` (both sides
 * at least as large), averaging each factor x factor block (edge blocks over the pixels they hold). The encoder then
 * only resizes what is left (a 512-pixel CT to a 128-pixel box: nothing), and the image handed to it is factor²
 * times smaller. Returns the image itself when no factor of 2 or more fits.
 */
export function shrinkToCover(img: DisplayImage, target: { width: number; height: number }): DisplayImage {
  const factor = Math.floor(
    Math.min(img.width / Math.max(1, target.width), img.height / Math.max(1, target.height)),
  );
  if (!(factor >= 2)) return img;
  const width = Math.ceil(img.width / factor);
  const height = Math.ceil(img.height / factor);
  const data = new Uint8Array(width * height * img.channels);
  boxShrink(img.data, img.width, img.height, img.channels, factor, width, data);
  return { width, height, channels: img.channels, data };
}

function boxShrink(
  src: Uint8Array,
  srcWidth: number,
  srcHeight: number,
  channels: number,
  factor: number,
  width: number,
  out: Uint8Array,
): void {
  // One row of sums per output row: each source row is added in once, in order.
  const sums = new Uint32Array(width * channels);
  const rowStride = srcWidth * channels;
  for (let y0 = 0, oy = 0; y0 < srcHeight; y0 += factor, oy++) {
    const y1 = Math.min(srcHeight, y0 + factor);
    sums.fill(0);
    for (let y = y0; y < y1; y++) {
      const row = y * rowStride;
      for (let ox = 0; ox < width; ox++) {
        const from = row + ox * factor * channels;
        const to = row + Math.min(srcWidth, (ox + 1) * factor) * channels;
        for (let c = 0; c < channels; c++) {
          let sum = 0;
          for (let i = from + c; i < to; i += channels) sum += src[i];
          sums[ox * channels + c] += sum;
        }
      }
    }
    const rows = y1 - y0;
    const base = oy * width * channels;
    for (let ox = 0; ox < width; ox++) {
      const count = (Math.min(srcWidth, (ox + 1) * factor) - ox * factor) * rows;
      for (let c = 0; c < channels; c++) {
        const k = ox * channels + c;
        out[base + k] = Math.round(sums[k] / count);
      }
    }
  }
}

// The per-pixel loops live in small functions of their own: V8 optimises them as tight loops, several times faster
// than the same loops inside the larger function above.

/** Smallest and largest stored value of the words (shifted, masked, sign-extended by `up` bits when non-zero). */
function storedValueRange(
  words: Uint8Array | Uint16Array,
  n: number,
  shift: number,
  mask: number,
  up: number,
): { min: number; max: number } {
  let min = Infinity;
  let max = -Infinity;
  if (up === 0) {
    for (let p = 0; p < n; p++) {
      const v = (words[p] >>> shift) & mask;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  } else {
    for (let p = 0; p < n; p++) {
      const v = (((words[p] >>> shift) & mask) << up) >> up;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  return { min, max };
}

/** out[p] = lut[stored bits of word p]; `mask` -1 when the words are the stored bits already. */
function mapStoredBits(
  words: Uint8Array | Uint16Array,
  n: number,
  shift: number,
  mask: number,
  lut: Uint8Array,
  out: Uint8Array,
): void {
  if (mask === -1) for (let p = 0; p < n; p++) out[p] = lut[words[p]];
  else if (shift === 0) for (let p = 0; p < n; p++) out[p] = lut[words[p] & mask];
  else for (let p = 0; p < n; p++) out[p] = lut[(words[p] >>> shift) & mask];
}

/** Every value the stored bits can hold (PS3.5 §8.1.1), a bound that needs no pass over the pixels. */
function storedRange(px: PixelDescription): { min: number; max: number } {
  return px.signed
    ? { min: -(2 ** (px.bitsStored - 1)), max: 2 ** (px.bitsStored - 1) - 1 }
    : { min: 0, max: 2 ** px.bitsStored - 1 };
}

// ---------------------------------------------------------------------------------------------------------------
// Query parameters and encoding

/**
 * Rendered media types this gateway produces (PS3.18 Table 8.7.4-1, single-frame image rows). GIF is offered by
 * WADO-URI only, where PS3.18 §9 lists it for single-frame images.
 */
export type RenderedMediaType = 'image/jpeg' | 'image/png' | 'image/gif' | 'image/webp';

/** The `viewport` parameter (PS3.18 §8.3.5.1.3): output size vw × vh, optional source region sx, sy, sw, sh. */
export interface Viewport {
  vw?: number;
  vh?: number;
  sx?: number;
  sy?: number;
  sw?: number;
  sh?: number;
}

/** Rendering parameters understood by this gateway, parsed from a query string. */
export interface RenderParams {
  quality?: number;
  viewport?: Viewport;
  window?: WindowSpec;
  /** Parameters given but not honoured, for `Warning: 299` headers. */
  ignored: string[];
  /**
   * `iccprofile` (PS3.18 §8.3.5.1.5): `no` never attaches one; `yes`, like the parameter's absence, attaches the
   * instance's ICC Profile (0028,2000) to colour output when it has one (the pixels are in that profile's space).
   * `srgb`, `adobergb` and `rommrgb` transform colour output from the instance's profile (sRGB when it has none)
   * into that colour space and attach its profile (dicom/icc-profiles.ts).
   */
  icc?: 'no' | 'yes' | OutputColourSpace;
}

function one(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[v.length - 1] : v;
}

function optionalInt(raw: string | undefined, name: string, allowNegative: boolean): number | undefined {
  if (raw === undefined || raw.trim() === '') return undefined;
  if (!/^-?\d+$/.test(raw.trim())) throw new BadRequestError(`viewport ${name} must be an integer`);
  const n = Number(raw);
  if (!allowNegative && n < 0) throw new BadRequestError(`viewport ${name} must not be negative`);
  return n;
}

/**
 * Parses the Retrieve Rendered query parameters of PS3.18 §8.3.5.1: `quality` (1-100), `viewport`
 * (vw,vh[,sx,sy,sw,sh]), `window` (center,width[,linear|linear-exact|sigmoid]) and `iccprofile`. Malformed values are
 * a 400; `annotation` and the `iccprofile` values that need a colour transform are accepted but not applied, and
 * reported in `ignored`.
 * `thumbnail` restricts `viewport` to vw,vh as §8.3.5.2 does for thumbnails.
 */
export function parseRenderParams(
  query: Record<string, string | string[] | undefined>,
  thumbnail = false,
): RenderParams {
  const out: RenderParams = { ignored: [] };
  const quality = one(query.quality);
  if (quality !== undefined) {
    const q = Number(quality);
    if (!/^\d+$/.test(quality.trim()) || q < 1 || q > 100)
      throw new BadRequestError('quality must be an integer from 1 to 100');
    out.quality = q;
  }
  const viewport = one(query.viewport);
  if (viewport !== undefined) {
    const parts = viewport.split(',');
    if (parts.length !== 2 && parts.length !== 6)
      throw new BadRequestError('viewport must be vw,vh or vw,vh,sx,sy,sw,sh');
    if (thumbnail && parts.length === 6) throw new BadRequestError('a thumbnail viewport is vw,vh only');
    const vp: Viewport = {
      vw: optionalInt(parts[0], 'vw', false),
      vh: optionalInt(parts[1], 'vh', false),
    };
    if (vp.vw === 0 || vp.vh === 0) throw new BadRequestError('viewport vw and vh must be positive');
    if (parts.length === 6) {
      vp.sx = optionalInt(parts[2], 'sx', false);
      vp.sy = optionalInt(parts[3], 'sy', false);
      vp.sw = optionalInt(parts[4], 'sw', true);
      vp.sh = optionalInt(parts[5], 'sh', true);
      if (vp.sw === 0 || vp.sh === 0) throw new BadRequestError('viewport sw and sh must not be zero');
    }
    out.viewport = vp;
  }
  const window = one(query.window);
  if (window !== undefined) {
    if (thumbnail) out.ignored.push('window');
    else {
      const [c, w, fn = 'linear', ...rest] = window.split(',').map((s) => s.trim());
      const center = Number(c);
      const width = Number(w);
      const fnName = fn.toLowerCase();
      if (rest.length || c === '' || w === '' || !Number.isFinite(center) || !Number.isFinite(width)) {
        throw new BadRequestError('window must be center,width[,function]');
      }
      if (fnName !== 'linear' && fnName !== 'linear-exact' && fnName !== 'sigmoid') {
        throw new BadRequestError('window function must be linear, linear-exact or sigmoid');
      }
      if (width <= 0 || (fnName === 'linear' && width < 1))
        throw new BadRequestError('window width is out of range');
      out.window = { center, width, fn: fnName };
    }
  }
  if (one(query.annotation)) out.ignored.push('annotation');
  const icc = one(query.iccprofile)?.trim().toLowerCase();
  if (icc === 'no' || icc === 'yes' || icc === 'srgb' || icc === 'adobergb' || icc === 'rommrgb')
    out.icc = icc;
  else if (icc) throw new BadRequestError('iccprofile must be no, yes, srgb, adobergb or rommrgb');
  return out;
}

/**
 * sharp, loaded on first use: the decode threads import this module for the presentation pipeline and never encode,
 * so they need not load libvips.
 */
function loadSharp(): typeof sharpModule {
  // eslint-disable-next-line @typescript-eslint/no-require-imports
  const sharp = require('sharp') as typeof sharpModule;
  if (!sharpTuned) {
    sharpTuned = true;
    // Renders are small and many run at once (one per libuv thread): one libvips thread per image keeps the cores
    // busy without waking a pool of threads per image on a loaded machine; the operation cache never hits for
    // pixels that arrive fresh with every request.
    sharp.concurrency(1);
    sharp.cache(false);
  }
  return sharp;
}
let sharpTuned = false;

/** Limits and defaults of one encoding. */
export interface EncodeOptions {
  mediaType: RenderedMediaType;
  quality?: number;
  viewport?: Viewport;
  /** Largest output image (vw × vh) accepted; a larger request is a 400. */
  maxOutputPixels: number;
  /** Thumbnails fit a box without ever being enlarged. */
  withoutEnlargement?: boolean;
  /**
   * Colour images: transform into this colour space and attach its profile; `from` is the profile the pixels are in
   * (the instance's ICC Profile), sRGB when absent. Grey images are left as they are.
   */
  colour?: { to: OutputColourSpace; from?: Buffer };
}

/**
 * Applies the source region and viewport (PS3.18 §8.3.5.1.3: region first, then scaled to fit vw × vh keeping the
 * aspect ratio; a negative sw or sh flips the image) and encodes to JPEG or PNG.
 */
export async function encodeImage(img: DisplayImage, opts: EncodeOptions): Promise<Buffer> {
  const vp = opts.viewport ?? {};
  const sharp = loadSharp();
  const raw = Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength);
  const rawInfo = {
    raw: { width: img.width, height: img.height, channels: img.channels },
    limitInputPixels: false,
  };
  const colour = img.channels === 3 ? opts.colour : undefined;
  let pipeline: Sharp;
  if (colour?.from) {
    // sharp cannot give raw input a profile: the pixels go through an uncompressed PNG that carries the instance's
    // profile, so that libvips transforms from it (and not from sRGB) into the output space.
    const tagged = attachIccToPng(
      await sharp(raw, rawInfo).png({ compressionLevel: 0 }).toBuffer(),
      colour.from,
    );
    pipeline = sharp(tagged, { limitInputPixels: false });
  } else pipeline = sharp(raw, rawInfo);
  // Without this sharp widens one-channel input to sRGB: grey images would triple in size.
  if (img.channels === 1) pipeline = pipeline.toColourspace('b-w');
  if (colour) pipeline = pipeline.withIccProfile(outputProfilePath(colour.to));

  let regionWidth = img.width;
  let regionHeight = img.height;
  if (vp.sx !== undefined || vp.sy !== undefined || vp.sw !== undefined || vp.sh !== undefined) {
    const sx = vp.sx ?? 0;
    const sy = vp.sy ?? 0;
    const sw = vp.sw ?? img.width - sx;
    const sh = vp.sh ?? img.height - sy;
    const left = Math.max(0, Math.min(sx, sx + sw));
    const top = Math.max(0, Math.min(sy, sy + sh));
    const right = Math.min(img.width, Math.max(sx, sx + sw));
    const bottom = Math.min(img.height, Math.max(sy, sy + sh));
    if (right <= left || bottom <= top)
      throw new BadRequestError('viewport source region lies outside the image');
    regionWidth = right - left;
    regionHeight = bottom - top;
    pipeline = pipeline.extract({ left, top, width: regionWidth, height: regionHeight });
    if (sw < 0) pipeline = pipeline.flop();
    if (sh < 0) pipeline = pipeline.flip();
  }

  if (vp.vw !== undefined || vp.vh !== undefined) {
    const aspect = regionWidth / regionHeight;
    let w = vp.vw ?? Math.round((vp.vh as number) * aspect);
    let h = vp.vh ?? Math.round((vp.vw as number) / aspect);
    if (w * h > opts.maxOutputPixels) {
      throw new BadRequestError(`viewport asks for more than ${opts.maxOutputPixels} pixels`);
    }
    // Fit inside the viewport, keeping the aspect ratio.
    const scale = Math.min(w / regionWidth, h / regionHeight, opts.withoutEnlargement ? 1 : Infinity);
    w = Math.max(1, Math.round(regionWidth * scale));
    h = Math.max(1, Math.round(regionHeight * scale));
    if (w !== regionWidth || h !== regionHeight) pipeline = pipeline.resize(w, h, { fit: 'fill' });
  } else if (regionWidth * regionHeight > opts.maxOutputPixels) {
    throw new BadRequestError(
      `the rendered image would exceed ${opts.maxOutputPixels} pixels; ask for a viewport`,
    );
  }

  if (opts.mediaType === 'image/png') return pipeline.png({ compressionLevel: 6 }).toBuffer();
  if (opts.mediaType === 'image/webp') return pipeline.webp({ quality: opts.quality ?? 90 }).toBuffer();
  // GIF holds 256 colours: grey images keep every level, colour images are quantised (no dithering, so flat
  // regions stay flat).
  if (opts.mediaType === 'image/gif') return pipeline.gif({ dither: 0 }).toBuffer();
  return pipeline.jpeg({ quality: opts.quality ?? 90, chromaSubsampling: '4:4:4' }).toBuffer();
}
