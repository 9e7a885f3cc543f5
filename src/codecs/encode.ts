/**
 * Lossless re-encoding for the pixel-cleaning step of de-identification: after burned-in regions are blacked out
 * in decoded pixels, the frame goes back into the syntax it came in when that syntax is lossless and an encoder
 * exists (RLE, JPEG-LS lossless, JPEG 2000 lossless); any other source syntax is re-encoded to JPEG-LS lossless, so
 * the cleaning itself never adds a lossy step. The caller keeps Lossy Image Compression (0028,2110) and its method
 * and ratio as they were (PS3.3 C.7.6.1.1.5: once lossy, always lossy) and declares the returned syntax.
 */
import { CodecInputError } from './errors';
import { encodeRle } from './rle';
import { TransferSyntax } from '../dicom/transfer-syntax';
import { type CodecPixels, decodedFrameBytes } from './syntaxes';
import { wasm } from './wasm';

/** A re-encoded frame and the transfer syntax to declare for it. */
export interface EncodedFrame {
  frame: Uint8Array;
  transferSyntaxUid: string;
}

/** The syntax a cleaned frame stored in `transferSyntaxUid` is written back in. */
export function reencodeTarget(transferSyntaxUid: string): string {
  const ts = transferSyntaxUid.trim();
  if (
    ts === TransferSyntax.rleLossless ||
    ts === TransferSyntax.jpeg2000Lossless ||
    ts === TransferSyntax.jpegLsLossless
  ) {
    return ts;
  }
  return TransferSyntax.jpegLsLossless;
}

function frameInfo(px: CodecPixels) {
  return {
    width: px.columns,
    height: px.rows,
    bitsPerSample: px.bitsAllocated === 8 ? 8 : px.bitsStored,
    componentCount: px.samplesPerPixel,
    isSigned: px.signed,
  };
}

/**
 * Encodes native little-endian, pixel-interleaved samples (as decodeFrame answers them) losslessly, in the syntax
 * `reencodeTarget(sourceSyntax)` names. Colour frames must be RGB or YBR_FULL (not subsampled).
 */
export function encodeFrameSync(native: Uint8Array, sourceSyntax: string, px: CodecPixels): EncodedFrame {
  if (native.length < decodedFrameBytes(px))
    throw new CodecInputError('frame holds fewer bytes than declared');
  if (px.bitsAllocated !== 8 && px.bitsAllocated !== 16) {
    throw new CodecInputError(`cannot encode Bits Allocated ${px.bitsAllocated}`);
  }
  const target = reencodeTarget(sourceSyntax);
  const bytes = native.subarray(0, decodedFrameBytes(px));
  if (target === TransferSyntax.rleLossless)
    return { frame: encodeRle(bytes, px), transferSyntaxUid: target };
  if (target === TransferSyntax.jpeg2000Lossless) {
    const enc = new (wasm().openjpeg.J2KEncoder)();
    try {
      enc.getDecodedBuffer(frameInfo(px)).set(bytes);
      enc.setQuality(true, 0);
      enc.setDecompositions(
        Math.max(0, Math.min(5, Math.floor(Math.log2(Math.min(px.rows, px.columns))) - 1)),
      );
      enc.encode();
      return { frame: enc.getEncodedBuffer().slice(), transferSyntaxUid: target };
    } finally {
      enc.delete();
    }
  }
  const enc = new (wasm().charls.JpegLSEncoder)();
  try {
    enc.getDecodedBuffer(frameInfo(px)).set(bytes);
    enc.setNearLossless(0);
    // Sample interleaved, matching the pixel-interleaved input.
    if (px.samplesPerPixel === 3) enc.setInterleaveMode(2);
    enc.encode();
    return { frame: enc.getEncodedBuffer().slice(), transferSyntaxUid: target };
  } finally {
    enc.delete();
  }
}
