/**
 * Explicit VR Little Endian out of an encapsulated (compressed) instance, decoded in-process (PS3.18 §8.7.3: the
 * default transfer syntax of instance retrieval), for what the archive cannot transcode itself (Orthanc 1.10 in
 * Debian's build has no JPEG 2000 or HTJ2K decoder).
 *
 * The stored file is read only up to its top-level Pixel Data: encapsulated syntaxes encode the data set in Explicit
 * VR Little Endian already, so everything before Pixel Data is copied as is (but for the few attributes that describe
 * the decoded pixels). The frames come through the archive's one frame fetch and are decoded on the codec pool one at
 * a time, as Retrieve Frames decodes them, so that an instance and its frames agree and memory holds one frame.
 */
import { Readable } from 'node:stream';
import type { CodecPool } from '../codecs';
import { nativeFrameBytes } from '../dicom/bulk';
import type { PixelDescription } from '../dicom/render';
import { ITEM, ITEM_DELIM, LONG_VRS, SEQ_DELIM, UNDEFINED } from '../dicom/structure';
import { TransferSyntax } from '../dicom/transfer-syntax';
import { NotAcceptableError, UnrecoverableInputError } from '../errors';
import type { RetrievableInstance } from '../index-db/wado';
import type { Archive, ArchiveStream } from '../orthanc/archive';
import { fetchStoredFrame } from './render';

const ELE = TransferSyntax.explicitVrLittleEndian;
const PIXEL_DATA = 0x7fe00010;
const PHOTOMETRIC = 0x00280004;
const PLANAR_CONFIGURATION = 0x00280006;
const LOSSY_IMAGE_COMPRESSION = 0x00282110;
const META_GROUP_LENGTH = 0x00020000;
const META_TRANSFER_SYNTAX = 0x00020010;

/**
 * Most bytes read ahead of Pixel Data. The data set before the pixels is the metadata, which ingest bounds too; 64 MiB
 * holds the per-frame functional groups of the largest Enhanced objects, and bounds what one retrieval holds.
 */
export const MAX_HEADER_BYTES = 64 * 1024 ** 2;

/** Lossy syntaxes: an object decoded out of one must keep saying it was lossy compressed (PS3.3 C.7.6.1.1.5). */
const LOSSY = new Set([
  '1.2.840.10008.1.2.4.50',
  '1.2.840.10008.1.2.4.51',
  '1.2.840.10008.1.2.4.81',
  '1.2.840.10008.1.2.4.91',
  '1.2.840.10008.1.2.4.93',
  '1.2.840.10008.1.2.4.203',
]);

const NEED_MORE = -1;
/** Deeper than ingest's structure limit allows (16), so only a corrupted store reaches it. */
const MAX_DEPTH = 64;

class Cursor {
  constructor(readonly b: Buffer) {}
  has(pos: number, n: number): boolean {
    return pos + n <= this.b.length;
  }
  tag(pos: number): number {
    return ((this.b.readUInt16LE(pos) << 16) | this.b.readUInt16LE(pos + 2)) >>> 0;
  }
}

/** End of the element at `pos` (explicit or implicit VR LE), or NEED_MORE when it is not all in the buffer yet. */
function elementEnd(c: Cursor, pos: number, explicit: boolean, depth: number): number {
  if (depth > MAX_DEPTH) throw new UnrecoverableInputError('the stored object nests too deep to rewrite');
  if (!c.has(pos, 8)) return NEED_MORE;
  let length: number;
  let valueAt: number;
  let vr = '';
  if (explicit) {
    vr = c.b.toString('latin1', pos + 4, pos + 6);
    if (LONG_VRS.has(vr)) {
      if (!c.has(pos, 12)) return NEED_MORE;
      length = c.b.readUInt32LE(pos + 8);
      valueAt = pos + 12;
    } else {
      length = c.b.readUInt16LE(pos + 6);
      valueAt = pos + 8;
    }
  } else {
    length = c.b.readUInt32LE(pos + 4);
    valueAt = pos + 8;
  }
  if (length !== UNDEFINED) return c.has(valueAt, length) ? valueAt + length : NEED_MORE;
  // Undefined length: a sequence, or UN holding one in Implicit VR (PS3.5 §6.2.2).
  return itemsEnd(c, valueAt, explicit && vr !== 'UN', depth + 1);
}

/** End of a sequence's items, after its Sequence Delimitation Item. */
function itemsEnd(c: Cursor, pos: number, explicit: boolean, depth: number): number {
  for (;;) {
    if (!c.has(pos, 8)) return NEED_MORE;
    const tag = c.tag(pos);
    const length = c.b.readUInt32LE(pos + 4);
    if (tag === SEQ_DELIM) return pos + 8;
    if (tag !== ITEM) throw new UnrecoverableInputError('the stored object has a malformed sequence');
    if (length !== UNDEFINED) {
      if (!c.has(pos + 8, length)) return NEED_MORE;
      pos += 8 + length;
      continue;
    }
    pos += 8;
    for (;;) {
      if (!c.has(pos, 8)) return NEED_MORE;
      if (c.tag(pos) === ITEM_DELIM) {
        pos += 8;
        break;
      }
      const end = elementEnd(c, pos, explicit, depth);
      if (end === NEED_MORE) return NEED_MORE;
      pos = end;
    }
  }
}

interface TopElement {
  tag: number;
  start: number;
  end: number;
}

/** The stored file's top-level layout up to Pixel Data. */
interface StoredHeader {
  buf: Buffer;
  meta: TopElement[];
  dataset: TopElement[];
}

/**
 * Reads the stored file up to its top-level Pixel Data, then stops reading: the encapsulated pixels themselves are not
 * needed. Bytes collect in a buffer that doubles as it fills, and the walk (which resumes after the last whole
 * top-level element) is retried only when the bytes held have doubled, so that a long header costs linear time.
 */
async function readHeader(file: ArchiveStream): Promise<StoredHeader> {
  let buf = Buffer.alloc(256 * 1024);
  let size = 0;
  let retryAt = 0;
  const meta: TopElement[] = [];
  const dataset: TopElement[] = [];
  let pos = 132;
  let inMeta = true;
  const walk = (): StoredHeader | undefined => {
    if (size < 132) return undefined;
    if (buf.toString('latin1', 128, 132) !== 'DICM') {
      throw new UnrecoverableInputError('the stored object is not a DICOM Part 10 file');
    }
    const c = new Cursor(buf.subarray(0, size));
    for (;;) {
      if (!c.has(pos, 4)) return undefined;
      const tag = c.tag(pos);
      if (inMeta && tag >>> 16 !== 0x0002) inMeta = false;
      if (!inMeta && tag === PIXEL_DATA) {
        if (!c.has(pos, 12)) return undefined;
        if (c.b.readUInt32LE(pos + 8) !== UNDEFINED) {
          throw new UnrecoverableInputError('the stored Pixel Data is not encapsulated');
        }
        return { buf: buf.subarray(0, pos), meta, dataset };
      }
      const end = elementEnd(c, pos, true, 0);
      if (end === NEED_MORE) return undefined;
      (inMeta ? meta : dataset).push({ tag, start: pos, end });
      pos = end;
    }
  };
  try {
    for await (const chunk of file.body) {
      const bytes = chunk as Buffer;
      if (size + bytes.length > buf.length) {
        const grown = Buffer.alloc(Math.max(buf.length * 2, size + bytes.length));
        buf.copy(grown, 0, 0, size);
        buf = grown;
      }
      bytes.copy(buf, size);
      size += bytes.length;
      if (size < retryAt && size < MAX_HEADER_BYTES) continue;
      const header = walk();
      if (header) return header;
      if (size >= MAX_HEADER_BYTES) {
        throw new UnrecoverableInputError('the data set before Pixel Data is too large to rewrite');
      }
      retryAt = Math.min(size * 2, MAX_HEADER_BYTES);
    }
    const header = walk();
    if (header) return header;
  } finally {
    file.body.destroy();
  }
  throw new UnrecoverableInputError('the stored object has no Pixel Data');
}

/** One explicit VR LE element, its value padded to even length with `pad`. */
function element(tag: number, vr: string, value: Buffer, pad = 0x20): Buffer {
  const v = value.length % 2 ? Buffer.concat([value, Buffer.from([pad])]) : value;
  const long = LONG_VRS.has(vr);
  const head = Buffer.alloc(long ? 12 : 8);
  head.writeUInt16LE(tag >>> 16, 0);
  head.writeUInt16LE(tag & 0xffff, 2);
  head.write(vr, 4, 'latin1');
  if (long) head.writeUInt32LE(v.length, 8);
  else head.writeUInt16LE(v.length, 6);
  return Buffer.concat([head, v]);
}

/** Top-level elements with some replaced or added, in tag order. */
function rewritten(buf: Buffer, elements: TopElement[], replace: Map<number, Buffer | null>): Buffer[] {
  const out: Array<{ tag: number; bytes: Buffer }> = [];
  for (const e of elements) {
    if (replace.has(e.tag)) continue;
    out.push({ tag: e.tag, bytes: buf.subarray(e.start, e.end) });
  }
  for (const [tag, bytes] of replace) if (bytes) out.push({ tag, bytes });
  return out.sort((a, b) => a.tag - b.tag).map((e) => e.bytes);
}

function valueOf(h: StoredHeader, tag: number): string | undefined {
  const e = h.dataset.find((x) => x.tag === tag);
  if (!e) return undefined;
  return h.buf.toString('latin1', e.start + 8, e.end).replace(/[\0 ]+$/, '');
}

/** What decoding an instance in-process needs of its index row. */
export type DecodableInstance = Pick<
  RetrievableInstance,
  | 'orthanc_id'
  | 'transfer_syntax'
  | 'rows'
  | 'columns'
  | 'samples_per_pixel'
  | 'bits_allocated'
  | 'number_of_frames'
>;

/**
 * The pixel description the codecs decode by, from the index row. They read the geometry only: the row has no Bits
 * Stored, sign or planar configuration, which they do not need; the photometric interpretation goes into a header.
 */
export function rowPixels(inst: DecodableInstance, photometric = ''): PixelDescription {
  return {
    rows: inst.rows ?? 0,
    columns: inst.columns ?? 0,
    samplesPerPixel: inst.samples_per_pixel ?? 1,
    bitsAllocated: inst.bits_allocated ?? 0,
    bitsStored: inst.bits_allocated ?? 0,
    highBit: (inst.bits_allocated ?? 0) - 1,
    signed: false,
    photometric,
    planarConfiguration: 0,
    numberOfFrames: inst.number_of_frames ?? 1,
  };
}

/**
 * Opens one encapsulated instance as a Part 10 file in Explicit VR Little Endian, its frames decoded in-process. The
 * first frame is decoded before this resolves (its decoded photometric goes in the header), so a frame the codecs
 * cannot decode fails here, while a status can still be sent.
 */
export async function openDecodedInstance(
  archive: Archive,
  codecs: CodecPool,
  inst: DecodableInstance,
  signal?: AbortSignal,
): Promise<ArchiveStream & { transferSyntax: string }> {
  const stored = inst.transfer_syntax.trim();
  const header = await readHeader(await archive.openInstance(inst.orthanc_id, { signal }));
  const px = rowPixels(inst, valueOf(header, PHOTOMETRIC));
  const frameBytes = nativeFrameBytes(px);
  if (!frameBytes)
    throw new NotAcceptableError('the frames of this instance cannot be decoded to whole bytes');
  const frames = Math.max(1, px.numberOfFrames);
  const pixelLength = frames * frameBytes;
  // Native Pixel Data has a 32-bit length (PS3.5 §7.1.2); 0xFFFFFFFF itself means undefined.
  if (pixelLength + (pixelLength % 2) >= UNDEFINED) {
    throw new NotAcceptableError(
      'the decoded pixels of this instance exceed what Explicit VR Little Endian can hold',
    );
  }
  codecs.checkSize(px);
  const src = { orthancId: inst.orthanc_id, transferSyntax: stored };
  const decode = async (f: number): Promise<Buffer> => {
    const raw = await fetchStoredFrame(archive, src, px, f, signal);
    const d = await codecs.decodeFrame(raw, stored, px, signal);
    return Buffer.from(d.pixels.buffer, d.pixels.byteOffset, d.pixels.byteLength);
  };
  const firstRaw = await fetchStoredFrame(archive, src, px, 1, signal);
  const firstDecoded = await codecs.decodeFrame(firstRaw, stored, px, signal);
  const first = Buffer.from(
    firstDecoded.pixels.buffer,
    firstDecoded.pixels.byteOffset,
    firstDecoded.pixels.byteLength,
  );

  const tsValue = Buffer.from(ELE, 'latin1');
  const metaBody = Buffer.concat(
    rewritten(
      header.buf,
      header.meta,
      new Map([
        [META_GROUP_LENGTH, null],
        [META_TRANSFER_SYNTAX, element(META_TRANSFER_SYNTAX, 'UI', tsValue, 0)],
      ]),
    ),
  );
  const groupLength = Buffer.alloc(4);
  groupLength.writeUInt32LE(metaBody.length);
  const dsReplace = new Map<number, Buffer | null>();
  if (firstDecoded.photometric && firstDecoded.photometric !== px.photometric) {
    dsReplace.set(PHOTOMETRIC, element(PHOTOMETRIC, 'CS', Buffer.from(firstDecoded.photometric, 'latin1')));
  }
  // Decoders answer pixel-interleaved samples whatever the stored Planar Configuration said.
  if (px.samplesPerPixel > 1)
    dsReplace.set(PLANAR_CONFIGURATION, element(PLANAR_CONFIGURATION, 'US', Buffer.from([0, 0])));
  if (LOSSY.has(stored) && valueOf(header, LOSSY_IMAGE_COMPRESSION) === undefined) {
    dsReplace.set(
      LOSSY_IMAGE_COMPRESSION,
      element(LOSSY_IMAGE_COMPRESSION, 'CS', Buffer.from('01', 'latin1')),
    );
  }
  const pixelHead = Buffer.alloc(12);
  pixelHead.writeUInt16LE(0x7fe0, 0);
  pixelHead.writeUInt16LE(0x0010, 2);
  pixelHead.write(px.bitsAllocated > 8 ? 'OW' : 'OB', 4, 'latin1');
  pixelHead.writeUInt32LE(pixelLength + (pixelLength % 2), 8);
  // A zero preamble: the stored one may hold another format's header (CVE-2019-11687); nothing needs it.
  const head = Buffer.concat([
    Buffer.alloc(128),
    Buffer.from('DICM', 'latin1'),
    element(META_GROUP_LENGTH, 'UL', groupLength),
    metaBody,
    ...rewritten(header.buf, header.dataset, dsReplace),
    pixelHead,
  ]);
  // Elements after Pixel Data (Data Set Trailing Padding, Digital Signatures, which the rewrite voids) are dropped.

  async function* body(): AsyncGenerator<Buffer> {
    yield head;
    yield first;
    for (let f = 2; f <= frames; f++) {
      const bytes = await decode(f);
      if (bytes.length !== frameBytes) throw new Error(`decoded frame ${f} has an unexpected size`);
      yield bytes;
    }
    if (pixelLength % 2) yield Buffer.from([0]);
  }
  if (first.length !== frameBytes)
    throw new UnrecoverableInputError('the decoded frame has an unexpected size');
  return {
    // Byte mode with a small high-water mark: the next frame is decoded only once the previous one has gone out.
    body: Readable.from(body(), { objectMode: false, highWaterMark: 1 }),
    contentType: 'application/dicom',
    contentLength: head.length + pixelLength + (pixelLength % 2),
    transferSyntax: ELE,
  };
}
