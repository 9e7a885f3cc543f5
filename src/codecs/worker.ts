/**
 * Body of the decode threads (piscina). Each task is one frame: decode or encode, answered with the output buffer
 * transferred, not copied. A WebAssembly trap resets the modules so one bad codestream cannot poison later tasks.
 */
import { decodeFrameSync } from './decode';
import { encodeFrameSync } from './encode';
import { isCodecInputError } from './errors';
import type { CodecPixels } from './syntaxes';
import { loadWasm, resetWasm } from './wasm';

/** One task sent to a decode thread. */
export type CodecTask =
  | { op: 'decode'; frame: Uint8Array; transferSyntaxUid: string; px: CodecPixels }
  | { op: 'encode'; frame: Uint8Array; transferSyntaxUid: string; px: CodecPixels };

/** What a task answers; errors are answered, not thrown, so their kind survives the thread boundary. */
export type CodecResult =
  | { ok: true; pixels: Uint8Array; photometric?: string; transferSyntaxUid?: string }
  | { ok: false; input: boolean; message: string };

export default async function run(task: CodecTask): Promise<CodecResult> {
  await loadWasm();
  try {
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
    return { ok: false, input: isCodecInputError(err), message: (err as Error).message ?? String(err) };
  }
}
