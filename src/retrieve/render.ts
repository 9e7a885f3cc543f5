/**
 * Rendering one frame of an archived instance (rendered resources, WADO-URI images, thumbnails), through the one
 * frame fetch of the archive interface.
 *
 * The archive is never asked to decode. Native frames come from the archive's stored frame (`openFrame`) (little endian
 * whatever the stored byte order, deflate already inflated by its parser); compressed frames come from the
 * same resource as the stored codestream (fragments concatenated) and are decoded in-process on the decode thread pool
 * (src/codecs), so JPEG 2000, HTJ2K and palette colour work although Orthanc 1.10 decodes none of them. The gateway
 * then applies the whole presentation pipeline itself (masking, sign, rescale, window, MONOCHROME1, palette, YBR), on
 * the same decode threads, so the HTTP event loop only fetches, waits and hands the 8-bit image to sharp (libvips,
 * which encodes on its own threads).
 * Syntaxes without a decoder answer 422 with the transfer syntax named, never a retry loop.
 */
import type { CodecPool } from '../codecs';
import {
  type DisplayImage,
  describePixels,
  encodeImage,
  type EncodeOptions,
  framePresentation,
  type PaletteLut,
  paletteChannel,
  type PixelDescription,
  type RenderParams,
  type WindowSpec,
} from '../dicom/render';
import { nativeFrameSpan } from '../dicom/bulk';
import { attachIccToJpeg, attachIccToPng } from '../dicom/icc';
import type { DicomJson } from '../dicom/json';
import { Tag } from '../dicom/tags';
import { isUncompressedTransferSyntax } from '../dicom/transfer-syntax';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import { type Archive, type ArchiveStream, decodeFailure, readCapped } from '../orthanc/archive';

/** An archived instance as rendering needs it (a row of the index). */
export interface RenderSource {
  sopInstanceUid: string;
  orthancId: string;
  transferSyntax: string;
  dicomJson: DicomJson;
}

/** Guards against absurd images (decoded source size and output size, in pixels) and the decoders to use. */
export interface RenderLimits {
  maxPixels: number;
  maxOutputPixels: number;
  codecs: CodecPool;
}

/** Reads an archive resource, bounded, turning "cannot decode" answers into a clear 422. */
async function fetchBytes(open: () => Promise<ArchiveStream>, max: number, ts: string): Promise<Buffer> {
  try {
    // A frame is bounded by what the image declares; a runaway answer is not.
    return await readCapped(
      (await open()).body,
      max,
      'the archive answered more frame data than the image declares',
    );
  } catch (err) {
    throw decodeFailure(err, ts);
  }
}

/**
 * The stored bytes of one compressed frame, bounded: a codestream may exceed the decoded size a little (lossless
 * coding of noise, RLE's worst case of one byte per 128), never by half.
 */
export async function fetchStoredFrame(
  archive: Archive,
  src: Pick<RenderSource, 'orthancId' | 'transferSyntax'>,
  px: PixelDescription,
  frameNumber: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  const native = nativeFrameSpan(px);
  return fetchBytes(
    () => archive.openFrame(src.orthancId, frameNumber, signal),
    native + Math.ceil(native / 2) + 65536,
    src.transferSyntax.trim(),
  );
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
      data = await fetchBytes(
        () => archive.openBulkData(src.orthancId, dataTag, { signal }),
        65536 * 2 + 16,
        src.transferSyntax,
      );
    } else throw new UnrecoverableInputError('palette colour image without palette data');
    return paletteChannel(descriptor, data);
  };
  return {
    red: await channel(Tag.RedPaletteDescriptor, Tag.RedPaletteData),
    green: await channel(Tag.GreenPaletteDescriptor, Tag.GreenPaletteData),
    blue: await channel(Tag.BluePaletteDescriptor, Tag.BluePaletteData),
  };
}

/** What to render and how to encode it. */
export interface RenderRequest {
  frameNumber: number;
  window?: WindowSpec;
  /**
   * `no` leaves the instance's ICC profile out of colour output; by default (and `yes`) it is attached; a colour space
   * transforms colour output into it (from the instance's profile, or sRGB) and attaches that space's profile.
   */
  icc?: RenderParams['icc'];
  /**
   * Thumbnails: the image only has to cover the viewport, so JPEG 2000 and HTJ2K may stop decoding at a lower
   * resolution level. Off for rendered resources, whose pixels must match a full decode.
   */
  reduced?: boolean;
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
  // Reports, structure sets, waveforms: there is no image resource to render (404), not a broken image (422).
  if (!src.dicomJson[Tag.PixelData]) throw new NotFoundError('the instance has no image to render');
  const px = describePixels(src.dicomJson);
  if (req.frameNumber < 1 || req.frameNumber > px.numberOfFrames) {
    throw new NotFoundError(`frame ${req.frameNumber} does not exist in this instance`);
  }
  if (px.rows * px.columns * px.samplesPerPixel > limits.maxPixels) {
    throw new UnrecoverableInputError(`the image is too large to render (${px.rows} x ${px.columns})`);
  }
  const ts = src.transferSyntax.trim();
  limits.codecs.checkSize(px);
  const stored = isUncompressedTransferSyntax(ts)
    ? await fetchBytes(
        () => archive.openFrame(src.orthancId, req.frameNumber, signal),
        nativeFrameSpan(px) + 64,
        ts,
      )
    : await fetchStoredFrame(archive, src, px, req.frameNumber, signal);
  const palette =
    px.photometric === 'PALETTE COLOR' && px.samplesPerPixel === 1
      ? await loadPalette(archive, src, signal)
      : undefined;
  // Decoding, masking, rescale and windowing run on a decode thread: the event loop only fetches and waits.
  const image: DisplayImage = await limits.codecs.renderFrame(
    stored,
    ts,
    {
      px,
      presentation: framePresentation(src.dicomJson, req.frameNumber),
      window: req.window,
      palette,
      reduceTo: req.reduced ? reduceTarget(req.encode.viewport) : undefined,
    },
    signal,
  );
  const hasIcc = image.channels === 3 && !!src.dicomJson[Tag.ICCProfile];
  if (req.icc === 'srgb' || req.icc === 'adobergb' || req.icc === 'rommrgb') {
    const from = hasIcc ? await loadIccProfile(archive, src, signal) : undefined;
    return encodeImage(image, {
      ...req.encode,
      maxOutputPixels: limits.maxOutputPixels,
      colour: { to: req.icc, from: from && from.length >= 128 ? from : undefined },
    });
  }
  const encoded = await encodeImage(image, { ...req.encode, maxOutputPixels: limits.maxOutputPixels });
  if (req.icc === 'no' || !hasIcc) return encoded;
  return attachIcc(encoded, req.encode.mediaType, await loadIccProfile(archive, src, signal));
}

/** ICC profiles are a few kB to a few MB; anything larger is not one. */
const MAX_ICC_BYTES = 16 * 1024 * 1024;

/** The instance's ICC Profile (0028,2000): inline in the index's DICOM JSON, or fetched as bulk data. */
async function loadIccProfile(archive: Archive, src: RenderSource, signal?: AbortSignal): Promise<Buffer> {
  const el = src.dicomJson[Tag.ICCProfile];
  if (el?.InlineBinary) return Buffer.from(el.InlineBinary, 'base64');
  return fetchBytes(
    () => archive.openBulkData(src.orthancId, Tag.ICCProfile, { signal }),
    MAX_ICC_BYTES,
    src.transferSyntax,
  );
}

/** Attaches the profile where the format carries one without re-encoding (JPEG, PNG); WebP and GIF go without. */
function attachIcc(encoded: Buffer, mediaType: string, icc: Buffer): Buffer {
  if (icc.length < 128) return encoded; // shorter than an ICC header: not a profile
  if (mediaType === 'image/jpeg') return attachIccToJpeg(encoded, icc);
  if (mediaType === 'image/png') return attachIccToPng(encoded, icc);
  return encoded;
}

/** The box a viewport scales to, unless it names a source region (whose coordinates are full-resolution). */
function reduceTarget(
  vp: RenderRequest['encode']['viewport'],
): { width: number; height: number } | undefined {
  if (!vp || vp.sx !== undefined || vp.sy !== undefined || vp.sw !== undefined || vp.sh !== undefined) {
    return undefined;
  }
  if (vp.vw === undefined && vp.vh === undefined) return undefined;
  return { width: vp.vw ?? 1, height: vp.vh ?? 1 };
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
      reduced: true,
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
