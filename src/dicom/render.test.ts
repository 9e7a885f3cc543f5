import sharp from 'sharp';
import { decodeRle } from '../codecs/rle';
import { BadRequestError, UnrecoverableInputError } from '../errors';
import type { DicomJson } from './json';
import {
  applyWindow,
  decodeNativeFrame,
  defaultWindow,
  describePixels,
  encodeImage,
  type FramePresentation,
  framePresentation,
  paletteChannel,
  parseRenderParams,
  type PixelDescription,
  renderNativeFrame,
  shrinkToCover,
  toDisplayImage,
} from './render';

const mono16 = (over: Partial<PixelDescription> = {}): PixelDescription => ({
  rows: 1,
  columns: 4,
  samplesPerPixel: 1,
  bitsAllocated: 16,
  bitsStored: 16,
  highBit: 15,
  signed: false,
  photometric: 'MONOCHROME2',
  planarConfiguration: 0,
  numberOfFrames: 1,
  ...over,
});
const identity: FramePresentation = { rescaleSlope: 1, rescaleIntercept: 0, windows: [] };

function le16(values: number[]): Buffer {
  const b = Buffer.alloc(values.length * 2);
  values.forEach((v, i) => b.writeUInt16LE(v & 0xffff, i * 2));
  return b;
}

function gray(frame: ReturnType<typeof decodeNativeFrame>): number[] {
  if (frame.kind !== 'gray') throw new Error(`expected a gray frame, got ${frame.kind}`);
  return Array.from(frame.values);
}

describe('window/level (PS3.3 C.11.2.1.2)', () => {
  it('maps a CT soft tissue window linearly, clipping below and above', () => {
    const w = { center: 40, width: 400, fn: 'linear' as const };
    expect(applyWindow(-1000, w)).toBe(0);
    expect(applyWindow(-160, w)).toBe(0); // c - 0.5 - (w-1)/2 is still the floor
    expect(applyWindow(1000, w)).toBe(255);
    expect(applyWindow(40, w)).toBeCloseTo(((40 - 39.5) / 399 + 0.5) * 255, 6);
    expect(applyWindow(240, w)).toBe(255);
  });

  it('uses the exact linear function without the half-pixel offset for linear-exact', () => {
    const w = { center: 0, width: 100, fn: 'linear-exact' as const };
    expect(applyWindow(-50, w)).toBe(0);
    expect(applyWindow(0, w)).toBe(127.5);
    expect(applyWindow(25, w)).toBe(191.25);
    expect(applyWindow(50.0001, w)).toBe(255);
  });

  it('puts the centre of a sigmoid window at mid-grey and approaches the ends smoothly', () => {
    const w = { center: 100, width: 50, fn: 'sigmoid' as const };
    expect(applyWindow(100, w)).toBeCloseTo(127.5, 6);
    expect(applyWindow(200, w)).toBeGreaterThan(254);
    expect(applyWindow(0, w)).toBeLessThan(1);
  });

  it('falls back to the frame value range when no window is given, after rescale', () => {
    const px = mono16({ signed: true });
    const w = defaultWindow(Int32Array.from([-10, 0, 30]), px, {
      rescaleSlope: 2,
      rescaleIntercept: 100,
      windows: [],
    });
    expect(w).toEqual({ center: 120, width: 80, fn: 'linear-exact' });
  });

  it('shows small unsigned data without a window over its full stored range, not stretched', () => {
    const px = mono16({ bitsAllocated: 8, bitsStored: 8, highBit: 7 });
    expect(defaultWindow(Uint8Array.from([100, 101]), px, identity)).toEqual({
      center: 127.5,
      width: 255,
      fn: 'linear-exact',
    });
  });
});

describe('decoding native frames', () => {
  it('sign-extends 12-bit signed values stored in 16 bits and ignores bits above the high bit', () => {
    const px = mono16({ bitsStored: 12, highBit: 11, signed: true });
    const frame = decodeNativeFrame(le16([0x0fff, 0x0800, 0x07ff, 0xf001]), px);
    expect(gray(frame)).toEqual([-1, -2048, 2047, 1]);
  });

  it('reads unsigned 12-bit data whose high bit is not bits stored - 1 by shifting', () => {
    const px = mono16({ bitsStored: 12, highBit: 15 });
    expect(gray(decodeNativeFrame(le16([0x0010, 0xfff0, 0x1230, 0]), px))).toEqual([1, 4095, 0x123, 0]);
  });

  it('unpacks 1-bit data least significant bit first', () => {
    const px = mono16({ columns: 8, bitsAllocated: 1, bitsStored: 1, highBit: 0 });
    expect(gray(decodeNativeFrame(Buffer.from([0b10000101]), px))).toEqual([1, 0, 1, 0, 0, 0, 0, 1]);
  });

  it('refuses a frame shorter than the declared size', () => {
    expect(() => decodeNativeFrame(Buffer.alloc(6), mono16())).toThrow(UnrecoverableInputError);
  });

  it('reassembles planar RGB into interleaved pixels', () => {
    const px = mono16({
      columns: 2,
      samplesPerPixel: 3,
      bitsAllocated: 8,
      bitsStored: 8,
      highBit: 7,
      photometric: 'RGB',
      planarConfiguration: 1,
    });
    const frame = decodeNativeFrame(Buffer.from([10, 11, 20, 21, 30, 31]), px);
    expect(frame.kind === 'rgb' && Array.from(frame.data)).toEqual([10, 20, 30, 11, 21, 31]);
  });

  it('converts YBR_FULL to RGB (neutral chroma stays grey, red stays red)', () => {
    const px = mono16({
      columns: 2,
      samplesPerPixel: 3,
      bitsAllocated: 8,
      bitsStored: 8,
      highBit: 7,
      photometric: 'YBR_FULL',
    });
    // Pure red (255,0,0) is Y=76, Cb=85, Cr=255 in full-range YCbCr.
    const frame = decodeNativeFrame(Buffer.from([128, 128, 128, 76, 85, 255]), px);
    expect(frame.kind).toBe('rgb');
    const d = frame.kind === 'rgb' ? Array.from(frame.data) : [];
    expect(d.slice(0, 3)).toEqual([128, 128, 128]);
    expect(d[3]).toBeGreaterThan(250);
    expect(d[4]).toBeLessThan(3);
    expect(d[5]).toBeLessThan(3);
  });
});

describe('presentation', () => {
  it('applies rescale then window, and inverts MONOCHROME1 after the window', () => {
    const values = Int32Array.from([0, 1000, 2000, 4000]);
    const pres: FramePresentation = {
      rescaleSlope: 1,
      rescaleIntercept: -1000,
      windows: [{ center: 0, width: 2000, fn: 'linear-exact' }],
    };
    const m2 = toDisplayImage({ kind: 'gray', rows: 1, columns: 4, values }, mono16(), pres);
    expect(Array.from(m2.data)).toEqual([0, 128, 255, 255]);
    const m1 = toDisplayImage(
      { kind: 'gray', rows: 1, columns: 4, values },
      mono16({ photometric: 'MONOCHROME1' }),
      pres,
    );
    expect(Array.from(m1.data)).toEqual([255, 127, 0, 0]);
  });

  it('lets the window of the request override the data set', () => {
    const values = Int32Array.from([0, 50, 100, 150]);
    const pres: FramePresentation = { ...identity, windows: [{ center: 1000, width: 10, fn: 'linear' }] };
    const img = toDisplayImage({ kind: 'gray', rows: 1, columns: 4, values }, mono16(), pres, {
      window: { center: 75, width: 150, fn: 'linear-exact' },
    });
    expect(Array.from(img.data)).toEqual([0, 85, 170, 255]);
  });

  it('maps palette indices through 16-bit tables scaled to 8 bits, clamping below the first mapped value', () => {
    const table = (vals: number[]) => le16(vals.map((v) => v * 257));
    const palette = {
      red: paletteChannel([3, 10, 16], table([0, 128, 255])),
      green: paletteChannel([3, 10, 16], table([255, 128, 0])),
      blue: paletteChannel([3, 10, 16], table([7, 7, 7])),
    };
    const img = toDisplayImage(
      { kind: 'palette', rows: 1, columns: 3, indices: [10, 12, 2] },
      mono16({ columns: 3, photometric: 'PALETTE COLOR' }),
      identity,
      { palette },
    );
    expect(Array.from(img.data)).toEqual([0, 255, 7, 255, 0, 7, 0, 255, 7]);
  });

  it('reads rescale and window per frame from enhanced multi-frame functional groups', () => {
    const item = (slope: number, center: number): DicomJson => ({
      '00289145': {
        vr: 'SQ',
        Value: [{ '00281053': { vr: 'DS', Value: [slope] }, '00281052': { vr: 'DS', Value: [-1024] } }],
      },
      '00289132': {
        vr: 'SQ',
        Value: [{ '00281050': { vr: 'DS', Value: [center] }, '00281051': { vr: 'DS', Value: [80] } }],
      },
    });
    const ds: DicomJson = {
      '52009229': { vr: 'SQ', Value: [item(1, 40)] },
      '52009230': { vr: 'SQ', Value: [{}, item(2, 300)] },
    };
    expect(framePresentation(ds, 1)).toEqual({
      rescaleSlope: 1,
      rescaleIntercept: -1024,
      windows: [{ center: 40, width: 80, fn: 'linear' }],
    });
    expect(framePresentation(ds, 2)).toEqual({
      rescaleSlope: 2,
      rescaleIntercept: -1024,
      windows: [{ center: 300, width: 80, fn: 'linear' }],
    });
  });

  it('refuses an instance with no pixel data or an impossible size', () => {
    expect(() => describePixels({ '00280010': { vr: 'US', Value: [10] } })).toThrow(UnrecoverableInputError);
    expect(() =>
      describePixels({
        '00280010': { vr: 'US', Value: [0] },
        '00280011': { vr: 'US', Value: [10] },
        '00280100': { vr: 'US', Value: [16] },
        '7FE00010': { vr: 'OW', BulkDataURI: '7FE00010' },
      }),
    ).toThrow(UnrecoverableInputError);
  });
});

describe('RLE input', () => {
  it('decodes an RLE frame of 16-bit samples (most significant byte segment first)', () => {
    const px = mono16();
    // Two segments: high bytes [0x01 x4] as a replicate run, low bytes [1,2,3,4] as a literal run.
    const high = Buffer.from([0xfd, 0x01]); // -3 → repeat next byte 4 times
    const low = Buffer.from([0x03, 1, 2, 3, 4]); // 3 → copy next 4 bytes
    const header = Buffer.alloc(64);
    header.writeUInt32LE(2, 0);
    header.writeUInt32LE(64, 4);
    header.writeUInt32LE(64 + high.length, 8);
    const native = decodeRle(Buffer.concat([header, high, low]), px);
    expect(gray(decodeNativeFrame(native, px))).toEqual([0x0101, 0x0102, 0x0103, 0x0104]);
  });
});

describe('rendering query parameters (PS3.18 §8.3.5.1)', () => {
  it('parses quality, a viewport with a source region and a window', () => {
    expect(
      parseRenderParams({ quality: '75', viewport: '256,128,10,20,-100,50', window: '40,400,sigmoid' }),
    ).toEqual({
      quality: 75,
      viewport: { vw: 256, vh: 128, sx: 10, sy: 20, sw: -100, sh: 50 },
      window: { center: 40, width: 400, fn: 'sigmoid' },
      ignored: [],
    });
  });

  it('accepts a window without a function as linear and a viewport with one side left empty', () => {
    expect(parseRenderParams({ window: '-600,1500', viewport: '512,' })).toMatchObject({
      window: { center: -600, width: 1500, fn: 'linear' },
      viewport: { vw: 512, vh: undefined },
    });
  });

  it('answers 400 for malformed values', () => {
    for (const q of [
      { quality: '0' },
      { quality: 'high' },
      { viewport: '100' },
      { viewport: '0,100' },
      { viewport: '100,100,0,0,0,10' },
      { window: '40' },
      { window: '40,0,linear' },
      { window: '40,400,cubic' },
    ]) {
      expect(() => parseRenderParams(q)).toThrow(BadRequestError);
    }
  });

  it('reports annotation as ignored, takes the ICC colour spaces, and limits thumbnails to vw,vh', () => {
    expect(parseRenderParams({ annotation: 'patient', iccprofile: 'srgb' })).toEqual({
      ignored: ['annotation'],
      icc: 'srgb',
    });
    expect(parseRenderParams({ iccprofile: 'AdobeRGB' }).icc).toBe('adobergb');
    expect(parseRenderParams({ iccprofile: 'rommrgb' }).icc).toBe('rommrgb');
    expect(parseRenderParams({ iccprofile: 'no' })).toEqual({ ignored: [], icc: 'no' });
    expect(parseRenderParams({ iccprofile: 'YES' })).toEqual({ ignored: [], icc: 'yes' });
    expect(() => parseRenderParams({ iccprofile: 'maybe' })).toThrow(BadRequestError);
    expect(() => parseRenderParams({ viewport: '64,64,0,0,10,10' }, true)).toThrow(BadRequestError);
  });
});

describe('encoding', () => {
  const img = { width: 200, height: 100, channels: 1 as const, data: new Uint8Array(200 * 100).fill(90) };

  it('fits the image inside the viewport keeping its aspect ratio', async () => {
    const out = await encodeImage(img, {
      mediaType: 'image/png',
      viewport: { vw: 50, vh: 50 },
      maxOutputPixels: 1e6,
    });
    expect(await sharp(out).metadata()).toMatchObject({ format: 'png', width: 50, height: 25 });
  });

  it('crops a source region, flips it for a negative width, and encodes JPEG', async () => {
    const data = new Uint8Array(200 * 100);
    for (let y = 0; y < 100; y++) for (let x = 0; x < 200; x++) data[y * 200 + x] = x < 100 ? 0 : 255;
    const out = await encodeImage(
      { ...img, data },
      { mediaType: 'image/jpeg', viewport: { sx: 150, sy: 0, sw: -100, sh: 100 }, maxOutputPixels: 1e6 },
    );
    const { data: px, info } = await sharp(out).raw().toBuffer({ resolveWithObject: true });
    expect([info.width, info.height]).toEqual([100, 100]);
    // Region x 50..150 flipped: dark half (x 50..99) ends up on the right.
    expect(px[10 * info.width * info.channels + 5 * info.channels]).toBeGreaterThan(200);
    expect(px[10 * info.width * info.channels + 95 * info.channels]).toBeLessThan(50);
  });

  it('encodes WebP', async () => {
    const out = await encodeImage(img, { mediaType: 'image/webp', maxOutputPixels: 1e6 });
    expect(await sharp(out).metadata()).toMatchObject({ format: 'webp', width: 200, height: 100 });
  });

  it('refuses a viewport larger than the output limit', async () => {
    await expect(
      encodeImage(img, { mediaType: 'image/jpeg', viewport: { vw: 5000, vh: 5000 }, maxOutputPixels: 1e6 }),
    ).rejects.toThrow(BadRequestError);
  });

  it('never enlarges when asked not to (thumbnails of tiny images)', async () => {
    const out = await encodeImage(
      { width: 16, height: 16, channels: 1, data: new Uint8Array(256) },
      {
        mediaType: 'image/jpeg',
        viewport: { vw: 128, vh: 128 },
        maxOutputPixels: 1e6,
        withoutEnlargement: true,
      },
    );
    expect(await sharp(out).metadata()).toMatchObject({ width: 16, height: 16 });
  });
});

describe('renderNativeFrame (native words straight to 8 bits)', () => {
  /** A deterministic pseudo-random frame of `n` words, every bit set somewhere (padding bits above High Bit too). */
  function words(n: number, bytesPerWord: 1 | 2, seed: number): Uint8Array {
    const out = new Uint8Array(n * bytesPerWord + 1).subarray(1); // odd offset: the unaligned path as well
    let x = seed;
    for (let i = 0; i < out.length; i++) {
      x = (Math.imul(x, 1103515245) + 12345) >>> 0;
      out[i] = x >>> 24;
    }
    return out;
  }
  const layouts: Array<Partial<PixelDescription>> = [
    { bitsAllocated: 16, bitsStored: 16, highBit: 15 },
    { bitsAllocated: 16, bitsStored: 12, highBit: 11 },
    { bitsAllocated: 16, bitsStored: 12, highBit: 11, signed: true },
    { bitsAllocated: 16, bitsStored: 16, highBit: 15, signed: true },
    { bitsAllocated: 16, bitsStored: 10, highBit: 13 },
    { bitsAllocated: 16, bitsStored: 10, highBit: 13, signed: true, photometric: 'MONOCHROME1' },
    { bitsAllocated: 8, bitsStored: 8, highBit: 7 },
    { bitsAllocated: 8, bitsStored: 6, highBit: 5, photometric: 'MONOCHROME1' },
    { bitsAllocated: 8, bitsStored: 8, highBit: 7, signed: true },
  ];
  const presentations: FramePresentation[] = [
    identity,
    { rescaleSlope: 1, rescaleIntercept: -1024, windows: [] },
    { rescaleSlope: 0.5, rescaleIntercept: 10, windows: [{ center: 40, width: 400, fn: 'linear' }] },
    { rescaleSlope: 1, rescaleIntercept: 0, windows: [{ center: 100, width: 50, fn: 'sigmoid' }] },
  ];

  it('answers exactly what decodeNativeFrame then toDisplayImage answer, for every grey layout and window', () => {
    let cases = 0;
    for (const [i, layout] of layouts.entries()) {
      const px = mono16({ rows: 7, columns: 9, ...layout });
      const bytes = words(63, px.bitsAllocated === 8 ? 1 : 2, i + 1);
      for (const pres of presentations) {
        for (const window of [undefined, { center: 0, width: 30, fn: 'linear-exact' as const }]) {
          const expected = toDisplayImage(decodeNativeFrame(bytes, px), px, pres, { window });
          const got = renderNativeFrame(bytes, px, pres, { window });
          expect({ ...got, data: Array.from(got.data) }).toEqual({
            ...expected,
            data: Array.from(expected.data),
          });
          cases++;
        }
      }
    }
    expect(cases).toBe(layouts.length * presentations.length * 2);
  });

  it('takes the general path for colour and refuses a short frame', () => {
    const rgb = mono16({
      samplesPerPixel: 3,
      photometric: 'RGB',
      bitsAllocated: 8,
      bitsStored: 8,
      highBit: 7,
    });
    const bytes = Buffer.from([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    expect(Array.from(renderNativeFrame(bytes, rgb, identity).data)).toEqual(Array.from(bytes));
    expect(() => renderNativeFrame(Buffer.alloc(6), mono16(), identity)).toThrow(UnrecoverableInputError);
  });
});

describe('shrinkToCover (thumbnail box average on the decode thread)', () => {
  /** The mean of each block computed directly, one output pixel at a time. */
  function reference(data: Uint8Array, width: number, height: number, channels: number, f: number): number[] {
    const out: number[] = [];
    for (let oy = 0; oy < Math.ceil(height / f); oy++) {
      for (let ox = 0; ox < Math.ceil(width / f); ox++) {
        for (let c = 0; c < channels; c++) {
          let sum = 0;
          let n = 0;
          for (let y = oy * f; y < Math.min(height, (oy + 1) * f); y++) {
            for (let x = ox * f; x < Math.min(width, (ox + 1) * f); x++) {
              sum += data[(y * width + x) * channels + c];
              n++;
            }
          }
          out.push(Math.round(sum / n));
        }
      }
    }
    return out;
  }

  it('averages whole-factor blocks (edge blocks over the pixels they hold), grey and colour', () => {
    let seed = 7;
    const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 256;
    for (const [width, height, channels, box, factor] of [
      [512, 512, 1, 128, 4],
      [37, 23, 1, 5, 4],
      [30, 41, 3, 7, 4],
      [2560, 2048, 1, 128, 16],
    ] as const) {
      const data = Uint8Array.from({ length: width * height * channels }, rand);
      const got = shrinkToCover({ width, height, channels, data }, { width: box, height: box });
      expect(got.width).toBe(Math.ceil(width / factor));
      expect(got.height).toBe(Math.ceil(height / factor));
      expect(got.channels).toBe(channels);
      // Still covers the box, so the encoder only ever shrinks what is left.
      expect(Math.min(got.width, got.height)).toBeGreaterThanOrEqual(Math.min(box, Math.min(width, height)));
      expect(Array.from(got.data)).toEqual(reference(data, width, height, channels, factor));
    }
  });

  it('leaves an image alone when no factor of 2 fits the box', () => {
    const img = { width: 200, height: 150, channels: 1 as const, data: new Uint8Array(200 * 150) };
    expect(shrinkToCover(img, { width: 128, height: 128 })).toBe(img);
  });
});
