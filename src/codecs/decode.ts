/**
 * Synchronous frame decoders, one per codec family. Run on the decode threads (worker.ts), never on the HTTP event
 * loop. Every decoder reads the size the codestream declares first and refuses a mismatch with the data set before
 * the library allocates, then converts the output to native words of Bits Allocated, pixel-interleaved.
 */
import { checkHeader, readJ2kDecompositions, readJ2kHeader, readJpegHeader } from './headers';
import { CodecInputError } from './errors';
import { wasm } from './wasm';
import { decodeRle } from './rle';
import { codecFamily, type CodecPixels, type DecodedFrame, decodedFrameBytes } from './syntaxes';
import { Decoder as JpegLosslessDecoder } from 'jpeg-lossless-decoder-js';
import { Context as DcmjsCodecContext } from 'dcmjs-codecs';

/** Widens or copies decoded samples into native little-endian words of Bits Allocated. */
function toAllocated(samples: Uint8Array, bytesPerSample: 1 | 2, px: CodecPixels): Uint8Array {
  const count = px.rows * px.columns * px.samplesPerPixel;
  if (samples.length < count * bytesPerSample)
    throw new CodecInputError('decoder returned fewer samples than declared');
  if (px.bitsAllocated === 8) {
    if (bytesPerSample !== 1) throw new CodecInputError('decoded precision exceeds Bits Allocated 8');
    return samples.slice(0, count);
  }
  if (px.bitsAllocated !== 16)
    throw new CodecInputError(`cannot decode to Bits Allocated ${px.bitsAllocated}`);
  if (bytesPerSample === 2) return samples.slice(0, count * 2);
  const out = new Uint8Array(count * 2);
  for (let i = 0; i < count; i++) out[2 * i] = samples[i];
  return out;
}

/** Planar (R… G… B…) to interleaved (RGB RGB …) samples of one byte or one 16-bit word. */
function interleave(planar: Uint8Array, pixels: number, bytesPerSample: number): Uint8Array {
  const out = new Uint8Array(planar.length);
  for (let p = 0; p < pixels; p++) {
    for (let c = 0; c < 3; c++) {
      const src = (c * pixels + p) * bytesPerSample;
      const dst = (p * 3 + c) * bytesPerSample;
      for (let b = 0; b < bytesPerSample; b++) out[dst + b] = planar[src + b];
    }
  }
  return out;
}

function bytesFor(bits: number): 1 | 2 {
  if (bits > 16) throw new CodecInputError(`codestream precision ${bits} is above 16 bits`);
  return bits > 8 ? 2 : 1;
}

function decodeJpegDct(frame: Uint8Array, px: CodecPixels): DecodedFrame {
  const h = readJpegHeader(frame);
  checkHeader(h, px);
  if (h.precision === 12) return decodeJpeg12(frame, px);
  if (h.precision !== 8)
    throw new CodecInputError(
      `cannot decode ${h.precision}-bit JPEG (DCT) frames: T.81 allows 8 and 12 bits`,
    );
  const dec = new (wasm().libjpegTurbo.JPEGDecoder)();
  try {
    dec.getEncodedBuffer(frame.length).set(frame);
    dec.decode();
    const info = dec.getFrameInfo();
    checkHeader(
      { rows: info.height, columns: info.width, components: info.componentCount, precision: 8 },
      px,
    );
    const pixels = toAllocated(dec.getDecodedBuffer(), 1, px);
    // libjpeg converts YCbCr to RGB on output (its default output colour space for three components).
    return { pixels, photometric: px.samplesPerPixel === 3 ? 'RGB' : px.photometric };
  } finally {
    dec.delete();
  }
}

/**
 * 12-bit DCT (JPEG Extended, process 4: 1.2.840.10008.1.2.4.51). libjpeg-turbo's WebAssembly build is 8-bit only;
 * dcmjs-codecs carries a libjpeg built for 12-bit samples. Grey only: 12-bit colour DCT is not used in DICOM, and an
 * unverified colour conversion would be worse than a clear refusal.
 */
function decodeJpeg12(frame: Uint8Array, px: CodecPixels): DecodedFrame {
  if (px.samplesPerPixel !== 1)
    throw new CodecInputError('cannot decode 12-bit JPEG (DCT) colour frames in-process');
  if (px.bitsAllocated !== 16)
    throw new CodecInputError(`12-bit JPEG frames need Bits Allocated 16, not ${px.bitsAllocated}`);
  let decoded: Uint8Array | undefined;
  try {
    const ctx = new DcmjsCodecContext({
      width: px.columns,
      height: px.rows,
      bitsAllocated: 16,
      bitsStored: px.bitsStored,
      samplesPerPixel: 1,
      pixelRepresentation: px.signed ? 1 : 0,
      planarConfiguration: 0,
      photometricInterpretation: px.photometric,
      encodedBuffer: frame,
    });
    decoded = wasm().dcmjsCodecs.decodeJpeg(ctx, { convertColorspaceToRgb: false }).getDecodedBuffer();
  } catch (err) {
    throw new CodecInputError(`12-bit JPEG frame could not be decoded: ${(err as Error).message}`);
  }
  if (!decoded) throw new CodecInputError('12-bit JPEG frame could not be decoded');
  // 16-bit little-endian words, as the data set's Bits Allocated 16 wants them.
  return { pixels: toAllocated(decoded, 2, px), photometric: px.photometric };
}

function decodeJpegLossless(frame: Uint8Array, px: CodecPixels): DecodedFrame {
  const h = readJpegHeader(frame);
  checkHeader(h, px);
  const bytes = new Uint8Array(frame); // the decoder keeps a DataView on the whole buffer it is given
  let out: Uint8Array | Uint16Array;
  try {
    out = new JpegLosslessDecoder().decode(bytes.buffer, 0, bytes.length);
  } catch (err) {
    throw new CodecInputError(`JPEG lossless frame could not be decoded: ${(err as Error).message}`);
  }
  const raw = new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  return { pixels: toAllocated(raw, out instanceof Uint16Array ? 2 : 1, px), photometric: px.photometric };
}

function decodeJpegLs(frame: Uint8Array, px: CodecPixels): DecodedFrame {
  const h = readJpegHeader(frame);
  checkHeader(h, px);
  const dec = new (wasm().charls.JpegLSDecoder)();
  try {
    dec.getEncodedBuffer(frame.length).set(frame);
    dec.decode();
    const info = dec.getFrameInfo();
    const size = bytesFor(info.bitsPerSample);
    let samples = dec.getDecodedBuffer();
    // Interleave mode 0 (none) decodes component by component.
    if (info.componentCount === 3 && dec.getInterleaveMode() === 0)
      samples = interleave(samples, px.rows * px.columns, size);
    return { pixels: toAllocated(samples, size, px), photometric: px.photometric };
  } catch (err) {
    if (err instanceof CodecInputError) throw err;
    throw new CodecInputError(`JPEG-LS frame could not be decoded: ${String(err)}`);
  } finally {
    dec.delete();
  }
}

/** JPEG 2000 with a multiple component transform yields RGB; without one the stored colour space is kept. */
function j2kPhotometric(px: CodecPixels): string {
  return px.photometric === 'YBR_ICT' || px.photometric === 'YBR_RCT' ? 'RGB' : px.photometric;
}

/** The smallest image a caller needs: decoding may stop at a resolution level that still covers it. */
export interface ReduceTo {
  width: number;
  height: number;
}

/**
 * The deepest JPEG 2000 / HTJ2K resolution level whose image still covers `reduceTo` (0 = full resolution). Each
 * level halves both sides (rounded up), and decoding stops there: a 128-pixel thumbnail of a 1760-pixel CR decodes
 * about 3 % of the samples.
 */
function reductionLevel(frame: Uint8Array, px: CodecPixels, reduceTo: ReduceTo): number {
  let level = 0;
  // Read from the codestream: OpenJPEG's decoder only knows the count once it has decoded.
  const levels = readJ2kDecompositions(frame);
  while (
    level < levels &&
    Math.ceil(px.columns / 2 ** (level + 1)) >= reduceTo.width &&
    Math.ceil(px.rows / 2 ** (level + 1)) >= reduceTo.height
  ) {
    level++;
  }
  return level;
}

/** What OpenJPEG's J2KDecoder and OpenJPH's HTJ2KDecoder have in common (Embind classes of the same shape). */
interface WaveletDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  getDecodedBuffer(): Uint8Array;
  decode(): void;
  decodeSubResolution(decodeLevel: number, decodeLayer: number): void;
  calculateSizeAtDecompositionLevel(decodeLevel: number): { width: number; height: number };
  getFrameInfo(): { width: number; bitsPerSample: number; isUsingColorTransform?: boolean };
  delete(): void;
}

function decodeJ2k(frame: Uint8Array, px: CodecPixels, reduceTo?: ReduceTo): DecodedFrame {
  return decodeWavelet(new (wasm().openjpeg.J2KDecoder)(), 'JPEG 2000', frame, px, reduceTo);
}

function decodeHtj2k(frame: Uint8Array, px: CodecPixels, reduceTo?: ReduceTo): DecodedFrame {
  return decodeWavelet(new (wasm().openjph.HTJ2KDecoder)(), 'HTJ2K', frame, px, reduceTo);
}

/**
 * JPEG 2000 and HTJ2K: the whole image, or (given reduceTo) only the resolution levels a smaller target needs. A
 * decoder that reports a colour transform (OpenJPH) yields RGB; otherwise see j2kPhotometric.
 */
function decodeWavelet(
  dec: WaveletDecoder,
  name: string,
  frame: Uint8Array,
  px: CodecPixels,
  reduceTo?: ReduceTo,
): DecodedFrame {
  try {
    checkHeader(readJ2kHeader(frame), px);
    dec.getEncodedBuffer(frame.length).set(frame);
    const level = reduceTo ? reductionLevel(frame, px, reduceTo) : 0;
    let size: { width: number; height: number } | undefined;
    if (level > 0) {
      dec.decodeSubResolution(level, 0);
      size = dec.calculateSizeAtDecompositionLevel(level);
    } else dec.decode();
    const info = dec.getFrameInfo();
    const samples = dec.getDecodedBuffer();
    if (!info.width || samples.length === 0)
      throw new CodecInputError(`${name} codestream could not be decoded`);
    const photometric = info.isUsingColorTransform ? 'RGB' : j2kPhotometric(px);
    if (!size) return { pixels: toAllocated(samples, bytesFor(info.bitsPerSample), px), photometric };
    const reduced = { ...px, rows: size.height, columns: size.width };
    return {
      pixels: toAllocated(samples, bytesFor(info.bitsPerSample), reduced),
      photometric,
      rows: size.height,
      columns: size.width,
    };
  } catch (err) {
    if (err instanceof CodecInputError) throw err;
    throw new CodecInputError(`${name} frame could not be decoded: ${String(err)}`);
  } finally {
    dec.delete();
  }
}

/**
 * Decodes one compressed frame (all of its fragments, concatenated) to native pixel bytes. Throws CodecInputError for
 * frames that can never decode; the caller has already bounded the decoded size (see pool.ts).
 */
export function decodeFrameSync(
  frame: Uint8Array,
  transferSyntaxUid: string,
  px: CodecPixels,
  reduceTo?: ReduceTo,
): DecodedFrame {
  const family = codecFamily(transferSyntaxUid);
  switch (family) {
    case 'jpeg-dct':
      return decodeJpegDct(frame, px);
    case 'jpeg-lossless':
      return decodeJpegLossless(frame, px);
    case 'jpeg-ls':
      return decodeJpegLs(frame, px);
    case 'j2k':
      return decodeJ2k(frame, px, reduceTo);
    case 'htj2k':
      return decodeHtj2k(frame, px, reduceTo);
    case 'rle': {
      const pixels = decodeRle(frame, px);
      if (pixels.length !== decodedFrameBytes(px))
        throw new CodecInputError('RLE frame size differs from the declared size');
      return { pixels, photometric: px.photometric };
    }
    default:
      throw new CodecInputError(`no decoder for transfer syntax ${transferSyntaxUid}`);
  }
}
