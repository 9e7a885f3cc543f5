/**
 * Attaching an ICC profile to an encoded JPEG or PNG without touching its pixels (PS3.18 §8.3.5.1.5 `iccprofile=yes`:
 * the rendered image carries the profile of the instance, ICC Profile (0028,2000), whose colour space its pixels are
 * in). sharp can only attach a profile by transforming into it from sRGB, which would change the colours.
 */
import { crc32, deflateSync } from 'node:zlib';

/** ICC.1 Annex B.4: a JPEG carries a profile in APP2 segments tagged "ICC_PROFILE", at most 65519 bytes of it each. */
const JPEG_ICC_CHUNK = 65519;

/** Inserts the profile as APP2 segments right after SOI (and after a JFIF APP0, which must come first). */
export function attachIccToJpeg(jpeg: Buffer, icc: Uint8Array): Buffer {
  if (jpeg[0] !== 0xff || jpeg[1] !== 0xd8) throw new Error('not a JPEG stream');
  let at = 2;
  if (jpeg[2] === 0xff && jpeg[3] === 0xe0) at = 4 + jpeg.readUInt16BE(4);
  const count = Math.ceil(icc.length / JPEG_ICC_CHUNK);
  if (count > 255) throw new Error('ICC profile too large for JPEG');
  const segments: Buffer[] = [];
  for (let i = 0; i < count; i++) {
    const part = icc.subarray(i * JPEG_ICC_CHUNK, (i + 1) * JPEG_ICC_CHUNK);
    const head = Buffer.alloc(18);
    head[0] = 0xff;
    head[1] = 0xe2;
    head.writeUInt16BE(2 + 14 + part.length, 2);
    head.write('ICC_PROFILE\0', 4, 'latin1');
    head[16] = i + 1;
    head[17] = count;
    segments.push(head, Buffer.from(part));
  }
  return Buffer.concat([jpeg.subarray(0, at), ...segments, jpeg.subarray(at)]);
}

function pngChunk(type: string, data: Buffer): Buffer {
  const out = Buffer.alloc(12 + data.length);
  out.writeUInt32BE(data.length, 0);
  out.write(type, 4, 'latin1');
  data.copy(out, 8);
  out.writeUInt32BE(crc32(out.subarray(4, 8 + data.length)), 8 + data.length);
  return out;
}

/** Inserts an iCCP chunk (PNG §11.3.3.3: name, 0, compression method 0, zlib data) after IHDR; drops sRGB/gAMA rivals. */
export function attachIccToPng(png: Buffer, icc: Uint8Array, name = 'DICOM ICC profile'): Buffer {
  if (png.readUInt32BE(0) !== 0x89504e47) throw new Error('not a PNG stream');
  const chunks: Buffer[] = [png.subarray(0, 8)];
  let p = 8;
  while (p + 12 <= png.length) {
    const length = png.readUInt32BE(p);
    const type = png.toString('latin1', p + 4, p + 8);
    const chunk = png.subarray(p, p + 12 + length);
    if (type !== 'iCCP' && type !== 'sRGB') chunks.push(chunk);
    if (type === 'IHDR') {
      chunks.push(pngChunk('iCCP', Buffer.concat([Buffer.from(`${name}\0\0`, 'latin1'), deflateSync(icc)])));
    }
    p += 12 + length;
  }
  return Buffer.concat(chunks);
}
