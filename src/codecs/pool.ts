/**
 * The decode thread pool: every compressed frame the gateway decodes or encodes goes through here, so the HTTP event
 * loop never runs a codec. Bounded twice: `threads` decode at once and at most `queue` frames wait; a full queue
 * answers 503 + Retry-After (ServiceBusyError) rather than growing a backlog. The decoded size of a frame is checked
 * against `maxFrameBytes` before any byte is fetched or decoded.
 */
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { Piscina } from 'piscina';
import { ServiceBusyError, UnrecoverableInputError } from '../errors';
import {
  type CodecPixels,
  type DecodedFrame,
  decodedFrameBytes,
  isDecodableSyntax,
  ownsBuffer,
} from './syntaxes';
import type { CodecResult, CodecTask, RenderTaskOptions } from './worker';
import { isUncompressedTransferSyntax } from '../dicom/transfer-syntax';
import type { DisplayImage } from '../dicom/render';
import type { EncodedFrame } from './encode';

/** Settings of one pool. */
export interface CodecPoolOptions {
  threads: number;
  queue: number;
  maxFrameBytes: number;
}

/** The settings as they appear in the configuration. */
export interface CodecConfig {
  CODEC_THREADS: number;
  CODEC_QUEUE: number;
  CODEC_MAX_FRAME_BYTES: number;
}

/** Runs the worker from source under tsx when this module itself is TypeScript (tests, `npm start`). */
function workerOptions(): { filename: string; execArgv?: string[] } {
  const ext = path.extname(__filename);
  const filename = path.join(__dirname, `worker${ext}`);
  if (ext !== '.ts') return { filename };
  // piscina require()s the file first; tsx's CommonJS hook, preloaded in the thread, makes that load TypeScript.
  return {
    filename,
    execArgv: [...threadExecArgv(process.execArgv), '--require', require.resolve('tsx/cjs')],
  };
}

/**
 * The process's Node options a worker thread may be given: V8 heap sizes are per process (the gateway runs with
 * `--max-old-space-size`, tools/gateway-node-flags.ts), and Node refuses a Worker whose execArgv names them, where a
 * Worker that inherits them implicitly (the compiled build, which passes no execArgv) is fine.
 */
export function threadExecArgv(argv: readonly string[]): string[] {
  const perProcess = /^--max-(old|semi)-space-size$/;
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const [flag] = argv[i].split('=', 1);
    if (!perProcess.test(flag)) out.push(argv[i]);
    else if (!argv[i].includes('=')) i++; // `--max-old-space-size 256`: its value goes with it
  }
  return out;
}

export class CodecPool {
  private readonly piscina: Piscina<CodecTask, CodecResult>;

  constructor(readonly options: CodecPoolOptions) {
    this.piscina = new Piscina({
      ...workerOptions(),
      minThreads: 0,
      maxThreads: Math.max(1, options.threads),
      maxQueue: Math.max(0, options.queue),
      // Idle threads exit, so a quiet gateway (or a test) holds no WebAssembly memory and no event-loop handles.
      idleTimeout: 30_000,
    });
  }

  /** Refuses a frame whose decoded size exceeds the limit; call before fetching its bytes. */
  checkSize(px: CodecPixels): void {
    const bytes = decodedFrameBytes(px);
    if (bytes > this.options.maxFrameBytes) {
      throw new UnrecoverableInputError(
        `a decoded frame of ${px.columns} x ${px.rows} x ${px.samplesPerPixel} would exceed the decode limit`,
      );
    }
  }

  private async run(
    task: CodecTask,
    signal?: AbortSignal,
    transfer?: ArrayBuffer,
  ): Promise<CodecResult & { ok: true }> {
    this.checkSize(task.px);
    let result: CodecResult;
    try {
      result = await this.piscina.run(task, { signal, transferList: transfer ? [transfer] : undefined });
    } catch (err) {
      if ((err as Error).message === 'Task queue is at limit') {
        throw new ServiceBusyError('the image decoders are busy; retry later');
      }
      throw err;
    }
    if (!result.ok) {
      if (result.input) throw new UnrecoverableInputError(result.message);
      throw new Error(result.message);
    }
    return result;
  }

  /**
   * Decodes one compressed frame (its fragments concatenated) to native little-endian, pixel-interleaved sample
   * words of Bits Allocated, with the photometric interpretation those samples are in.
   */
  async decodeFrame(
    frame: Uint8Array,
    transferSyntaxUid: string,
    px: CodecPixels,
    signal?: AbortSignal,
  ): Promise<DecodedFrame> {
    if (!isDecodableSyntax(transferSyntaxUid)) {
      throw new UnrecoverableInputError(`no decoder for transfer syntax ${transferSyntaxUid}`);
    }
    const r = await this.run({ op: 'decode', frame, transferSyntaxUid, px: plain(px) }, signal);
    return { pixels: r.pixels, photometric: r.photometric ?? px.photometric };
  }

  /**
   * Renders one stored frame to an 8-bit image on a decode thread: decodes it when compressed, then applies the
   * presentation pipeline (mask, sign, rescale, window, MONOCHROME1, palette, YBR), so the calling event loop only
   * waits. The frame's memory is handed to the thread when the view owns it: the caller must not use it afterwards.
   */
  async renderFrame(
    frame: Uint8Array,
    transferSyntaxUid: string,
    options: RenderTaskOptions,
    signal?: AbortSignal,
  ): Promise<DisplayImage> {
    const ts = transferSyntaxUid.trim();
    if (!isUncompressedTransferSyntax(ts) && !isDecodableSyntax(ts)) {
      throw new UnrecoverableInputError(`no decoder for transfer syntax ${ts}`);
    }
    const owned = ownsBuffer(frame);
    const r = await this.run(
      { op: 'render', frame, transferSyntaxUid: ts, ...options },
      signal,
      owned ? (frame.buffer as ArrayBuffer) : undefined,
    );
    return { width: r.width ?? 0, height: r.height ?? 0, channels: r.channels ?? 1, data: r.pixels };
  }

  /** Re-encodes native pixels losslessly (see encode.ts for the syntax chosen). */
  async encodeFrame(
    native: Uint8Array,
    sourceSyntax: string,
    px: CodecPixels,
    signal?: AbortSignal,
  ): Promise<EncodedFrame> {
    const r = await this.run(
      { op: 'encode', frame: native, transferSyntaxUid: sourceSyntax, px: plain(px) },
      signal,
    );
    return { frame: r.pixels, transferSyntaxUid: r.transferSyntaxUid ?? sourceSyntax };
  }

  /** Frames waiting and threads running, for metrics and tests. */
  get stats(): { queued: number; threads: number } {
    return { queued: this.piscina.queueSize, threads: this.piscina.threads.length };
  }

  async close(): Promise<void> {
    await this.piscina.close({ force: true });
  }
}

/** Only the fields a codec reads cross the thread boundary. */
function plain(px: CodecPixels): CodecPixels {
  return {
    rows: px.rows,
    columns: px.columns,
    samplesPerPixel: px.samplesPerPixel,
    bitsAllocated: px.bitsAllocated,
    bitsStored: px.bitsStored,
    signed: px.signed,
    photometric: px.photometric,
    planarConfiguration: px.planarConfiguration,
  };
}

/** Default thread count: all cores but one, so the HTTP event loop keeps one. */
export function defaultCodecThreads(): number {
  return Math.max(1, availableParallelism() - 1);
}

const pools = new WeakMap<object, CodecPool>();

/** The pool of one configuration (one per process in practice; tests with their own config get their own). */
export function codecPoolFor(config: CodecConfig): CodecPool {
  let pool = pools.get(config);
  if (!pool) {
    pool = new CodecPool({
      threads: config.CODEC_THREADS || defaultCodecThreads(),
      queue: config.CODEC_QUEUE,
      maxFrameBytes: config.CODEC_MAX_FRAME_BYTES,
    });
    pools.set(config, pool);
  }
  return pool;
}
