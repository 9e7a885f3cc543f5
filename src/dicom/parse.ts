import dcmjs from 'dcmjs';
import { restoreCharacterSets } from './charset';
import { type DicomJson, getInt, getString, toDicomJson } from './json';
import { Tag } from './tags';

// dcmjs reports recoverable oddities on the console; the gateway reports per object instead.
dcmjs.log.setLevel?.('silent');

/** Failure reasons of PS3.18 Table I.2-2 used at ingest. */
export const FailureReason = {
  OutOfResources: 0xa700,
  DataSetDoesNotMatchSopClass: 0xa900,
  CannotUnderstand: 0xc000,
  TransferSyntaxNotSupported: 0xc122,
  ProcessingFailure: 0x0110,
  SopClassNotSupported: 0x0122,
  /** Study Instance UID differs from the one in the request URL (an A9xx "does not match" refinement). */
  StudyUidMismatch: 0xa910,
  /** A different object is already stored under this SOP Instance UID. */
  DuplicateSopInstance: 0x0111,
} as const;

/** The object could not be accepted; `reason` is the Failure Reason (0008,1197) to report. Message carries no PHI. */
export class DicomParseError extends Error {
  constructor(
    readonly reason: number,
    message: string,
  ) {
    super(message);
    this.name = 'DicomParseError';
  }
}

/** What the index needs from one Part-10 object. */
export interface ParsedInstance {
  transferSyntaxUid: string;
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  /** The data set without File Meta, bulk data as relative BulkDataURIs. */
  json: DicomJson;
}

const UID_RE = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;

/** True when s is a syntactically valid UID (PS3.5 §9.1): digits and dots, no leading zeros, at most 64 chars. */
export function isValidUid(s: string | undefined): s is string {
  return typeof s === 'string' && s.length > 0 && s.length <= 64 && UID_RE.test(s);
}

/** Lenient UID check for identifiers already in the wild: digits and dots, at most 64 chars. */
export function isPlausibleUid(s: string | undefined): s is string {
  return typeof s === 'string' && s.length > 0 && s.length <= 64 && /^[0-9.]+$/.test(s);
}

/**
 * Parses a DICOM Part-10 object (preamble, "DICM", File Meta) and checks what the archive requires:
 * a transfer syntax, SOP Class/Instance, Study and Series Instance UIDs. The whole object must be readable:
 * truncated values or sequences are refused, so that what is stored is always whole.
 */
export function parsePart10(buf: Uint8Array): ParsedInstance {
  if (buf.byteLength < 132 || String.fromCharCode(buf[128], buf[129], buf[130], buf[131]) !== 'DICM') {
    throw new DicomParseError(FailureReason.CannotUnderstand, 'not a DICOM Part-10 object (no DICM prefix)');
  }
  const ab = buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength) as ArrayBuffer;
  let parsed: {
    meta: Record<string, { Value?: unknown[] }>;
    dict: Record<string, { vr: string; Value?: unknown[] }>;
  };
  try {
    parsed = dcmjs.data.DicomMessage.readFile(ab, { ignoreErrors: false });
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
      parsed = dcmjs.data.DicomMessage.readFile(ab, { ignoreErrors: true });
    } catch (err2) {
      throw new DicomParseError(
        FailureReason.CannotUnderstand,
        `unreadable DICOM data set: ${safeReason(err2)}`,
      );
    }
  }
  restoreCharacterSets(parsed.dict);
  const tsuid = String(parsed.meta?.[Tag.FileMetaTransferSyntaxUID]?.Value?.[0] ?? '')
    .replace(/\0/g, '')
    .trim();
  if (!tsuid) {
    throw new DicomParseError(
      FailureReason.CannotUnderstand,
      'File Meta Information has no Transfer Syntax UID',
    );
  }
  checkPixelSanity(tsuid, parsed.dict);
  const json = toDicomJson(parsed.dict);
  const sopClassUid = getString(json, Tag.SOPClassUID);
  const sopInstanceUid = getString(json, Tag.SOPInstanceUID);
  const studyInstanceUid = getString(json, Tag.StudyInstanceUID);
  const seriesInstanceUid = getString(json, Tag.SeriesInstanceUID);
  const missing: string[] = [];
  if (!isPlausibleUid(sopClassUid)) missing.push('SOPClassUID');
  if (!isPlausibleUid(sopInstanceUid)) missing.push('SOPInstanceUID');
  if (!isPlausibleUid(studyInstanceUid)) missing.push('StudyInstanceUID');
  if (!isPlausibleUid(seriesInstanceUid)) missing.push('SeriesInstanceUID');
  if (missing.length) {
    throw new DicomParseError(
      FailureReason.DataSetDoesNotMatchSopClass,
      `missing or invalid ${missing.join(', ')}`,
    );
  }
  return {
    transferSyntaxUid: tsuid,
    sopClassUid: sopClassUid!,
    sopInstanceUid: sopInstanceUid!,
    studyInstanceUid: studyInstanceUid!,
    seriesInstanceUid: seriesInstanceUid!,
    json,
  };
}

/** Transfer syntaxes whose Pixel Data is stored native (uncompressed) once read. */
const NATIVE_SYNTAXES = new Set([
  '1.2.840.10008.1.2',
  '1.2.840.10008.1.2.1',
  '1.2.840.10008.1.2.2',
  '1.2.840.10008.1.2.1.99',
]);
/** Sanity limit on declared image size: far above any real modality, far below what could exhaust memory. */
export const MAX_DECLARED_PIXEL_BYTES = 4 * 1024 ** 3;

/**
 * Refuses objects whose native Pixel Data cannot hold what Rows, Columns, Bits Allocated, Samples per Pixel and
 * Number of Frames declare (Orthanc's archive accepts them, and a renderer trusting the header would over-read or
 * allocate gigabytes), and objects whose declared image size is absurd.
 */
function checkPixelSanity(tsuid: string, dict: Record<string, { vr: string; Value?: unknown[] }>): void {
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
  if (!NATIVE_SYNTAXES.has(tsuid)) return;
  const got = (pixel.Value ?? []).reduce<number>((n, v) => n + byteLen(v), 0);
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
