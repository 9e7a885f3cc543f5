/**
 * Every image sample, decoded and rendered by the gateway's pipeline (src/codecs on the decode threads, then
 * dicom/render), compared with reference decoders of other code bases run here as peers: DCMTK's dcmj2pnm (its own
 * JPEG, JPEG-LS and RLE codecs, Debian's dcmtk) and, for JPEG 2000 and HTJ2K where Debian's DCMTK has no decoder,
 * OpenJPEG's opj_decompress (libopenjp2-tools) on the extracted codestream. Same frame, same window; both images are
 * reduced to 64 x 64 grey and must agree within MAX_MEAN_ABS_DIFF grey levels on average.
 * Frames are cut out of the files with dcmjs, a parser independent of the gateway's.
 */
import dcmjs from 'dcmjs';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { CodecPool } from '../src/codecs';
import { nativeFrameSpan } from '../src/dicom/bulk';
import type { DicomJson } from '../src/dicom/json';
import {
  decodeNativeFrame,
  defaultWindow,
  describePixels,
  type DisplayImage,
  framePresentation,
  paletteChannel,
  type PaletteLut,
  type StoredFrame,
  toDisplayImage,
  type WindowSpec,
} from '../src/dicom/render';
import { SAMPLES } from './helpers/gateway';

/** Mean absolute difference allowed, in grey levels of 255, between the two 64 x 64 renderings. */
const MAX_MEAN_ABS_DIFF = 2;
const SIDE = 64;
const NATIVE = new Set([
  '1.2.840.10008.1.2',
  '1.2.840.10008.1.2.1',
  '1.2.840.10008.1.2.2',
  '1.2.840.10008.1.2.1.99',
]);
const J2K = /^1\.2\.840\.10008\.1\.2\.4\.(9[0-3]|20[1-3])$/;

interface Sample {
  file: string;
  ts: string;
  dict: DicomJson;
  fragments: Uint8Array[];
  frames: number;
}

function read(file: string): Sample | undefined {
  const buf = readFileSync(join(SAMPLES, file));
  try {
    const d = dcmjs.data.DicomMessage.readFile(
      buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer,
    );
    const pd = d.dict['7FE00010'];
    if (!pd?.Value?.length || !d.dict['00280010']) return undefined;
    const frames = Number((d.dict['00280008']?.Value?.[0] as string | undefined) ?? 1) || 1;
    return {
      file,
      ts: String(d.meta['00020010'].Value?.[0]),
      dict: d.dict as unknown as DicomJson,
      fragments: (pd.Value as ArrayBuffer[]).map((f) => new Uint8Array(f)),
      frames,
    };
  } catch {
    return undefined;
  }
}

/** Image samples: every file with pixel data except the deliberately broken ones. */
function imageSamples(): Sample[] {
  const out: Sample[] = [];
  const walk = (dir: string) => {
    for (const name of readdirSync(join(SAMPLES, dir))) {
      const rel = dir ? `${dir}/${name}` : name;
      if (statSync(join(SAMPLES, rel)).isDirectory()) walk(rel);
      else if (!rel.startsWith('malformed/')) {
        const s = read(rel);
        if (s) out.push(s);
      }
    }
  };
  walk('');
  return out.sort((a, b) => a.file.localeCompare(b.file));
}

/** The frame compared: the last one of a multi-frame object whose fragments are one per frame, else the first. */
function frameOf(s: Sample): { number: number; bytes: Uint8Array } {
  const px = describePixels(s.dict);
  if (NATIVE.has(s.ts)) {
    const size = nativeFrameSpan(px);
    const all = s.fragments[0];
    const number = s.frames > 1 && px.bitsAllocated >= 8 ? s.frames : 1;
    const bytes = all.slice((number - 1) * size, number * size);
    // dcmjs keeps Big Endian words as stored; the archive hands them out little endian, as decodeNativeFrame expects.
    if (s.ts === '1.2.840.10008.1.2.2' && px.bitsAllocated === 16) {
      for (let k = 0; k + 1 < bytes.length; k += 2) [bytes[k], bytes[k + 1]] = [bytes[k + 1], bytes[k]];
    }
    return { number, bytes };
  }
  if (s.frames > 1 && s.fragments.length === s.frames)
    return { number: s.frames, bytes: s.fragments[s.frames - 1] };
  const total = s.fragments.reduce((n, f) => n + f.length, 0);
  const bytes = new Uint8Array(total);
  let o = 0;
  for (const f of s.fragments) {
    bytes.set(f, o);
    o += f.length;
  }
  return { number: 1, bytes };
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

/** Parses a binary PGM (P5) or PPM (P6) as written by dcmj2pnm and opj_decompress. */
function parsePnm(buf: Buffer): {
  width: number;
  height: number;
  channels: 1 | 3;
  maxval: number;
  samples: number[];
} {
  const tokens: string[] = [];
  let i = 0;
  while (tokens.length < 4) {
    while (/\s/.test(String.fromCharCode(buf[i]))) i++;
    if (buf[i] === 0x23) {
      while (buf[i] !== 0x0a) i++;
      continue;
    }
    let t = '';
    while (!/\s/.test(String.fromCharCode(buf[i]))) t += String.fromCharCode(buf[i++]);
    tokens.push(t);
  }
  i++;
  const [magic, w, h, m] = tokens;
  const channels = magic === 'P6' ? 3 : 1;
  const width = Number(w);
  const height = Number(h);
  const maxval = Number(m);
  const n = width * height * channels;
  const samples = new Array<number>(n);
  for (let k = 0; k < n; k++) samples[k] = maxval > 255 ? buf.readUInt16BE(i + 2 * k) : buf[i + k];
  return { width, height, channels, maxval, samples };
}

/** 64 x 64 grey levels of an 8-bit image. */
async function reduce(img: DisplayImage): Promise<Uint8Array> {
  let p = sharp(Buffer.from(img.data.buffer, img.data.byteOffset, img.data.byteLength), {
    raw: { width: img.width, height: img.height, channels: img.channels },
  });
  if (img.channels === 3) p = p.greyscale();
  const out = await p.resize(SIDE, SIDE, { fit: 'fill', kernel: 'linear' }).raw().toBuffer();
  // A grey input stays one channel; a colour one converted to grey may keep three equal channels.
  if (out.length === SIDE * SIDE) return out;
  const g = new Uint8Array(SIDE * SIDE);
  const c = out.length / (SIDE * SIDE);
  for (let k = 0; k < g.length; k++) g[k] = out[k * c];
  return g;
}

function meanAbsDiff(a: Uint8Array, b: Uint8Array): number {
  let d = 0;
  for (let k = 0; k < a.length; k++) d += Math.abs(a[k] - b[k]);
  return d / a.length;
}

const clamp8 = (v: number) => (v < 0 ? 0 : v > 255 ? 255 : Math.round(v));

/** Linear VOI function (PS3.3 C.11.2.1.2.1), stated independently of dicom/render for the OpenJPEG reference. */
function linear(x: number, w: WindowSpec): number {
  const { center: c, width } = w;
  if (w.fn === 'linear-exact')
    return x <= c - width / 2 ? 0 : x > c + width / 2 ? 255 : ((x - c) / width + 0.5) * 255;
  if (x <= c - 0.5 - (width - 1) / 2) return 0;
  if (x > c - 0.5 + (width - 1) / 2) return 255;
  return ((x - (c - 0.5)) / (width - 1) + 0.5) * 255;
}

let pool: CodecPool;
let work: string;
beforeAll(() => {
  pool = new CodecPool({ threads: 2, queue: 64, maxFrameBytes: 256 * 1024 ** 2 });
  work = mkdtempSync(join(tmpdir(), 'decode-ref-'));
});
afterAll(async () => {
  await pool.close();
  rmSync(work, { recursive: true, force: true });
});

const samples = imageSamples();

describe('every image sample decodes and renders like a reference decoder of another code base', () => {
  it('finds the compressed samples of every syntax the archive holds', () => {
    const syntaxes = new Set(samples.map((s) => s.ts));
    for (const ts of [
      '1.2.840.10008.1.2.4.50',
      '1.2.840.10008.1.2.4.51',
      '1.2.840.10008.1.2.4.57',
      '1.2.840.10008.1.2.4.70',
      '1.2.840.10008.1.2.4.80',
      '1.2.840.10008.1.2.4.81',
      '1.2.840.10008.1.2.4.90',
      '1.2.840.10008.1.2.4.91',
      '1.2.840.10008.1.2.4.201',
      '1.2.840.10008.1.2.5',
    ])
      expect(syntaxes).toContain(ts);
  });

  it.each(samples.map((s) => [s.file, s] as const))('%s', async (_file, s) => {
    const px = describePixels(s.dict);
    const { number, bytes } = frameOf(s);
    const pres = framePresentation(s.dict, number);
    let frame: StoredFrame;
    if (NATIVE.has(s.ts)) frame = decodeNativeFrame(bytes, px);
    else {
      const decoded = await pool.decodeFrame(bytes, s.ts, px);
      frame = decodeNativeFrame(decoded.pixels, {
        ...px,
        photometric: decoded.photometric,
        planarConfiguration: 0,
      });
    }
    const window =
      frame.kind === 'gray' ? (pres.windows[0] ?? defaultWindow(frame.values, px, pres)) : undefined;
    const ours = await reduce(toDisplayImage(frame, px, pres, { window, palette: palette(s.dict) }));

    let reference: DisplayImage;
    if (J2K.test(s.ts)) {
      const cs = join(work, 'frame.j2k');
      writeFileSync(cs, bytes);
      const out = join(work, px.samplesPerPixel === 3 ? 'ref.ppm' : 'ref.pgm');
      execFileSync('opj_decompress', ['-quiet', '-i', cs, '-o', out], { stdio: 'ignore' });
      const pnm = parsePnm(readFileSync(out));
      const data = new Uint8Array(pnm.samples.length);
      if (px.samplesPerPixel === 3)
        for (let k = 0; k < data.length; k++) data[k] = pnm.samples[k] * (255 / pnm.maxval);
      else {
        // OpenJPEG writes signed components shifted up by half their range.
        const shift = px.signed ? 2 ** (px.bitsStored - 1) : 0;
        for (let k = 0; k < data.length; k++) {
          const v = (pnm.samples[k] - shift) * pres.rescaleSlope + pres.rescaleIntercept;
          const y = clamp8(linear(v, window!));
          data[k] = px.photometric === 'MONOCHROME1' ? 255 - y : y;
        }
      }
      reference = { width: pnm.width, height: pnm.height, channels: pnm.channels, data };
    } else {
      const out = join(work, 'ref.pnm');
      const args = ['--frame', String(number), '--write-raw-pnm'];
      if (window) args.push('--set-window', String(window.center), String(window.width));
      let input = join(SAMPLES, s.file);
      if (/^1\.2\.840\.10008\.1\.2\.4\.8[01]$/.test(s.ts)) {
        // Debian's dcmj2pnm has no JPEG-LS decoder: DCMTK's dcmdjpls decompresses first.
        const plain = join(work, 'jls.dcm');
        execFileSync('dcmdjpls', [input, plain], { stdio: 'ignore' });
        input = plain;
      }
      execFileSync('dcmj2pnm', [...args, input, out], { stdio: 'ignore' });
      const pnm = parsePnm(readFileSync(out));
      reference = {
        width: pnm.width,
        height: pnm.height,
        channels: pnm.channels,
        data: Uint8Array.from(pnm.samples),
      };
    }
    expect([reference.width, reference.height]).toEqual([px.columns, px.rows]);
    const mad = meanAbsDiff(ours, await reduce(reference));
    expect(mad).toBeLessThan(MAX_MEAN_ABS_DIFF);
  });
});
