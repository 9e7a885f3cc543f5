/**
 * Clean Pixel Data for cohorts (PS3.15 E.3.1): an object with burned-in text (flagged, or of a kind known to carry
 * it) whose kind a pixel rule names gets every region of every matching rule blacked out in every frame, and is
 * then de-identified as usual with Burned In Annotation NO. Compressed frames are decoded and re-encoded on the
 * codec threads (src/codecs), never on the worker's event loop: RLE goes back into RLE, every other compressed
 * syntax into JPEG-LS lossless (so cleaning adds no lossy step; Lossy Image Compression stays as it was), and native
 * pixel data stays native (written Explicit VR Little Endian by the de-identifier). An object no rule names, or
 * whose pixels cannot be decoded, is refused with a reason code: never passed through.
 */
import { readFileSync } from 'node:fs';
import type { CodecPool } from '../codecs';
import { TransferSyntax } from '../dicom/transfer-syntax';
import {
  BUILT_IN_PIXEL_RULES,
  blackoutFrame,
  frameBytes,
  matchPixelRules,
  parsePixelRules,
  PIXEL_DATA,
  type PixelRefusal,
  type PixelRule,
  pixelLayout,
  readPart10,
  splitFrames,
  withCleanedPixels,
} from '../dicom/deid';
import { UnrecoverableInputError } from '../errors';

/** The cleaned object and the rules applied, or why its pixels cannot be cleaned. */
export type CleanedPixels = { bytes: Buffer; rules: string[] } | { refused: PixelRefusal | 'unreadable' };

const rulesByFile = new Map<string, readonly PixelRule[]>();

/** The site's rules (DEID_PIXEL_RULES_FILE, read once per process) followed by the vendored ones. */
export function pixelRulesFor(file: string): readonly PixelRule[] {
  let rules = rulesByFile.get(file);
  if (!rules) {
    const site = file ? parsePixelRules(JSON.parse(readFileSync(file, 'utf8'))) : [];
    rules = [...site, ...BUILT_IN_PIXEL_RULES];
    rulesByFile.set(file, rules);
  }
  return rules;
}

/** Blacks out the burned-in regions of one Part-10 object (see the module comment). */
export async function cleanBurnedInPixels(
  part10: Buffer,
  rules: readonly PixelRule[],
  codecs: CodecPool,
): Promise<CleanedPixels> {
  let parsed;
  try {
    parsed = readPart10(part10);
  } catch {
    return { refused: 'unreadable' };
  }
  const ds = parsed.dataset;
  const matched = matchPixelRules(ds, rules);
  if (matched.length === 0) return { refused: 'burned-in-no-rule' };
  const regions = matched.flatMap((r) => r.regions);
  const layout = pixelLayout(ds);
  if (typeof layout === 'string') return { refused: layout };
  const pixel = ds.find((e) => e.tag === PIXEL_DATA);
  if (!pixel) return { refused: 'pixel-layout-unsupported' };
  const names = matched.map((r) => r.name);

  if (!pixel.encapsulated) {
    // Subsampled native colour (YBR_FULL_422, …) has no whole sample per pixel to black out.
    if (layout.samplesPerPixel === 3 && /_42[02]$/.test(layout.photometric))
      return { refused: 'pixel-layout-unsupported' };
    const size = frameBytes(layout);
    const native = Buffer.from(pixel.value ?? Buffer.alloc(0));
    if (native.length < size * layout.frames) return { refused: 'pixel-layout-unsupported' };
    for (let f = 0; f < layout.frames; f++)
      blackoutFrame(native.subarray(f * size, (f + 1) * size), layout, regions);
    return {
      bytes: withCleanedPixels(
        parsed.meta,
        ds,
        { native },
        TransferSyntax.explicitVrLittleEndian,
        layout.photometric,
        layout.planarConfiguration,
      ),
      rules: names,
    };
  }

  const frames = splitFrames(pixel.encapsulated, layout.frames);
  if (!frames || frames.length !== layout.frames) return { refused: 'pixel-fragments-ambiguous' };
  const target =
    parsed.transferSyntaxUid === TransferSyntax.rleLossless
      ? TransferSyntax.rleLossless
      : TransferSyntax.jpegLsLossless;
  const out: Uint8Array[] = [];
  let photometric = layout.photometric;
  try {
    for (const frame of frames) {
      const decoded = await codecs.decodeFrame(frame, parsed.transferSyntaxUid, layout);
      photometric = decoded.photometric;
      // Decoded colour is pixel-interleaved; a decoder that undoes a colour transform answers RGB.
      const px = { ...layout, photometric, planarConfiguration: 0 };
      if (px.samplesPerPixel === 3 && /_42[02]$/.test(photometric))
        return { refused: 'pixel-layout-unsupported' };
      blackoutFrame(decoded.pixels, px, regions);
      const encoded = await codecs.encodeFrame(decoded.pixels, target, px);
      out.push(encoded.frame);
    }
  } catch (err) {
    // Input the codecs refuse (a corrupt or unsupported codestream, a frame above the size limit) is the object's
    // fault and can never succeed; anything else (the pool is busy or broken) is an outage and is retried.
    if (err instanceof UnrecoverableInputError) return { refused: 'pixel-undecodable' };
    throw err;
  }
  return {
    bytes: withCleanedPixels(parsed.meta, ds, { frames: out }, target, photometric, 0),
    rules: names,
  };
}
