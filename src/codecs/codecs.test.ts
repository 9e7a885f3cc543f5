import { spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import dcmjs from 'dcmjs';
import sharp from 'sharp';
import { ServiceBusyError, UnrecoverableInputError } from '../errors';
import { CodecPool, threadExecArgv } from './pool';
import { GATEWAY_NODE_FLAGS } from '../../tools/gateway-node-flags';
import { TransferSyntax } from '../dicom/transfer-syntax';
import { type CodecPixels, decodedFrameBytes } from './syntaxes';
import { decodeNativeFrame, toDisplayImage } from '../dicom/render';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../../shared/dicom-samples');

/** Frame 1 of a sample, read with dcmjs (an independent parser), and its pixel description. */
function sample(file: string): { ts: string; frame: Uint8Array; px: CodecPixels } {
  const buf = readFileSync(join(SAMPLES, file));
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length);
  const d = dcmjs.data.DicomMessage.readFile(ab);
  const ts = String(d.meta['00020010'].Value?.[0]);
  const v = (tag: string) => d.dict[tag]?.Value?.[0] as number | string | undefined;
  const frames = Number(v('00280008') ?? 1);
  const fragments = (d.dict['7FE00010'].Value as ArrayBuffer[]).map((f) => new Uint8Array(f));
  // A single frame spans all fragments; the multi-frame samples used here hold one fragment per frame.
  const parts = frames === 1 ? fragments : fragments.slice(0, 1);
  const frame = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    frame.set(p, o);
    o += p.length;
  }
  return {
    ts,
    frame: ts.startsWith('1.2.840.10008.1.2.4') || ts === TransferSyntax.rleLossless ? frame : fragments[0],
    px: {
      rows: Number(v('00280010')),
      columns: Number(v('00280011')),
      samplesPerPixel: Number(v('00280002') ?? 1),
      bitsAllocated: Number(v('00280100')),
      bitsStored: Number(v('00280101')),
      signed: Number(v('00280103')) === 1,
      photometric: String(v('00280004')).trim(),
      planarConfiguration: Number(v('00280006') ?? 0),
    },
  };
}

const MB = 1024 ** 2;
let pool: CodecPool;
beforeAll(() => {
  pool = new CodecPool({ threads: 2, queue: 16, maxFrameBytes: 64 * MB });
});
afterAll(() => pool.close());

describe('decodeFrame on the decode threads', () => {
  it.each([
    ['ct/CT-MONO2-16-chest_jpeg-lossless-sv1.dcm'],
    ['ct/CT1_J2KI_jpeg2000.dcm'],
    ['ct/CT2_JLSN_jpegls-near.dcm'],
    ['cr/RG3_J2KI_jpeg2000.dcm'],
    ['mr/MR-MONO2-12-shoulder_jpeg-lossless-p14.dcm'],
    ['sc/SC_rgb_dcmtk_jpeg-baseline-ybr.dcm'],
    ['sc/SC_rgb_jpeg_gdcm_jpeg-lossless-sv1.dcm'],
    ['sc/SC_rgb_rle_2frame.dcm'],
    ['us/US-Philips-3EAF5680_jpeg-baseline.dcm'],
    ['us/US1_J2KR_jpeg2000-lossless.dcm'],
    ['us/examples_ybr_color_multiframe-jpeg.dcm'],
    ['us/OBXXXX1A_rle_2frame_palette.dcm'],
    ['fragments/HTJ2KLossless_08_RGB_no-patient-study.dcm'],
  ])('%s decodes to the declared size', async (file) => {
    const { ts, frame, px } = sample(file);
    const out = await pool.decodeFrame(frame, ts, px);
    expect(out.pixels.length).toBe(decodedFrameBytes(px));
    // Not a blank image: a decoder that silently fails answers zeros.
    expect(out.pixels.some((b) => b !== 0)).toBe(true);
    if (px.samplesPerPixel === 3 && /JPEG-BASELINE|J2K|HTJ2K/i.test(file))
      expect(out.photometric).toBe('RGB');
  });

  it('the lossless encodings of MR_small decode to the same stored values as the native file', async () => {
    const native = sample('mr/MR_small.dcm');
    for (const file of [
      'mr/MR_small_RLE.dcm',
      'mr/MR_small_jp2klossless.dcm',
      'mr/MR_small_jpeg_ls_lossless.dcm',
    ]) {
      const { ts, frame, px } = sample(file);
      const out = await pool.decodeFrame(frame, ts, px);
      expect(
        Buffer.from(out.pixels).equals(Buffer.from(native.frame.subarray(0, decodedFrameBytes(px)))),
      ).toBe(true);
    }
  });

  it('a corrupt JPEG 2000 codestream is a 422, not a crash, and the pool keeps working', async () => {
    const bad = sample('malformed/JPEG2000-embedded-sequence-delimiter.dcm');
    await expect(pool.decodeFrame(bad.frame, bad.ts, bad.px)).rejects.toBeInstanceOf(UnrecoverableInputError);
    const good = sample('ct/CT1_J2KI_jpeg2000.dcm');
    await expect(pool.decodeFrame(good.frame, good.ts, good.px)).resolves.toBeDefined();
  });

  it('a codestream whose size differs from the data set is refused before decoding', async () => {
    const { ts, frame, px } = sample('ct/CT2_JLSN_jpegls-near.dcm');
    await expect(pool.decodeFrame(frame, ts, { ...px, rows: 256 })).rejects.toThrow(/512 x 512/);
  });

  it('decodes 12-bit JPEG extended (process 4) to the samples DCMTK decodes', async () => {
    const { ts, frame, px } = sample('mr/MR1_JPLY_jpeg-extended-12bit.dcm');
    const out = await pool.decodeFrame(frame, ts, px);
    expect(out.pixels.length).toBe(512 * 512 * 2);
    // SHA-256 of the Pixel Data `dcmdjpeg` (DCMTK 3.6.7, Debian) writes for this file: the same 262,144 samples.
    expect(createHash('sha256').update(out.pixels).digest('hex')).toBe(
      '5da33a3a0886b8c2690426077e164a80e5ebc153b75d6f882ffde642a451a13d',
    );
    // 12-bit colour DCT is refused with the reason, not guessed at.
    const rgb = { ...px, samplesPerPixel: 3, photometric: 'YBR_FULL_422' };
    await expect(pool.decodeFrame(frame, ts, rgb)).rejects.toThrow(/codestream|12-bit/);
  });

  it('a frame larger than the decode limit is refused before it reaches a thread', async () => {
    const small = new CodecPool({ threads: 1, queue: 1, maxFrameBytes: MB });
    try {
      const { ts, frame, px } = sample('mr/MR-MONO2-12-shoulder_jpeg-lossless-p14.dcm');
      await expect(small.decodeFrame(frame, ts, px)).rejects.toBeInstanceOf(UnrecoverableInputError);
      expect(small.stats.threads).toBe(0);
    } finally {
      await small.close();
    }
  });

  it('a full queue answers 503 with Retry-After instead of queueing without bound', async () => {
    const tiny = new CodecPool({ threads: 1, queue: 1, maxFrameBytes: 64 * MB });
    try {
      const { ts, frame, px } = sample('cr/RG3_J2KI_jpeg2000.dcm');
      const results = await Promise.allSettled(
        Array.from({ length: 6 }, () => tiny.decodeFrame(frame, ts, px)),
      );
      const busy = results
        .filter((r) => r.status === 'rejected')
        .map((r) => (r as PromiseRejectedResult).reason);
      expect(busy.length).toBeGreaterThan(0);
      for (const err of busy) {
        expect(err).toBeInstanceOf(ServiceBusyError);
        expect((err as ServiceBusyError).status).toBe(503);
        expect((err as ServiceBusyError).headers['Retry-After']).toBeDefined();
      }
      expect(results.some((r) => r.status === 'fulfilled')).toBe(true);
    } finally {
      await tiny.close();
    }
  });
});

describe('encodeFrame (pixel cleaning)', () => {
  it.each([
    ['mr/MR_small_RLE.dcm', TransferSyntax.rleLossless],
    ['mr/MR_small_jp2klossless.dcm', TransferSyntax.jpeg2000Lossless],
    ['mr/MR_small_jpeg_ls_lossless.dcm', TransferSyntax.jpegLsLossless],
    ['ct/CT1_J2KI_jpeg2000.dcm', TransferSyntax.jpegLsLossless],
    ['sc/SC_rgb_rle_2frame.dcm', TransferSyntax.rleLossless],
    ['us/US-Philips-3EAF5680_jpeg-baseline.dcm', TransferSyntax.jpegLsLossless],
  ])('%s: blacked-out pixels re-encode losslessly (to %s)', async (file, target) => {
    const { ts, frame, px } = sample(file);
    const decoded = await pool.decodeFrame(frame, ts, px);
    const cleaned = decoded.pixels.slice();
    cleaned.fill(0, 0, Math.floor(cleaned.length / 4)); // the burned-in region
    const encoded = await pool.encodeFrame(cleaned, ts, { ...px, photometric: decoded.photometric });
    expect(encoded.transferSyntaxUid).toBe(target);
    const again = await pool.decodeFrame(encoded.frame, encoded.transferSyntaxUid, {
      ...px,
      photometric: decoded.photometric,
    });
    expect(Buffer.from(again.pixels).equals(Buffer.from(cleaned))).toBe(true);
  });
});

describe('renderFrame (the presentation pipeline on the decode threads)', () => {
  const mono16 = {
    rows: 64,
    columns: 64,
    samplesPerPixel: 1,
    bitsAllocated: 16,
    bitsStored: 12,
    highBit: 11,
    signed: false,
    photometric: 'MONOCHROME2',
    planarConfiguration: 0,
    numberOfFrames: 1,
  };
  const presentation = { rescaleSlope: 1, rescaleIntercept: -1024, windows: [] };

  it('gives the pixels the in-process pipeline gives, and takes the frame memory with it (a transfer)', async () => {
    const words = new Uint16Array(64 * 64);
    // High bits set on purpose: they lie outside Bits Stored and must be masked away.
    for (let i = 0; i < words.length; i++) words[i] = ((i * 37) % 4096) | 0xf000;
    const expected = toDisplayImage(
      decodeNativeFrame(new Uint8Array(words.buffer.slice(0)), mono16),
      mono16,
      {
        ...presentation,
        windows: [{ center: 40, width: 400, fn: 'linear' }],
      },
    );
    const frame = new Uint8Array(words.buffer);
    const image = await pool.renderFrame(frame, TransferSyntax.explicitVrLittleEndian, {
      px: mono16,
      presentation,
      window: { center: 40, width: 400, fn: 'linear' },
    });
    expect(image).toMatchObject({ width: 64, height: 64, channels: 1 });
    expect(Buffer.from(image.data).equals(Buffer.from(expected.data))).toBe(true);
    // The caller's buffer went to the thread rather than being copied.
    expect(frame.byteLength).toBe(0);
  });

  it('decodes a compressed frame first: lossless JPEG 2000 MR renders as the native MR does', async () => {
    const native = sample('mr/MR_small.dcm');
    const j2k = sample('mr/MR_small_jp2klossless.dcm');
    const px = { ...native.px, highBit: native.px.bitsStored - 1, numberOfFrames: 1 };
    const a = await pool.renderFrame(native.frame.slice(), native.ts, { px, presentation });
    const b = await pool.renderFrame(j2k.frame.slice(), j2k.ts, { px, presentation });
    expect(Buffer.from(a.data).equals(Buffer.from(b.data))).toBe(true);
  });

  it('refuses a short frame with a 422, not a thread crash', async () => {
    await expect(
      pool.renderFrame(new Uint8Array(10), TransferSyntax.explicitVrLittleEndian, {
        px: mono16,
        presentation,
      }),
    ).rejects.toBeInstanceOf(UnrecoverableInputError);
  });
});

describe('reduced-resolution decoding for thumbnails (JPEG 2000, HTJ2K)', () => {
  /** Mean absolute difference of two 8-bit images after sharp scales both to w x h (independent of our resize). */
  async function meanDiffAt(
    a: { data: Uint8Array; width: number; height: number; channels: 1 | 3 },
    b: { data: Uint8Array; width: number; height: number; channels: 1 | 3 },
    w: number,
  ): Promise<number> {
    const scale = (img: typeof a) =>
      sharp(Buffer.from(img.data), { raw: { width: img.width, height: img.height, channels: img.channels } })
        .resize(w, w, { fit: 'fill' })
        .raw()
        .toBuffer();
    const [x, y] = await Promise.all([scale(a), scale(b)]);
    let d = 0;
    for (let i = 0; i < x.length; i++) d += Math.abs(x[i] - y[i]);
    return d / x.length;
  }

  it.each([
    ['cr/RG3_J2KI_jpeg2000.dcm', 128, 220, 3],
    ['fragments/HTJ2KLossless_08_RGB_no-patient-study.dcm', 64, 160, 6],
  ])(
    '%s: stops at the level that still covers %d px and looks like the full decode',
    async (file, box, side, limit) => {
      const s = sample(file);
      const px = { ...s.px, highBit: s.px.bitsStored - 1, numberOfFrames: 1 };
      // The CR's own window (a window from the frame's range would make it decode at full resolution, below).
      const windows = px.samplesPerPixel === 1 ? [{ center: 550, width: 1024, fn: 'linear' as const }] : [];
      const presentation = { rescaleSlope: 1, rescaleIntercept: 0, windows };
      const full = await pool.renderFrame(s.frame.slice(), s.ts, { px, presentation });
      const reduced = await pool.renderFrame(s.frame.slice(), s.ts, {
        px,
        presentation,
        reduceTo: { width: box, height: box },
      });
      expect(reduced.width).toBeGreaterThanOrEqual(box);
      expect(reduced.height).toBeGreaterThanOrEqual(box);
      expect(reduced.width).toBeLessThan(full.width);
      expect(reduced.width).toBe(side);
      expect(reduced.data.length).toBe(reduced.width * reduced.height * reduced.channels);
      // Same picture at thumbnail size. The wavelet low-pass and sharp's resize differ on hard edges only: a CR within
      // ~2 grey levels on average (measured 2.1), the RGB screen capture's sharp text within ~5 (measured 4.6).
      expect(await meanDiffAt(full, reduced, box)).toBeLessThan(limit);
    },
  );

  it('decodes a grey frame windowed over its own range at full resolution for a thumbnail', async () => {
    // Smoothing at a lower resolution level narrows the range, so the thumbnail's contrast would differ.
    const s = sample('cr/RG3_J2KI_jpeg2000.dcm');
    const px = { ...s.px, highBit: s.px.bitsStored - 1, numberOfFrames: 1 };
    const presentation = { rescaleSlope: 1, rescaleIntercept: 0, windows: [] };
    const full = await pool.renderFrame(s.frame.slice(), s.ts, { px, presentation });
    const reduced = await pool.renderFrame(s.frame.slice(), s.ts, {
      px,
      presentation,
      reduceTo: { width: 128, height: 128 },
    });
    // Full resolution, not the 220 of the level-3 decode (a frame this large is shrunk by libvips, not box-averaged).
    expect([full.width, reduced.width, reduced.height]).toEqual([1760, 1760, 1760]);
    expect(Buffer.from(reduced.data).equals(Buffer.from(full.data))).toBe(true);
  });
});

describe('codec threads in a process started with the gateway flags', () => {
  it('drops per-process V8 heap options from the threads (Node refuses a Worker that names them)', () => {
    expect(
      threadExecArgv([
        '--max-old-space-size=256',
        '--import',
        'tsx',
        '--max-semi-space-size',
        '64',
        '--inspect',
      ]),
    ).toEqual(['--import', 'tsx', '--inspect']);
  });

  it('decodes a frame in a gateway-flagged Node process', () => {
    // The pool as `npm start`, the demo and the benches run it: this module under tsx, with GATEWAY_NODE_FLAGS.
    const { ts, frame, px } = sample('ct/CT2_JLSN_jpegls-near.dcm');
    const script = `
      const { CodecPool } = require(${JSON.stringify(join(__dirname, 'pool.ts'))});
      const pool = new CodecPool({ threads: 1, queue: 4, maxFrameBytes: 64 << 20 });
      const frame = new Uint8Array(Buffer.from(${JSON.stringify(Buffer.from(frame).toString('base64'))}, 'base64'));
      pool.decodeFrame(frame, ${JSON.stringify(ts)}, ${JSON.stringify(px)})
        .then(() => pool.close())
        .catch((err) => { console.error(err.message); process.exit(1); });`;
    const r = spawnSync(process.execPath, [...GATEWAY_NODE_FLAGS, '--require', 'tsx/cjs', '-e', script], {
      cwd: join(__dirname, '../..'),
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stderr).not.toMatch(/invalid execArgv/);
    expect(r.status).toBe(0);
  });
});
