/**
 * Retrieving frames (PS3.18 §10.4.1.1.6) and bulk data (§10.4.1.1.5) out of the archive: stored frame bytes through
 * the archive's one frame fetch, or, for Explicit VR Little Endian out of a compressed syntax, the stored frames
 * decoded in-process on the decode thread pool (src/codecs), one at a time. No HTTP here.
 */
import type { CodecPool } from '../codecs';
import { nativeFrameBytes, type BulkDataPath } from '../dicom/bulk';
import { NotAcceptableError } from '../errors';
import type { RetrievableInstance } from '../index-db/wado';
import type { Archive, ArchiveStream } from '../orthanc/archive';
import { openAhead, type RetrievedPart } from './parts';
import { fetchStoredFrame } from './render';
import { rowPixels } from './transcode';

/** How the frames of one instance are sent. */
export interface FramePlan {
  /** Content-Type of each part (media type with its transfer-syntax parameter). */
  contentType: string;
  /** True when the frames must be decoded (stored compressed, uncompressed wanted). */
  decode: boolean;
}

/**
 * The frames of one instance as parts, in the order asked. `locationOf(frame)` gives each part's Content-Location
 * (PS3.18 §8.6.1.2), when the frames have a URL of their own.
 */
export function frameParts(
  archive: Archive,
  codecs: CodecPool,
  inst: RetrievableInstance,
  frames: readonly number[],
  plan: FramePlan,
  signal?: AbortSignal,
  locationOf?: (frame: number) => string,
): AsyncGenerator<RetrievedPart> {
  const headers = (f: number) => (locationOf ? { 'Content-Location': locationOf(f) } : undefined);
  if (!plan.decode) {
    return openAhead(frames, async (f) => {
      const raw = await archive.openFrame(inst.orthanc_id, f, signal);
      return { contentType: plan.contentType, headers: headers(f), body: raw.body };
    });
  }
  const frameBytes = nativeFrameBytes({
    rows: inst.rows ?? 0,
    columns: inst.columns ?? 0,
    samplesPerPixel: inst.samples_per_pixel ?? 1,
    bitsAllocated: inst.bits_allocated ?? 0,
  });
  if (!frameBytes)
    throw new NotAcceptableError('the frames of this instance cannot be decoded to whole bytes');
  return decodedFrameParts(archive, codecs, inst, frames, plan.contentType, headers, signal);
}

/**
 * Decoded frames: only the frames asked for are fetched, as stored, and decoded on the decode thread pool, one at a
 * time (at most one decoded frame is held). The archive is never asked to transcode.
 */
async function* decodedFrameParts(
  archive: Archive,
  codecs: CodecPool,
  inst: RetrievableInstance,
  frames: readonly number[],
  contentType: string,
  headers: (frame: number) => Record<string, string> | undefined,
  signal?: AbortSignal,
): AsyncGenerator<RetrievedPart> {
  const px = rowPixels(inst);
  codecs.checkSize(px);
  const src = { orthancId: inst.orthanc_id, transferSyntax: inst.transfer_syntax };
  for (const f of frames) {
    const stored = await fetchStoredFrame(archive, src, px, f, signal);
    const decoded = await codecs.decodeFrame(stored, inst.transfer_syntax, px, signal);
    yield {
      contentType,
      headers: headers(f),
      body: Buffer.from(decoded.pixels.buffer, decoded.pixels.byteOffset, decoded.pixels.byteLength),
    };
  }
}

/** One bulk data value from the archive: the raw bytes of the element (native Pixel Data as one value). */
export function openBulkValue(
  archive: Archive,
  inst: Pick<RetrievableInstance, 'orthanc_id'>,
  path: BulkDataPath,
  signal?: AbortSignal,
): Promise<ArchiveStream> {
  return archive.openBulkData(inst.orthanc_id, path.relative, {
    pixelData: path.relative === '7FE00010',
    signal,
  });
}
