/**
 * The WebAssembly codec modules, instantiated once per thread. Instantiation is asynchronous, so a decode thread
 * awaits `loadWasm()` before its first task and the decoders then use them synchronously.
 */
import charlsFactory from '@cornerstonejs/codec-charls/wasmjs';
import libjpegTurboFactory from '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs';
import openjpegFactory from '@cornerstonejs/codec-openjpeg/wasmjs';
import openjphFactory from '@cornerstonejs/codec-openjph/wasmjs';
import { NativeCodecs as DcmjsNativeCodecs } from 'dcmjs-codecs';

export interface WasmCodecs {
  charls: Awaited<ReturnType<typeof charlsFactory>>;
  libjpegTurbo: Awaited<ReturnType<typeof libjpegTurboFactory>>;
  openjpeg: Awaited<ReturnType<typeof openjpegFactory>>;
  openjph: Awaited<ReturnType<typeof openjphFactory>>;
  /** dcmjs-codecs' WebAssembly build of libjpeg with 12-bit DCT (JPEG Extended, process 4); one module per thread. */
  dcmjsCodecs: typeof DcmjsNativeCodecs;
}

/** Emscripten uses the object it is given as the module itself: each module needs a fresh one. */
const quiet = () => ({ print: () => undefined, printErr: () => undefined });

let loaded: WasmCodecs | undefined;
let loading: Promise<WasmCodecs> | undefined;

/** Instantiates the modules (once). OpenJPEG logs every codestream header on stdout; that is silenced here. */
export function loadWasm(): Promise<WasmCodecs> {
  loading ??= (async () => {
    const charls = await charlsFactory(quiet());
    const libjpegTurbo = await libjpegTurboFactory(quiet());
    const openjpeg = await openjpegFactory(quiet());
    const openjph = await openjphFactory(quiet());
    // A module-wide singleton; after a trap it is released and instantiated afresh like the others.
    if (!DcmjsNativeCodecs.isInitialized()) await DcmjsNativeCodecs.initializeAsync();
    loaded = { charls, libjpegTurbo, openjpeg, openjph, dcmjsCodecs: DcmjsNativeCodecs };
    return loaded;
  })();
  return loading;
}

/** The loaded modules; loadWasm() must have resolved. */
export function wasm(): WasmCodecs {
  if (!loaded) throw new Error('codec modules are not loaded');
  return loaded;
}

/**
 * Forgets the modules after a WebAssembly trap (abort, out of memory): their memory may be left inconsistent, so
 * the next task instantiates fresh ones.
 */
export function resetWasm(): void {
  if (DcmjsNativeCodecs.isInitialized()) DcmjsNativeCodecs.release();
  loaded = undefined;
  loading = undefined;
}
