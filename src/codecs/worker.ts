/**
 * Body of the decode threads (piscina). Each task is one frame: decode, encode, or render (decode when compressed,
 * then the presentation pipeline to 8-bit pixels), answered with the output buffer transferred, not copied. A
 * WebAssembly trap resets the modules so one bad codestream cannot poison later tasks.
 */
import { Piscina } from 'piscina';
import {
  decodeNativeFrame,
  type FramePresentation,
  type PaletteLut,
  type PixelDescription,
  renderNativeFrame,
  shrinkToCover,
  toDisplayImage,
  type WindowSpec,
  windowFromFrameRange,
} from '../dicom/render';
import { isUncompressedTransferSyntax } from '../dicom/transfer-syntax';
import { AppError } from '../errors';
import { decodeFrameSync, type ReduceTo } from './decode';
import { encodeFrameSync } from './encode';
import { isCodecInputError } from './errors';
import { type CodecPixels, ownsBuffer } from './syntaxes';
import { loadWasm, resetWasm } from './wasm';

/** What a render task needs besides the stored frame: the pixel module, presentation and options of one request. */
export interface RenderTaskOptions {
  px: PixelDescription;
  presentation: FramePresentation;
  window?: WindowSpec;
  palette?: PaletteLut;
  /**
   * The smallest image the caller will scale to (a thumbnail box): JPEG 2000 and HTJ2K then decode only the
   * resolution levels needed. Never set when a source region is asked for (its coordinates are full-resolution).
   */
  reduceTo?: ReduceTo;
}

/** One task sent to a decode thread. */
export type CodecTask =
  | { op: 'decode'; frame: Uint8Array; transferSyntaxUid: string; px: CodecPixels }
  | { op: 'encode'; frame: Uint8Array; transferSyntaxUid: string; px: CodecPixels }
  | ({ op: 'render'; frame: Uint8Array; transferSyntaxUid: string } & RenderTaskOptions);

/** What a task answers; errors are answered, not thrown, so their kind survives the thread boundary. */
export type CodecResult =
  | {
      ok: true;
      pixels: Uint8Array;
      photometric?: string;
      transferSyntaxUid?: string;
      /** Render tasks: the 8-bit image's size and channels. */
      width?: number;
      height?: number;
      channels?: 1 | 3;
    }
  | { ok: false; input: boolean; message: string };

/** Wraps a value so piscina transfers `buffer` with it instead of copying it (a Transferable, see piscina's README). */
export function withTransfer<T extends object>(value: T, buffer: ArrayBuffer): unknown {
  return Piscina.move({
    get [Piscina.transferableSymbol]() {
      return [buffer];
    },
    get [Piscina.valueSymbol]() {
      return value;
    },
  } as never);
}

/** Hands the output's memory to the calling thread instead of copying it. */
function moved(result: CodecResult & { ok: true }): CodecResult {
  if (!ownsBuffer(result.pixels)) return result;
  return withTransfer(result, result.pixels.buffer as ArrayBuffer) as CodecResult;
}

/** Largest decoded image (pixels) the decode thread box-averages for a thumbnail; larger ones go to libvips whole. */
const BOX_SHRINK_MAX_PIXELS = 512 * 512;

function renderSync(task: Extract<CodecTask, { op: 'render' }>): CodecResult & { ok: true } {
  let { px } = task;
  const presentation = { window: task.window, palette: task.palette };
  let image;
  if (isUncompressedTransferSyntax(task.transferSyntaxUid)) {
    image = renderNativeFrame(task.frame, px, task.presentation, presentation);
  } else {
    // A window taken from the frame's own range must be the full frame's, or the thumbnail's contrast differs.
    const reduceTo = windowFromFrameRange(px, task.presentation, task.window) ? undefined : task.reduceTo;
    const decoded = decodeFrameSync(task.frame, task.transferSyntaxUid, px, reduceTo);
    if (decoded.rows && decoded.columns) px = { ...px, rows: decoded.rows, columns: decoded.columns };
    // Decoders answer pixel-interleaved samples, colour-transformed to RGB where the codestream says so.
    const decodedPx = { ...px, photometric: decoded.photometric, planarConfiguration: 0 };
    image =
      px.samplesPerPixel === 1 && decoded.photometric === px.photometric
        ? renderNativeFrame(decoded.pixels, decodedPx, task.presentation, presentation)
        : toDisplayImage(decodeNativeFrame(decoded.pixels, decodedPx), px, task.presentation, presentation);
  }
  // Thumbnails of small images: the box average to the smallest whole-factor size that still covers the box, here on
  // the decode thread, so the encoder gets a factor² smaller image with little or nothing left to resize. Measured
  // (bench/REPORT.md, "Thumbnails: box average on the decode thread"): +20 % uncached thumbnails/s on a 512 x 512 CT,
  // but 5-15 % fewer on 1024 x 1024 and 2048 x 2560 CRs, where libvips' own shrink beats this loop; so larger
  // images are left to libvips.
  if (task.reduceTo && image.width * image.height <= BOX_SHRINK_MAX_PIXELS) {
    image = shrinkToCover(image, task.reduceTo);
  }
  return { ok: true, pixels: image.data, width: image.width, height: image.height, channels: image.channels };
}

export default async function run(task: CodecTask): Promise<CodecResult> {
  try {
    if (task.op === 'render') {
      if (!isUncompressedTransferSyntax(task.transferSyntaxUid)) await loadWasm();
      return moved(renderSync(task));
    }
    await loadWasm();
    if (task.op === 'decode') {
      const out = decodeFrameSync(task.frame, task.transferSyntaxUid, task.px);
      return { ok: true, pixels: out.pixels, photometric: out.photometric };
    }
    const out = encodeFrameSync(task.frame, task.transferSyntaxUid, task.px);
    return { ok: true, pixels: out.frame, transferSyntaxUid: out.transferSyntaxUid };
  } catch (err) {
    // WebAssembly.RuntimeError (a trap); the global has no type in this project's lib settings.
    if ((err as Error)?.constructor?.name === 'RuntimeError') {
      resetWasm();
      return { ok: false, input: true, message: 'the codec failed on this frame' };
    }
    // The presentation pipeline refuses a frame with a 4xx AppError (a short frame, an unusable palette).
    const input = isCodecInputError(err) || (err instanceof AppError && err.status < 500);
    return { ok: false, input, message: (err as Error).message ?? String(err) };
  }
}
