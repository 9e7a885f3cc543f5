/**
 * Fetching one frame's pixels from the archive for rendering, and rendering it.
 *
 * Which Orthanc resource is used, and why:
 * - native transfer syntaxes: `/instances/{id}/frames/{n}/raw`, the frame's own bytes; the gateway applies the
 *   whole pipeline itself (masking, sign, rescale, window, MONOCHROME1, planar configuration, palette, YBR).
 * - compressed syntaxes: `/instances/{id}/frames/{n}/numpy?rescale=false`, Orthanc's decoder output (DCMTK in
 *   Orthanc 1.10: JPEG baseline/extended/lossless, JPEG-LS, RLE; JPEG 2000 only with the GDCM plugin) as a
 *   NumPy array of stored values, so the gateway ships no codecs yet still applies its own presentation.
 *   `/rendered`, `/preview` and `/image-uint16` were not used: they window and clip (losing signed and
 *   rescaled values) or apply Orthanc's own window choice, which would make two pipelines disagree.
 * - palette colour with RLE: Orthanc 1.10 decodes no palette images at all ("Not implemented"), so the raw RLE
 *   fragment is decoded here (PS3.5 Annex G is a few lines) and the palette read from `/content/0028-120x`.
 * Other syntaxes Orthanc cannot decode answer 422 with the transfer syntax named, never a retry loop.
 */
import type { Readable } from 'node:stream';
import {
  decodeNativeFrame,
  decodeRleFrame,
  type DisplayImage,
  describePixels,
  encodeImage,
  type EncodeOptions,
  frameFromNpy,
  framePresentation,
  nativeFrameBytes,
  type PaletteLut,
  paletteChannel,
  parseNpy,
  PixelTag,
  type PixelDescription,
  type StoredFrame,
  toDisplayImage,
  type WindowSpec,
} from '../dicom/render';
import type { DicomJson } from '../dicom/json';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import { OrthancHttpError, type PacsClient } from './client';

/** An archived instance as rendering needs it (a row of the index). */
export interface RenderSource {
  sopInstanceUid: string;
  orthancId: string;
  transferSyntax: string;
  dicomJson: DicomJson;
}

/** Guards against absurd images: decoded source size and output size, in pixels. */
export interface RenderLimits {
  maxPixels: number;
  maxOutputPixels: number;
}

const NATIVE = new Set([
  '1.2.840.10008.1.2',
  '1.2.840.10008.1.2.1',
  '1.2.840.10008.1.2.1.99',
  '1.2.840.10008.1.2.1.98',
  '1.2.840.10008.1.2.2',
]);
const RLE = '1.2.840.10008.1.2.5';
/** Orthanc's error code for "not implemented", as its JSON error bodies report it. */
const ORTHANC_NOT_IMPLEMENTED = 2;

/** Reads a stream into memory, refusing more than `max` bytes (a frame is bounded; a runaway answer is not). */
async function readCapped(stream: Readable, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of stream) {
    total += (chunk as Buffer).length;
    if (total > max) {
      stream.destroy();
      throw new UnrecoverableInputError('the archive answered more frame data than the image declares');
    }
    chunks.push(chunk as Buffer);
  }
  return Buffer.concat(chunks, total);
}

function orthancErrorStatus(err: OrthancHttpError): number | undefined {
  try {
    return (JSON.parse(err.upstreamBody) as { OrthancStatus?: number }).OrthancStatus;
  } catch {
    return undefined;
  }
}

/** Fetches a resource of the archive, turning "cannot decode" answers into a clear 422. */
async function fetchBytes(
  pacs: PacsClient,
  path: string,
  max: number,
  ts: string,
  signal?: AbortSignal,
): Promise<Buffer> {
  try {
    const res = await pacs.getStream(path, signal);
    return await readCapped(res.body, max);
  } catch (err) {
    if (err instanceof OrthancHttpError) {
      const notImplemented =
        err.upstreamStatus === 415 || orthancErrorStatus(err) === ORTHANC_NOT_IMPLEMENTED;
      if (notImplemented)
        throw new UnrecoverableInputError(`the archive cannot decode transfer syntax ${ts}`);
      if (err.upstreamStatus === 400)
        throw new UnrecoverableInputError('the archive could not decode this frame');
    }
    throw err;
  }
}

/** Loads and decodes one frame (1-based) of an archived instance. */
export async function loadStoredFrame(
  pacs: PacsClient,
  src: RenderSource,
  px: PixelDescription,
  frameNumber: number,
  signal?: AbortSignal,
): Promise<StoredFrame> {
  const ts = src.transferSyntax.trim();
  const base = `/instances/${encodeURIComponent(src.orthancId)}/frames/${frameNumber - 1}`;
  const native = nativeFrameBytes(px);
  if (NATIVE.has(ts)) {
    // Orthanc answers native frames in little endian whatever the stored syntax (Big Endian objects included).
    const bytes = await fetchBytes(pacs, `${base}/raw`, native + 64, ts, signal);
    return decodeNativeFrame(bytes, px);
  }
  if (ts === RLE && px.photometric === 'PALETTE COLOR') {
    // RLE worst case grows each 128-byte run by one byte, plus the 64-byte header.
    const bytes = await fetchBytes(pacs, `${base}/raw`, native + Math.ceil(native / 64) + 1024, ts, signal);
    return decodeNativeFrame(decodeRleFrame(bytes, px), px);
  }
  if (px.photometric === 'PALETTE COLOR') {
    throw new UnrecoverableInputError(
      `the archive cannot decode palette colour images in transfer syntax ${ts}`,
    );
  }
  // Decoded values: at most 8 bytes per sample (float64), plus the .npy header.
  const max = px.rows * px.columns * px.samplesPerPixel * 8 + 4096;
  const npy = await fetchBytes(pacs, `${base}/numpy?rescale=false`, max, ts, signal);
  return frameFromNpy(parseNpy(npy), px);
}

/** Reads the Palette Color Lookup Tables (descriptors from the index, data inline or from the archive). */
export async function loadPalette(
  pacs: PacsClient,
  src: RenderSource,
  signal?: AbortSignal,
): Promise<PaletteLut> {
  const ds = src.dicomJson;
  const channel = async (descriptorTag: string, dataTag: string) => {
    const descriptor = (ds[descriptorTag]?.Value ?? []).map(Number);
    if (descriptor.length !== 3) {
      throw new UnrecoverableInputError(
        'palette colour image without a usable palette (segmented palettes are not supported)',
      );
    }
    const el = ds[dataTag];
    let data: Buffer;
    if (el?.InlineBinary) data = Buffer.from(el.InlineBinary, 'base64');
    else if (el?.BulkDataURI) {
      const tag = `${dataTag.slice(0, 4)}-${dataTag.slice(4)}`;
      data = await fetchBytes(
        pacs,
        `/instances/${encodeURIComponent(src.orthancId)}/content/${tag}`,
        65536 * 2 + 16,
        src.transferSyntax,
        signal,
      );
    } else throw new UnrecoverableInputError('palette colour image without palette data');
    return paletteChannel(descriptor, data);
  };
  return {
    red: await channel(PixelTag.RedPaletteDescriptor, PixelTag.RedPaletteData),
    green: await channel(PixelTag.GreenPaletteDescriptor, PixelTag.GreenPaletteData),
    blue: await channel(PixelTag.BluePaletteDescriptor, PixelTag.BluePaletteData),
  };
}

/** What to render and how to encode it. */
export interface RenderRequest {
  frameNumber: number;
  window?: WindowSpec;
  encode: Omit<EncodeOptions, 'maxOutputPixels'>;
}

/**
 * Renders one frame of an archived instance to JPEG or PNG: checks the declared size against the limits,
 * fetches and decodes the frame, applies the presentation pipeline and encodes.
 */
export async function renderArchivedFrame(
  pacs: PacsClient,
  src: RenderSource,
  req: RenderRequest,
  limits: RenderLimits,
  signal?: AbortSignal,
): Promise<Buffer> {
  const px = describePixels(src.dicomJson);
  if (req.frameNumber < 1 || req.frameNumber > px.numberOfFrames) {
    throw new NotFoundError(`frame ${req.frameNumber} does not exist in this instance`);
  }
  if (px.rows * px.columns * px.samplesPerPixel > limits.maxPixels) {
    throw new UnrecoverableInputError(`the image is too large to render (${px.rows} x ${px.columns})`);
  }
  const frame = await loadStoredFrame(pacs, src, px, req.frameNumber, signal);
  const palette = frame.kind === 'palette' ? await loadPalette(pacs, src, signal) : undefined;
  const image: DisplayImage = toDisplayImage(frame, px, framePresentation(src.dicomJson, req.frameNumber), {
    window: req.window,
    palette,
  });
  return encodeImage(image, { ...req.encode, maxOutputPixels: limits.maxOutputPixels });
}
