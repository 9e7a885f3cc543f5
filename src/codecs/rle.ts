/**
 * RLE Lossless (PS3.5 Annex G): decoder and encoder. Small enough to write here; no library is needed.
 */
import { CodecInputError } from './errors';
import type { CodecPixels } from './syntaxes';

type RlePixels = Pick<CodecPixels, 'rows' | 'columns' | 'samplesPerPixel' | 'bitsAllocated'>;

/**
 * Decodes one RLE frame into native little-endian bytes with interleaved samples. Segments hold one byte of one
 * sample each, most significant byte first (G.2); they are scattered into place as they are read.
 */
export function decodeRle(frame: Uint8Array, px: RlePixels): Uint8Array {
  if (frame.length < 64) throw new CodecInputError('RLE frame is shorter than its header');
  const view = new DataView(frame.buffer, frame.byteOffset, frame.length);
  const segments = view.getUint32(0, true);
  const bytesPerSample = px.bitsAllocated / 8;
  if (
    !Number.isInteger(bytesPerSample) ||
    segments !== px.samplesPerPixel * bytesPerSample ||
    segments > 15
  ) {
    throw new CodecInputError('RLE frame has an unexpected number of segments');
  }
  const n = px.rows * px.columns;
  const stride = px.samplesPerPixel * bytesPerSample;
  const out = new Uint8Array(n * stride);
  for (let s = 0; s < segments; s++) {
    const start = view.getUint32(4 + 4 * s, true);
    const end = s + 1 < segments ? view.getUint32(8 + 4 * s, true) : frame.length;
    if (start < 64 || end > frame.length || end < start)
      throw new CodecInputError('RLE segment offsets are invalid');
    const sample = Math.floor(s / bytesPerSample);
    const byteInSample = bytesPerSample - 1 - (s % bytesPerSample);
    let o = sample * bytesPerSample + byteInSample;
    let written = 0;
    let i = start;
    while (i < end && written < n) {
      const header = (frame[i++] << 24) >> 24;
      if (header >= 0) {
        for (let k = 0; k <= header && i < end && written < n; k++, written++, o += stride)
          out[o] = frame[i++];
      } else if (header !== -128) {
        const value = frame[i++];
        for (let k = 0; k <= -header && written < n; k++, written++, o += stride) out[o] = value;
      }
    }
    if (written < n) throw new CodecInputError('RLE segment ends before the frame is complete');
  }
  return out;
}

/** PackBits one byte plane (G.3.1): runs of 2+ equal bytes as replicate runs, the rest as literal runs. */
function packBits(plane: Uint8Array): Uint8Array {
  const out = new Uint8Array(plane.length + Math.ceil(plane.length / 128) + 1);
  let o = 0;
  let i = 0;
  const n = plane.length;
  while (i < n) {
    let run = 1;
    while (i + run < n && run < 128 && plane[i + run] === plane[i]) run++;
    if (run >= 2) {
      out[o++] = (257 - run) & 0xff;
      out[o++] = plane[i];
      i += run;
      continue;
    }
    const start = i;
    let len = 0;
    while (i < n && len < 128) {
      if (i + 1 < n && plane[i + 1] === plane[i]) break;
      i++;
      len++;
    }
    out[o++] = len - 1;
    out.set(plane.subarray(start, start + len), o);
    o += len;
  }
  // Segments are of even length (G.4).
  if (o % 2) out[o++] = 0x80;
  return out.subarray(0, o);
}

/** Encodes native little-endian interleaved samples as one RLE frame. */
export function encodeRle(native: Uint8Array, px: RlePixels): Uint8Array {
  const bytesPerSample = px.bitsAllocated / 8;
  const segments = px.samplesPerPixel * bytesPerSample;
  if (!Number.isInteger(bytesPerSample) || segments > 15)
    throw new CodecInputError('cannot RLE-encode this pixel layout');
  const n = px.rows * px.columns;
  const stride = segments;
  if (native.length < n * stride) throw new CodecInputError('frame holds fewer bytes than declared');
  const encoded: Uint8Array[] = [];
  const plane = new Uint8Array(n);
  for (let s = 0; s < segments; s++) {
    const sample = Math.floor(s / bytesPerSample);
    const byteInSample = bytesPerSample - 1 - (s % bytesPerSample);
    const off = sample * bytesPerSample + byteInSample;
    for (let p = 0; p < n; p++) plane[p] = native[p * stride + off];
    encoded.push(packBits(plane));
  }
  const total = 64 + encoded.reduce((sum, e) => sum + e.length, 0);
  const out = new Uint8Array(total);
  const view = new DataView(out.buffer);
  view.setUint32(0, segments, true);
  let offset = 64;
  encoded.forEach((e, s) => {
    view.setUint32(4 + 4 * s, offset, true);
    out.set(e, offset);
    offset += e.length;
  });
  return out;
}
