/**
 * `npm run contact-sheet [out.png]`: renders frame 1 of every image sample in ../shared/dicom-samples through the
 * gateway's own pipeline (src/codecs decoders on the thread pool, then dicom/render with the data set's window or the
 * frame's value range) into one PNG grid, each tile labelled with its file and transfer syntax, so a person can check
 * orientation, windowing and colour at a glance. Default output: docs/contact-sheet.png.
 */
import dcmjs from 'dcmjs';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import sharp from 'sharp';
import { CodecPool } from '../src/codecs';
import { nativeFrameSpan } from '../src/dicom/bulk';
import type { DicomJson } from '../src/dicom/json';
import {
  decodeNativeFrame,
  describePixels,
  type DisplayImage,
  framePresentation,
  paletteChannel,
  type PaletteLut,
  type StoredFrame,
  toDisplayImage,
} from '../src/dicom/render';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? resolve(__dirname, '../../shared/dicom-samples');
const OUT = resolve(process.argv[2] ?? join(__dirname, '../docs/contact-sheet.png'));
const TILE = 160;
const LABEL = 28;
const COLUMNS = 8;
const NATIVE = new Set([
  '1.2.840.10008.1.2',
  '1.2.840.10008.1.2.1',
  '1.2.840.10008.1.2.2',
  '1.2.840.10008.1.2.1.99',
]);

function files(dir = ''): string[] {
  return readdirSync(join(SAMPLES, dir)).flatMap((name) => {
    const rel = dir ? `${dir}/${name}` : name;
    return statSync(join(SAMPLES, rel)).isDirectory()
      ? files(rel)
      : rel.startsWith('malformed/')
        ? []
        : [rel];
  });
}

function palette(dict: DicomJson): PaletteLut | undefined {
  const ch = (d: string, t: string) => {
    const v = dict[t]?.Value?.[0] as ArrayBuffer | undefined;
    return v ? paletteChannel((dict[d]?.Value ?? []).map(Number), new Uint8Array(v)) : undefined;
  };
  const red = ch('00281101', '00281201');
  const green = ch('00281102', '00281202');
  const blue = ch('00281103', '00281203');
  return red && green && blue ? { red, green, blue } : undefined;
}

const escape = (t: string) => t.replace(/[<>&]/g, (c) => `&#${c.charCodeAt(0)};`);

async function tile(pool: CodecPool, file: string): Promise<Buffer | undefined> {
  const buf = readFileSync(join(SAMPLES, file));
  let d;
  try {
    d = dcmjs.data.DicomMessage.readFile(
      buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer,
    );
  } catch {
    return undefined;
  }
  const dict = d.dict as unknown as DicomJson;
  const pd = d.dict['7FE00010'];
  if (!pd?.Value?.length || !d.dict['00280010']) return undefined;
  const ts = String(d.meta['00020010'].Value?.[0]);
  const px = describePixels(dict);
  const fragments = (pd.Value as ArrayBuffer[]).map((f) => new Uint8Array(f));
  let label = `${file.split('/').pop()} ${ts.replace('1.2.840.10008.', '')}`;
  let image: DisplayImage;
  try {
    let frame: StoredFrame;
    if (NATIVE.has(ts)) {
      const bytes = fragments[0].slice(0, nativeFrameSpan(px));
      if (ts === '1.2.840.10008.1.2.2' && px.bitsAllocated === 16)
        for (let k = 0; k + 1 < bytes.length; k += 2) [bytes[k], bytes[k + 1]] = [bytes[k + 1], bytes[k]];
      frame = decodeNativeFrame(bytes, px);
    } else {
      const parts =
        px.numberOfFrames > 1 && fragments.length === px.numberOfFrames ? fragments.slice(0, 1) : fragments;
      const bytes = Buffer.concat(parts);
      const decoded = await pool.decodeFrame(bytes, ts, px);
      frame = decodeNativeFrame(decoded.pixels, {
        ...px,
        photometric: decoded.photometric,
        planarConfiguration: 0,
      });
    }
    image = toDisplayImage(frame, px, framePresentation(dict, 1), { palette: palette(dict) });
  } catch (err) {
    label = `${file.split('/').pop()}: ${(err as Error).message}`.slice(0, 60);
    image = { width: 1, height: 1, channels: 1, data: new Uint8Array([40]) };
  }
  const picture = await sharp(Buffer.from(image.data), {
    raw: { width: image.width, height: image.height, channels: image.channels },
  })
    .resize(TILE, TILE - LABEL, { fit: 'contain', background: '#000' })
    .png()
    .toBuffer();
  const text = `<svg width="${TILE}" height="${LABEL}"><text x="3" y="11" font-size="9" font-family="sans-serif" fill="#ddd">${escape(label.slice(0, 34))}</text><text x="3" y="23" font-size="9" font-family="sans-serif" fill="#ddd">${escape(label.slice(34, 68))}</text></svg>`;
  return sharp({ create: { width: TILE, height: TILE, channels: 3, background: '#000' } })
    .composite([
      { input: picture, top: 0, left: 0 },
      { input: Buffer.from(text), top: TILE - LABEL, left: 0 },
    ])
    .png()
    .toBuffer();
}

async function main(): Promise<void> {
  const pool = new CodecPool({ threads: 2, queue: 256, maxFrameBytes: 256 * 1024 ** 2 });
  try {
    const tiles: Buffer[] = [];
    for (const file of files().sort()) {
      const t = await tile(pool, file);
      if (t) tiles.push(t);
    }
    const rows = Math.ceil(tiles.length / COLUMNS);
    await sharp({ create: { width: COLUMNS * TILE, height: rows * TILE, channels: 3, background: '#222' } })
      .composite(
        tiles.map((input, k) => ({ input, left: (k % COLUMNS) * TILE, top: Math.floor(k / COLUMNS) * TILE })),
      )
      .png({ compressionLevel: 9 })
      .toFile(OUT);
    console.log(`${tiles.length} samples rendered to ${OUT}`);
  } finally {
    await pool.close();
  }
}

void main();
