/**
 * Bulk data and frame helpers for WADO-RS: relative BulkDataURI paths, frame lists, and a streaming reader that
 * takes native frames out of an Explicit VR Little Endian Part-10 stream without holding the object in memory.
 *
 * Pure module: streams in, bytes out; no HTTP, no database.
 */
import type { Readable } from 'node:stream';
import type { DicomJson } from './json';

const TAG = '[0-9A-Fa-f]{8}';
const BULK_PATH_RE = new RegExp(`^${TAG}(/\\d{1,6}/${TAG})*$`);

/** A relative BulkDataURI (as the index stores it: `7FE00010`, `00540016/0/00181078`) taken apart. */
export interface BulkDataPath {
  /** The relative URI in the index's spelling (upper-case tags). */
  relative: string;
  /** Where the element sits in the DICOM JSON model: ['00540016', 'Value', '0', '00181078']. */
  jsonPath: string[];
  /** True for top-level (7FE0,0010), (7FE0,0008) or (7FE0,0009): served as frames, not as one value. */
  isPixelData: boolean;
}

/** Parses a relative BulkDataURI path; undefined when it is not one this gateway writes. */
export function parseBulkDataPath(path: string): BulkDataPath | undefined {
  if (!BULK_PATH_RE.test(path)) return undefined;
  const segs = path.toUpperCase().split('/');
  const jsonPath: string[] = [];
  segs.forEach((s, i) => {
    if (i % 2 === 0) {
      jsonPath.push(s);
    } else {
      const index = String(Number.parseInt(s, 10));
      jsonPath.push('Value', index);
    }
  });
  return {
    relative: segs.join('/'),
    jsonPath,
    isPixelData: segs.length === 1 && /^7FE000(08|09|10)$/.test(segs[0]),
  };
}

/**
 * Makes the index's relative BulkDataURIs of a DICOM JSON data set absolute under `prefix` (the instance's URL and
 * `/bulk/`), in nested items too; URIs that already carry a scheme are kept. Elements are replaced, not changed,
 * so values shared with the index row stay as they were.
 */
export function absoluteBulkDataUris(ds: DicomJson, prefix: string): void {
  for (const [tag, el] of Object.entries(ds)) {
    if (el.BulkDataURI !== undefined && !/^[a-z]+:/i.test(el.BulkDataURI)) {
      ds[tag] = { ...el, BulkDataURI: `${prefix}${el.BulkDataURI}` };
    } else if (el.vr === 'SQ' && el.Value) {
      ds[tag] = {
        ...el,
        Value: el.Value.map((item) => {
          const copy = { ...(item as DicomJson) };
          absoluteBulkDataUris(copy, prefix);
          return copy;
        }),
      };
    }
  }
}

/**
 * absoluteBulkDataUris on the index's JSON text (PostgreSQL's jsonb output, which the index only ever holds with
 * relative URIs), so that metadata streams without parsing each instance.
 */
export function absoluteBulkDataUrisInText(json: string, prefix: string): string {
  // In JSON text a string value can never contain an unescaped quote, so this key pattern only matches keys.
  return json.includes('"BulkDataURI"')
    ? json.replaceAll('"BulkDataURI": "', `"BulkDataURI": "${prefix}`)
    : json;
}

/**
 * Parses the `{frames}` path segment of PS3.18 §10.4.1.1.6: comma-separated frame numbers, 1-based, in the
 * order the client wants them. Undefined when malformed (→ 400).
 */
export function parseFrameList(s: string): number[] | undefined {
  if (!/^\d{1,9}(,\d{1,9})*$/.test(s)) return undefined;
  const frames = s.split(',').map((f) => Number.parseInt(f, 10));
  if (frames.some((f) => f < 1) || frames.length > 10_000) return undefined;
  return frames;
}

/** The Image Pixel attributes that size one native frame. */
export interface FrameGeometry {
  rows: number;
  columns: number;
  samplesPerPixel: number;
  bitsAllocated: number;
}

/**
 * Bytes that hold one native frame. Frames of bit-packed (1-bit) images need not end on a byte (PS3.5 §8.1.1):
 * the last byte is then partly used, which is what a single frame the archive hands out occupies.
 */
export function nativeFrameSpan(g: FrameGeometry): number {
  return Math.ceil((g.rows * g.columns * g.samplesPerPixel * g.bitsAllocated) / 8);
}

/**
 * Bytes of one native frame, or undefined when the attributes do not give frames that end on a byte: only then
 * can frames be cut out of Pixel Data by byte offsets.
 */
export function nativeFrameBytes(g: FrameGeometry): number | undefined {
  const bits = g.rows * g.columns * g.samplesPerPixel * g.bitsAllocated;
  if (!Number.isSafeInteger(bits) || bits <= 0 || bits % 8 !== 0) return undefined;
  return bits / 8;
}

/** Reads exact byte counts from a stream of chunks. */
class ByteReader {
  private chunks: Buffer[] = [];
  private available = 0;
  private ended = false;
  private readonly it: AsyncIterator<unknown>;

  constructor(source: Readable) {
    this.it = source[Symbol.asyncIterator]();
  }

  private async fill(n: number): Promise<boolean> {
    while (this.available < n && !this.ended) {
      const next = await this.it.next();
      if (next.done) {
        this.ended = true;
        break;
      }
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as Uint8Array);
      this.chunks.push(chunk);
      this.available += chunk.length;
    }
    return this.available >= n;
  }

  /** The next n bytes, or null at a clean end of stream (nothing left). Throws on a truncated stream. */
  async read(n: number): Promise<Buffer | null> {
    if (!(await this.fill(n))) {
      if (this.available === 0) return null;
      throw new TruncatedStreamError();
    }
    const all = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.available);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.available = rest.length;
    return out;
  }

  async readExact(n: number): Promise<Buffer> {
    const b = await this.read(n);
    if (!b) throw new TruncatedStreamError();
    return b;
  }

  async skip(n: number): Promise<void> {
    let left = n;
    while (left > 0) {
      if (this.available === 0 && !(await this.fill(1))) throw new TruncatedStreamError();
      const head = this.chunks[0];
      if (head.length <= left) {
        this.chunks.shift();
        this.available -= head.length;
        left -= head.length;
      } else {
        this.chunks[0] = head.subarray(left);
        this.available -= left;
        left = 0;
      }
    }
  }
}

/** The Part-10 stream ended in the middle of an element. */
export class TruncatedStreamError extends Error {
  constructor() {
    super('DICOM stream ended early');
    this.name = 'TruncatedStreamError';
  }
}

/** The stream is not what the extractor expects (not Part 10, no native Pixel Data, frames out of range). */
export class FrameExtractionError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameExtractionError';
  }
}

const UNDEFINED_LENGTH = 0xffffffff;
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT', 'SV', 'UV']);

/**
 * Takes native frames out of a Part-10 object in Explicit VR Little Endian (what Orthanc's transcoding answers),
 * reading the stream once and holding one frame at a time. `frames` are 1-based and must be ascending; the
 * source is destroyed when the last wanted frame has been read (or on any failure).
 */
export async function* extractNativeFrames(
  source: Readable,
  frameBytes: number,
  frames: readonly number[],
): AsyncGenerator<{ frame: number; data: Buffer }, void, undefined> {
  const r = new ByteReader(source);
  try {
    for (let k = 1; k < frames.length; k++) {
      if (frames[k] <= frames[k - 1]) throw new FrameExtractionError('frames must be ascending');
    }
    const preamble = await r.readExact(132);
    if (preamble.toString('latin1', 128, 132) !== 'DICM')
      throw new FrameExtractionError('not a Part-10 stream');
    // Nesting of undefined-length sequences and items; `implicit` marks VR UN contents (Implicit VR LE, PS3.5 §6.2.2).
    const stack: Array<{ implicit: boolean }> = [];
    for (;;) {
      const head = await r.read(8);
      if (!head) throw new FrameExtractionError('no Pixel Data in the stream');
      const group = head.readUInt16LE(0);
      const element = head.readUInt16LE(2);
      if (group === 0xfffe) {
        const len = head.readUInt32LE(4);
        if (element === 0xe000) {
          if (len === UNDEFINED_LENGTH) stack.push({ implicit: stack[stack.length - 1]?.implicit ?? false });
          else await r.skip(len);
        } else {
          stack.pop(); // item (E00D) or sequence (E0DD) delimitation
        }
        continue;
      }
      const implicit = stack[stack.length - 1]?.implicit ?? false;
      let vr = '';
      let len: number;
      if (implicit) {
        len = head.readUInt32LE(4);
      } else {
        vr = head.toString('latin1', 4, 6);
        len = LONG_VRS.has(vr) ? (await r.readExact(4)).readUInt32LE(0) : head.readUInt16LE(6);
      }
      if (group === 0x7fe0 && element === 0x0010 && stack.length === 0) {
        if (len === UNDEFINED_LENGTH) throw new FrameExtractionError('Pixel Data is encapsulated');
        const count = Math.floor(len / frameBytes);
        let at = 0;
        for (const f of frames) {
          if (f > count) throw new FrameExtractionError('frame number beyond the Pixel Data');
          await r.skip((f - 1) * frameBytes - at);
          yield { frame: f, data: Buffer.from(await r.readExact(frameBytes)) };
          at = f * frameBytes;
        }
        return;
      }
      if (len === UNDEFINED_LENGTH) {
        // A sequence, or UN of undefined length whose contents are Implicit VR LE.
        stack.push({ implicit: implicit || vr === 'UN' });
        continue;
      }
      await r.skip(len);
    }
  } finally {
    source.destroy();
  }
}

/**
 * Passes through bytes [start, end] (inclusive) of a stream, for HTTP Range answers; stops reading (and destroys
 * the source) as soon as the range has been sent.
 */
export async function* sliceStream(source: Readable, start: number, end: number): AsyncGenerator<Buffer> {
  let pos = 0;
  try {
    for await (const c of source) {
      const chunk = Buffer.isBuffer(c) ? c : Buffer.from(c as Uint8Array);
      const from = Math.max(start - pos, 0);
      const to = Math.min(end + 1 - pos, chunk.length);
      pos += chunk.length;
      if (to > from) yield chunk.subarray(from, to);
      if (pos > end) return;
    }
  } finally {
    source.destroy();
  }
}
