/**
 * Retrieving frames (PS3.18 §10.4.1.1.6) and bulk data (§10.4.1.1.5) out of the archive: stored frame bytes through
 * the archive's one frame fetch, or frames decoded by a transcode to Explicit VR Little Endian and read out of that
 * stream one at a time. No HTTP here.
 */
import { extractNativeFrames, nativeFrameBytes, type BulkDataPath } from '../dicom/bulk';
import { TransferSyntax } from '../dicom/transfer-syntax';
import { NotAcceptableError } from '../errors';
import type { RetrievableInstance } from '../index-db/wado';
import type { Archive, ArchiveStream } from '../orthanc/archive';
import { openInstanceAs } from './instances';
import { openAhead, type RetrievedPart } from './parts';

/** How the frames of one instance are sent. */
export interface FramePlan {
  /** Content-Type of each part (media type with its transfer-syntax parameter). */
  contentType: string;
  /** True when the archive must decode the frames (stored compressed, uncompressed wanted). */
  decode: boolean;
}

/**
 * The frames of one instance as parts, in the order asked. `locationOf(frame)` gives each part's Content-Location
 * (PS3.18 §8.6.1.2), when the frames have a URL of their own.
 */
export function frameParts(
  archive: Archive,
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
  const frameBytes = nativeFrameBytes(
    inst.rows ?? 0,
    inst.columns ?? 0,
    inst.samples_per_pixel ?? 1,
    inst.bits_allocated ?? 0,
  );
  if (!frameBytes)
    throw new NotAcceptableError('the frames of this instance cannot be decoded to whole bytes');
  return decodedFrameParts(archive, inst, frames, frameBytes, plan.contentType, headers, signal);
}

/**
 * Decoded frames: the archive transcodes the instance to Explicit VR LE and the wanted frames are read out of that
 * stream one at a time. Frames asked out of order start a new pass, so only one frame is ever held.
 */
async function* decodedFrameParts(
  archive: Archive,
  inst: RetrievableInstance,
  frames: readonly number[],
  frameBytes: number,
  contentType: string,
  headers: (frame: number) => Record<string, string> | undefined,
  signal?: AbortSignal,
): AsyncGenerator<RetrievedPart> {
  let k = 0;
  while (k < frames.length) {
    let end = k + 1;
    while (end < frames.length && frames[end] > frames[end - 1]) end++;
    const file = await openInstanceAs(archive, inst, TransferSyntax.explicitVrLittleEndian, signal);
    for await (const { frame, data } of extractNativeFrames(file.body, frameBytes, frames.slice(k, end))) {
      yield { contentType, headers: headers(frame), body: data };
    }
    k = end;
  }
}

/** One bulk data value from the archive: the raw bytes of the element (native Pixel Data as one value). */
export function openBulkValue(
  archive: Archive,
  inst: Pick<RetrievableInstance, 'orthanc_id'>,
  path: BulkDataPath,
  signal?: AbortSignal,
): Promise<ArchiveStream> {
  return archive.openBulkData(inst.orthanc_id, path.contentPath, {
    pixelData: path.relative === '7FE00010',
    signal,
  });
}
