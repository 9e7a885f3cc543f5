/**
 * Transfer syntaxes the in-process codecs handle, and what their decoded output looks like.
 * Kept free of Koa, sharp and the WebAssembly modules so that both the HTTP process and the decode threads load it.
 */

import type { PixelDescription } from '../dicom/render';
import { TransferSyntax } from '../dicom/transfer-syntax';

/** Which library decodes a syntax. */
export type CodecFamily = 'jpeg-dct' | 'jpeg-lossless' | 'jpeg-ls' | 'j2k' | 'htj2k' | 'rle';

const FAMILY: Record<string, CodecFamily> = {
  [TransferSyntax.jpegBaseline]: 'jpeg-dct',
  [TransferSyntax.jpegExtended]: 'jpeg-dct',
  [TransferSyntax.jpegLosslessP14]: 'jpeg-lossless',
  [TransferSyntax.jpegLosslessSv1]: 'jpeg-lossless',
  [TransferSyntax.jpegLsLossless]: 'jpeg-ls',
  [TransferSyntax.jpegLsNearLossless]: 'jpeg-ls',
  [TransferSyntax.jpeg2000Lossless]: 'j2k',
  [TransferSyntax.jpeg2000]: 'j2k',
  [TransferSyntax.jpeg2000Part2Lossless]: 'j2k',
  [TransferSyntax.jpeg2000Part2]: 'j2k',
  [TransferSyntax.htj2kLossless]: 'htj2k',
  [TransferSyntax.htj2kLosslessRpcl]: 'htj2k',
  [TransferSyntax.htj2k]: 'htj2k',
  [TransferSyntax.rleLossless]: 'rle',
};

/** The codec family of a compressed transfer syntax, or undefined when no in-process decoder exists. */
export function codecFamily(transferSyntaxUid: string): CodecFamily | undefined {
  return FAMILY[transferSyntaxUid.trim()];
}

/** True when frames stored in this syntax can be decoded in-process. */
export function isDecodableSyntax(transferSyntaxUid: string): boolean {
  return codecFamily(transferSyntaxUid) !== undefined;
}

/** The part of the Image Pixel module a codec needs: one frame's layout (PixelDescription without High Bit and count). */
export type CodecPixels = Omit<PixelDescription, 'highBit' | 'numberOfFrames'>;

/** A decoded frame: native little-endian sample words of Bits Allocated, pixel-interleaved. */
export interface DecodedFrame {
  pixels: Uint8Array;
  /**
   * Photometric interpretation of `pixels`. Decoders that undo a colour transform (JPEG baseline YCbCr, JPEG 2000
   * ICT/RCT) answer RGB although the data set says YBR_FULL_422, YBR_ICT or YBR_RCT (PS3.5 §8.2).
   */
  photometric: string;
  /** Set when the decoder stopped at a lower resolution level (JPEG 2000 and HTJ2K thumbnails): the image's size. */
  rows?: number;
  columns?: number;
}

/** Bytes one decoded frame occupies: rows × columns × samples × whole bytes of Bits Allocated. */
export function decodedFrameBytes(
  px: Pick<CodecPixels, 'rows' | 'columns' | 'samplesPerPixel' | 'bitsAllocated'>,
): number {
  return px.rows * px.columns * px.samplesPerPixel * Math.ceil(px.bitsAllocated / 8);
}

/**
 * True when the view spans the whole of its own (non-shared) ArrayBuffer, so handing that buffer to another thread
 * moves nothing else. Tested by tag, not instanceof, so buffers made in another realm (a vm context) qualify.
 */
export function ownsBuffer(view: Uint8Array): boolean {
  return (
    Object.prototype.toString.call(view.buffer) === '[object ArrayBuffer]' &&
    view.byteOffset === 0 &&
    view.buffer.byteLength === view.byteLength
  );
}
