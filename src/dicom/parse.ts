import dcmjs from 'dcmjs';
import { restoreCharacterSets } from './charset';
import { type DicomJson, getInt, getString, toDicomJson } from './json';
import {
  DEFAULT_STRUCTURE_LIMITS,
  DicomParseError,
  FailureReason,
  isPlausibleUid,
  noteKnownUids,
  type Part10Structure,
  type StructureLimits,
  walkPart10,
} from './structure';
import { Tag } from './tags';
import { hasNativePixelData } from './transfer-syntax';

// dcmjs logs through loglevel loggers created at load time (they keep their own level), and a few paths call
// console directly; both print raw bytes of the object. The gateway reports per object instead.
silenceDcmjs();

export {
  DEFAULT_STRUCTURE_LIMITS,
  DicomParseError,
  FailureReason,
  isPlausibleUid,
  isValidUid,
  type StructureLimits,
} from './structure';

/** What the index needs from one Part-10 object. */
export interface ParsedInstance {
  transferSyntaxUid: string;
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  /** The data set without File Meta, bulk data as relative BulkDataURIs. */
  json: DicomJson;
  /** False when the 128-byte preamble holds anything (CVE-2019-11687 polyglots): ingest zeroes it. */
  preambleIsZero?: boolean;
}

/**
 * Parses a DICOM Part-10 object (preamble, "DICM", File Meta) and checks what the archive requires. First a bounded
 * structural walk of the whole object to its last byte (walkPart10: nesting depth, element count, every length,
 * VR-consistent lengths, inflated size), so that nothing truncated, overlong or too deep reaches dcmjs or the
 * archive; then the identifying UIDs as encoded (refused when invalid, never repaired: 0xA900); then dcmjs for the
 * DICOM JSON of the index, which must agree with the raw UIDs.
 */
export function parsePart10(
  buf: Uint8Array,
  limits: StructureLimits = DEFAULT_STRUCTURE_LIMITS,
): ParsedInstance {
  const raw = walkPart10(buf, limits);
  try {
    return readWalked(buf, raw);
  } catch (err) {
    if (err instanceof DicomParseError) noteKnownUids(err, raw);
    throw err;
  }
}

function readWalked(buf: Uint8Array, raw: Part10Structure): ParsedInstance {
  // dcmjs reads an ArrayBuffer and copies the values it keeps: a buffer that is the whole of its own memory is read
  // in place.
  const ab = (
    buf.byteOffset === 0 && buf.byteLength === buf.buffer.byteLength
      ? buf.buffer
      : buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength)
  ) as ArrayBuffer;
  // Native Pixel Data that ends the data set (the usual case) is not read: the walk has checked it and knows its
  // VR and length, which is all the index keeps of it (a BulkDataURI).
  const pixel = raw.pixelData;
  const stopAtPixels =
    pixel !== undefined &&
    pixel.last &&
    pixel.length !== undefined &&
    (pixel.vr === 'OB' || pixel.vr === 'OW');
  const options = stopAtPixels
    ? { ignoreErrors: false, untilTag: PIXEL_DATA_TAG, includeUntilTagValue: false }
    : { ignoreErrors: false };
  let parsed: {
    meta: Record<string, { Value?: unknown[] }>;
    dict: Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string }>;
  };
  try {
    parsed = quietly(() => dcmjs.data.DicomMessage.readFile(ab, options));
  } catch (err) {
    // dcmjs refuses ISO 2022 code extensions (Japanese, Korean) but reads the bytes fine when told to go on;
    // restoreCharacterSets then fixes those strings. Any other read error is final.
    if (!/multiple character sets/i.test(String((err as Error)?.message))) {
      throw new DicomParseError(
        FailureReason.CannotUnderstand,
        `unreadable DICOM data set: ${safeReason(err)}`,
      );
    }
    try {
      parsed = quietly(() => dcmjs.data.DicomMessage.readFile(ab, { ...options, ignoreErrors: true }));
    } catch (err2) {
      throw new DicomParseError(
        FailureReason.CannotUnderstand,
        `unreadable DICOM data set: ${safeReason(err2)}`,
      );
    }
  }
  let pixelBytes: number | undefined;
  if (stopAtPixels) {
    // What a full read would have produced for the JSON model: the element, bulk when it holds bytes.
    pixelBytes = pixel.length;
    parsed.dict[Tag.PixelData] = pixel.length
      ? { vr: pixel.vr, Value: [], BulkDataURI: Tag.PixelData }
      : { vr: pixel.vr, Value: [] };
  }
  restoreCharacterSets(parsed.dict);
  const tsuid = raw.transferSyntaxUid;
  const keys = [
    ['sopClassUid', 'SOPClassUID', Tag.SOPClassUID],
    ['sopInstanceUid', 'SOPInstanceUID', Tag.SOPInstanceUID],
    ['studyInstanceUid', 'StudyInstanceUID', Tag.StudyInstanceUID],
    ['seriesInstanceUid', 'SeriesInstanceUID', Tag.SeriesInstanceUID],
  ] as const;
  const missing = keys.filter(([k]) => !isPlausibleUid(raw[k])).map(([, name]) => name);
  if (missing.length) {
    throw new DicomParseError(
      FailureReason.DataSetDoesNotMatchSopClass,
      `missing or invalid ${missing.join(', ')}`,
    );
  }
  checkPixelSanity(tsuid, parsed.dict, pixelBytes);
  const json = toDicomJson(parsed.dict);
  // The index keeps dcmjs's JSON and the archive keeps the bytes: both must name the same instance.
  const disagree = keys.filter(([k, , tag]) => getString(json, tag) !== raw[k]).map(([, name]) => name);
  if (disagree.length) {
    const err = new DicomParseError(
      FailureReason.DataSetDoesNotMatchSopClass,
      `ambiguous encoding of ${disagree.join(', ')}`,
    );
    // A UID the two readings disagree on is not known.
    noteKnownUids(err, {
      sopClassUid: disagree.includes('SOPClassUID') ? undefined : raw.sopClassUid,
      sopInstanceUid: disagree.includes('SOPInstanceUID') ? undefined : raw.sopInstanceUid,
    });
    throw err;
  }
  return {
    transferSyntaxUid: tsuid,
    sopClassUid: raw.sopClassUid!,
    sopInstanceUid: raw.sopInstanceUid!,
    studyInstanceUid: raw.studyInstanceUid!,
    seriesInstanceUid: raw.seriesInstanceUid!,
    json,
    preambleIsZero: raw.preambleIsZero,
  };
}

function silenceDcmjs(): void {
  const log = dcmjs.log as unknown as {
    setLevel(l: string): void;
    getLoggers?(): Record<string, { setLevel(l: string): void }>;
  };
  log.setLevel('silent');
  for (const l of Object.values(log.getLoggers?.() ?? {})) l.setLevel('silent');
}

/**
 * Runs a synchronous dcmjs call with the console muted: a few dcmjs paths call console.log/warn directly with
 * values of the object. Synchronous, so no other code runs while the console is swapped.
 */
function quietly<T>(f: () => T): T {
  const saved = {
    log: console.log,
    warn: console.warn,
    error: console.error,
    info: console.info,
    debug: console.debug,
  };
  const mute = () => undefined;
  Object.assign(console, { log: mute, warn: mute, error: mute, info: mute, debug: mute });
  try {
    return f();
  } finally {
    Object.assign(console, saved);
  }
}

const PIXEL_DATA_TAG = '7FE00010';

/** Sanity limit on declared image size: far above any real modality, far below what could exhaust memory. */
export const MAX_DECLARED_PIXEL_BYTES = 4 * 1024 ** 3;

/**
 * Refuses objects whose native Pixel Data cannot hold what Rows, Columns, Bits Allocated, Samples per Pixel and
 * Number of Frames declare (Orthanc's archive accepts them, and a renderer trusting the header would over-read or
 * allocate gigabytes), and objects whose declared image size is absurd.
 */
function checkPixelSanity(
  tsuid: string,
  dict: Record<string, { vr: string; Value?: unknown[] }>,
  pixelBytes?: number,
): void {
  const pixel = dict[Tag.PixelData];
  if (!pixel) return;
  const num = (tag: string, def: number) => {
    const v = Number(dict[tag]?.Value?.[0]);
    return Number.isFinite(v) && v > 0 ? v : def;
  };
  const rows = num(Tag.Rows, 0);
  const cols = num(Tag.Columns, 0);
  const bits = num(Tag.BitsAllocated, 0);
  const spp = num(Tag.SamplesPerPixel, 1);
  const frames = num(Tag.NumberOfFrames, 1);
  if (!rows || !cols || !bits) {
    throw new DicomParseError(
      FailureReason.DataSetDoesNotMatchSopClass,
      'Pixel Data without Rows, Columns or Bits Allocated',
    );
  }
  const expected = Math.ceil((rows * cols * bits * spp * frames) / 8);
  if (expected > MAX_DECLARED_PIXEL_BYTES) {
    throw new DicomParseError(
      FailureReason.DataSetDoesNotMatchSopClass,
      'declared image size exceeds the sanity limit',
    );
  }
  // Encapsulated Pixel Data (1.2.840.10008.1.2.1.98 included) is fragments, not one value of the declared size.
  if (!hasNativePixelData(tsuid)) return;
  const got = pixelBytes ?? (pixel.Value ?? []).reduce<number>((n, v) => n + byteLen(v), 0);
  if (got < expected) {
    throw new DicomParseError(
      FailureReason.DataSetDoesNotMatchSopClass,
      `Pixel Data holds ${got} bytes but the image header declares ${expected}`,
    );
  }
}

function byteLen(v: unknown): number {
  if (v instanceof ArrayBuffer) return v.byteLength;
  if (ArrayBuffer.isView(v)) return v.byteLength;
  return 0;
}

/** A parser message trimmed of anything that could echo data values. */
function safeReason(err: unknown): string {
  const msg = err instanceof Error ? err.message : String(err);
  return msg.replace(/[^\x20-\x7e]/g, '').slice(0, 120);
}

export { getInt, getString };
