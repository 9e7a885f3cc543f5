/**
 * Reads the image size a codestream declares before any decoder allocates for it, so a few hundred bytes that claim
 * 65535 × 65535 are refused instead of exhausting the decoder's memory.
 */
import { CodecInputError } from './errors';

/** Size and precision declared by a codestream's frame header. */
export interface CodestreamHeader {
  rows: number;
  columns: number;
  components: number;
  precision: number;
}

/**
 * The frame header (SOFn, ITU-T T.81 B.2.2; SOF55 of JPEG-LS, T.87 C.2.2) of a JPEG family codestream. Marker
 * segments are walked from SOI; entropy-coded data only starts after SOS, which always follows the frame header.
 */
export function readJpegHeader(data: Uint8Array): CodestreamHeader {
  if (data.length < 4 || data[0] !== 0xff || data[1] !== 0xd8)
    throw new CodecInputError('frame is not a JPEG codestream');
  let i = 2;
  while (i + 4 <= data.length) {
    if (data[i] !== 0xff) throw new CodecInputError('JPEG marker segments are corrupt');
    const marker = data[i + 1];
    if (marker === 0xff) {
      i++; // fill byte
      continue;
    }
    const length = (data[i + 2] << 8) | data[i + 3];
    const isSof =
      (marker >= 0xc0 && marker <= 0xcf && marker !== 0xc4 && marker !== 0xc8 && marker !== 0xcc) ||
      marker === 0xf7;
    if (isSof) {
      if (i + 10 > data.length) break;
      return {
        precision: data[i + 4],
        rows: (data[i + 5] << 8) | data[i + 6],
        columns: (data[i + 7] << 8) | data[i + 8],
        components: data[i + 9],
      };
    }
    if (marker === 0xda || length < 2) break;
    i += 2 + length;
  }
  throw new CodecInputError('JPEG codestream has no frame header');
}

/** Checks a declared codestream size against the data set before decoding. */
export function checkHeader(
  h: CodestreamHeader,
  px: { rows: number; columns: number; samplesPerPixel: number; bitsAllocated: number },
): void {
  if (h.rows !== px.rows || h.columns !== px.columns) {
    throw new CodecInputError(
      `codestream is ${h.columns} x ${h.rows}, the data set declares ${px.columns} x ${px.rows}`,
    );
  }
  if (h.components !== px.samplesPerPixel) {
    throw new CodecInputError(
      `codestream has ${h.components} components, the data set declares ${px.samplesPerPixel} samples per pixel`,
    );
  }
  if (h.precision > px.bitsAllocated) {
    throw new CodecInputError(
      `codestream precision ${h.precision} exceeds Bits Allocated ${px.bitsAllocated}`,
    );
  }
}

/**
 * The image and tile sizes of a JPEG 2000 / HTJ2K codestream (SIZ marker, ITU-T T.800 A.5.1), read directly: the
 * decoders' own header calls report nothing until they have decoded. A JP2 file wrapper is skipped to its codestream.
 */
export function readJ2kHeader(data: Uint8Array): CodestreamHeader {
  let i = 0;
  const limit = Math.min(data.length - 1, 4096);
  while (
    i < limit &&
    !(data[i] === 0xff && data[i + 1] === 0x4f && data[i + 2] === 0xff && data[i + 3] === 0x51)
  )
    i++;
  if (i >= limit || i + 42 > data.length) throw new CodecInputError('JPEG 2000 codestream has no SIZ header');
  const view = new DataView(data.buffer, data.byteOffset + i + 4, data.length - i - 4);
  const xsiz = view.getUint32(4);
  const ysiz = view.getUint32(8);
  const xosiz = view.getUint32(12);
  const yosiz = view.getUint32(16);
  const csiz = view.getUint16(36);
  if (xsiz <= xosiz || ysiz <= yosiz || csiz === 0 || 38 + 3 * csiz > view.byteLength) {
    throw new CodecInputError('JPEG 2000 codestream header is corrupt');
  }
  let precision = 0;
  for (let c = 0; c < csiz; c++) precision = Math.max(precision, (view.getUint8(38 + 3 * c) & 0x7f) + 1);
  return { rows: ysiz - yosiz, columns: xsiz - xosiz, components: csiz, precision };
}

/**
 * Decomposition levels of a JPEG 2000 / HTJ2K codestream, from the main header's COD segment (ISO 15444-1 A.6.1:
 * marker, Lcod, Scod, SGcod of 4 bytes, then the number of levels). 0 when no COD is found before the first tile,
 * which makes callers decode at full resolution.
 */
export function readJ2kDecompositions(data: Uint8Array): number {
  let p = 0;
  const limit = Math.min(data.length - 4, 65536);
  while (p < limit && !(data[p] === 0xff && data[p + 1] === 0x4f)) p++;
  p += 2;
  while (p + 4 <= limit && data[p] === 0xff) {
    const marker = data[p + 1];
    if (marker === 0x90 || marker === 0x93) return 0; // SOT / SOD: the main header ended without a COD
    const length = (data[p + 2] << 8) | data[p + 3];
    if (marker === 0x52) return length >= 10 && p + 9 < data.length ? data[p + 9] : 0;
    if (length < 2) return 0;
    p += 2 + length;
  }
  return 0;
}
