/**
 * Rendering one frame of an archived instance (rendered resources, WADO-URI images, thumbnails), through the one
 * frame fetch of the archive interface.
 *
 * What is fetched, and why:
 * - uncompressed syntaxes: the frame's own bytes (`openFrame`); the gateway applies the whole pipeline itself
 *   (masking, sign, rescale, window, MONOCHROME1, planar configuration, palette, YBR).
 * - compressed syntaxes: the archive's decoder output as stored values (`openDecodedFrame`, Orthanc's NumPy array
 *   without rescale), so the gateway ships no codecs yet still applies its own presentation. Orthanc's own
 *   rendered/preview resources window and clip (losing signed and rescaled values) or pick their own window,
 *   which would make two pipelines disagree.
 * - palette colour with RLE: Orthanc 1.10 decodes no palette images at all ("Not implemented"), so the raw RLE
 *   fragment is decoded here (PS3.5 Annex G is a few lines) and the palette read as bulk data.
 * Syntaxes the archive cannot decode answer 422 with the transfer syntax named, never a retry loop.
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
import { isUncompressedTransferSyntax, TransferSyntax } from '../dicom/transfer-syntax';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import { type Archive, type ArchiveStream, decodeFailure } from '../orthanc/archive';

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

const RLE = TransferSyntax.rleLossless;

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

/** Reads an archive resource, bounded, turning "cannot decode" answers into a clear 422. */
async function fetchBytes(open: () => Promise<ArchiveStream>, max: number, ts: string): Promise<Buffer> {
  try {
    return await readCapped((await open()).body, max);
  } catch (err) {
    throw decodeFailure(err, ts);
  }
}

/** Loads and decodes one frame (1-based) of an archived instance. */
export async function loadStoredFrame(
  archive: Archive,
  src: RenderSource,
  px: PixelDescription,
  frameNumber: number,
  signal?: AbortSignal,
): Promise<StoredFrame> {
  const ts = src.transferSyntax.trim();
  const native = nativeFrameBytes(px);
  if (isUncompressedTransferSyntax(ts)) {
    // Orthanc answers native frames in little endian whatever the stored syntax (Big Endian objects included).
    const raw = () => archive.openFrame(src.orthancId, frameNumber, signal);
    const bytes = await fetchBytes(raw, native + 64, ts);
    return decodeNativeFrame(bytes, px);
  }
  if (ts === RLE && px.photometric === 'PALETTE COLOR') {
    // RLE worst case grows each 128-byte run by one byte, plus the 64-byte header.
    const raw = () => archive.openFrame(src.orthancId, frameNumber, signal);
    const bytes = await fetchBytes(raw, native + Math.ceil(native / 64) + 1024, ts);
    return decodeNativeFrame(decodeRleFrame(bytes, px), px);
  }
  if (px.photometric === 'PALETTE COLOR') {
    throw new UnrecoverableInputError(
      `the archive cannot decode palette colour images in transfer syntax ${ts}`,
    );
  }
  // Decoded values: at most 8 bytes per sample (float64), plus the .npy header.
  const max = px.rows * px.columns * px.samplesPerPixel * 8 + 4096;
  const npy = await fetchBytes(
    () => archive.openDecodedFrame(src.orthancId, frameNumber, ts, signal),
    max,
    ts,
  );
  return frameFromNpy(parseNpy(npy), px);
}

/** Reads the Palette Color Lookup Tables (descriptors from the index, data inline or from the archive). */
export async function loadPalette(
  archive: Archive,
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
        () => archive.openBulkData(src.orthancId, tag, { signal }),
        65536 * 2 + 16,
        src.transferSyntax,
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
  archive: Archive,
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
  const frame = await loadStoredFrame(archive, src, px, req.frameNumber, signal);
  const palette = frame.kind === 'palette' ? await loadPalette(archive, src, signal) : undefined;
  const image: DisplayImage = toDisplayImage(frame, px, framePresentation(src.dicomJson, req.frameNumber), {
    window: req.window,
    palette,
  });
  return encodeImage(image, { ...req.encode, maxOutputPixels: limits.maxOutputPixels });
}

/** JPEG quality of cached thumbnails: small files, artefacts invisible at 128 px. */
export const THUMBNAIL_QUALITY = 80;

/**
 * Renders the thumbnail of an instance as cached: frame 1, JPEG, fitting a `size` square, never enlarged.
 * The thumbnail job renders THUMBNAIL_SIZE; the thumbnail resource also caches the square sizes viewers ask for.
 */
export async function renderThumbnail(
  archive: Archive,
  src: RenderSource,
  size: number,
  limits: RenderLimits,
  signal?: AbortSignal,
): Promise<Buffer> {
  return renderArchivedFrame(
    archive,
    src,
    {
      frameNumber: 1,
      encode: {
        mediaType: 'image/jpeg',
        quality: THUMBNAIL_QUALITY,
        viewport: { vw: size, vh: size },
        withoutEnlargement: true,
      },
    },
    limits,
    signal,
  );
}
