/**
 * Streaming multipart/related codec (RFC 2046 §5.1, RFC 2387) for STOW-RS request bodies (parse) and
 * WADO-RS responses (write), as profiled by PS3.18 §8.6.1.2 and §8.7.1.
 *
 * Pure module: no Koa at runtime. Memory stays bounded by the limits whatever the size of the body.
 *
 * Why hand-written: `busboy` only does form-data; `@fastify/busboy` exports the old `Dicer` splitter, but
 * after transport padding (`--boundary  CRLF`) it drops the part's headers, and it reports a truncated
 * body as an event while still ending the part normally; `@remix-run/multipart-parser` is ESM-only and
 * rejects a preamble and header-less parts; `multipasta` assumes CRLF straight after the delimiter and
 * keeps calling back after an error; `meros` re-concatenates its buffer on every chunk and has no limits.
 */
import { randomBytes } from 'node:crypto';
import { createReadStream, promises as fsp } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';

import { AppError } from '../errors';
import { formatMediaType, parseContentType } from './media-types';

/** Which limit a body broke; the STOW handler answers 413 for all of them. */
export type MultipartLimitName = 'maxParts' | 'maxPartBytes' | 'maxTotalBytes' | 'maxHeaderBytes';

/** A multipart body exceeded one of the configured limits (→ 413 Payload Too Large). */
export class MultipartLimitError extends AppError {
  constructor(
    readonly limit: MultipartLimitName,
    readonly max: number,
  ) {
    super(413, 'multipart_limit_exceeded', `Multipart body exceeds ${limit} (${max})`);
  }
}

/** Why a body is not a well-formed multipart message. */
export type MultipartFormatReason =
  | 'not-multipart'
  | 'missing-boundary'
  | 'invalid-boundary'
  | 'no-delimiter'
  | 'bad-delimiter-line'
  | 'bad-part-headers'
  | 'truncated'
  | 'stream-error';

/** The body is not a well-formed multipart message (→ 400 Bad Request). */
export class MultipartFormatError extends AppError {
  constructor(
    readonly reason: MultipartFormatReason,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(400, 'multipart_malformed', message);
    if (options && 'cause' in options) Object.defineProperty(this, 'cause', { value: options.cause });
  }
}

/** Limits and knobs for `parseMultipartRelated`. */
export interface MultipartParseOptions {
  /** Maximum number of body parts. */
  maxParts: number;
  /** Maximum size of one part's body (headers excluded). */
  maxPartBytes: number;
  /** Maximum size of the whole request body, framing, preamble and epilogue included. */
  maxTotalBytes: number;
  /** Maximum size of one part's header block. Default 16 KiB. */
  maxHeaderBytes?: number;
  /**
   * Parts larger than this are written to a temporary file instead of being held in memory, and are
   * yielded with `path` instead of `body`. Default: never spill (parts are held up to maxPartBytes).
   */
  spillThresholdBytes?: number;
  /** Directory for spilled parts. Default os.tmpdir(). */
  tmpDir?: string;
  /**
   * When iteration stops before the body has been read to its end (consumer `return()`/`break`, or a
   * parse error), up to this many further bytes are read and discarded so that the client can still get
   * the error response on the same connection; past it the source is destroyed. 0 destroys at once.
   * Default 1 MiB.
   */
  maxDrainBytes?: number;
}

interface MultipartPartBase {
  /** 0-based position of the part in the body. */
  index: number;
  /** Part headers, names lower-cased; repeated headers joined with ", ". */
  headers: Record<string, string>;
  /** The part's Content-Type; when absent, the multipart `type` parameter; else text/plain (RFC 2046). */
  contentType: string;
  /** `contentType` without parameters, lower-cased (e.g. `application/dicom`). */
  mediaType: string;
  /** Size of the body in bytes. */
  size: number;
}

/** A part held in memory. */
export interface BufferedMultipartPart extends MultipartPartBase {
  body: Buffer;
  path?: undefined;
}

/** A part spilled to a temporary file; the file is deleted when the next part is requested. */
export interface SpilledMultipartPart extends MultipartPartBase {
  body?: undefined;
  path: string;
}

export type MultipartPart = BufferedMultipartPart | SpilledMultipartPart;

/** Reads a part's body into memory (spilled parts are read from their file). */
export async function readPartBody(part: MultipartPart): Promise<Buffer> {
  return part.body ?? fsp.readFile(part.path);
}

/** Opens a part's body as a stream (valid until the next part is requested). */
export function openPartBody(part: MultipartPart): Readable {
  return part.body ? Readable.from([part.body]) : createReadStream(part.path);
}

const CR = 0x0d;
const DASH = 0x2d;
const CRLF = Buffer.from('\r\n');
const HEADER_END = Buffer.from('\r\n\r\n');
const MAX_DELIMITER_LINE = 1024;
const DEFAULT_MAX_HEADER_BYTES = 16 * 1024;
const DEFAULT_MAX_DRAIN_BYTES = 1024 * 1024;
const SPILL_WRITE_BATCH = 1024 * 1024;

/** RFC 2046 boundary characters; we accept up to 200 of them (RFC: 70) because some clients exceed 70. */
const BOUNDARY_RE = /^[0-9A-Za-z'()+_,\-./:=? ]{0,199}[0-9A-Za-z'()+_,\-./:=?]$/;

type SplitEvent =
  | { kind: 'part'; headers: Record<string, string> }
  | { kind: 'data'; data: Buffer }
  | { kind: 'end-part' }
  | { kind: 'close' };

type SplitState = 'preamble' | 'delimiter-line' | 'headers' | 'body' | 'epilogue';

/**
 * Incremental splitter: feed it chunks, get framing events back. It keeps at most one delimiter's
 * length of body bytes (a possible partial delimiter) plus the current header block; body bytes are
 * returned as slices of the input, never copied.
 */
class MultipartSplitter {
  private state: SplitState = 'preamble';
  private readonly delimiter: Buffer;
  // A virtual CRLF lets the first delimiter sit at the very start of the body (RFC 2046: the CRLF
  // before a delimiter belongs to it, and the first one has none).
  private carry: Buffer = CRLF;
  private line: Buffer[] = [];
  private lineLength = 0;
  private header: Buffer[] = [];
  private headerLength = 0;

  constructor(
    boundary: string,
    private readonly maxHeaderBytes: number,
  ) {
    this.delimiter = Buffer.from(`\r\n--${boundary}`, 'latin1');
  }

  get done(): boolean {
    return this.state === 'epilogue';
  }

  get sawDelimiter(): boolean {
    return this.state !== 'preamble';
  }

  push(chunk: Buffer, events: SplitEvent[]): void {
    let buf = this.carry.length > 0 ? Buffer.concat([this.carry, chunk]) : chunk;
    this.carry = EMPTY;
    while (buf.length > 0) {
      switch (this.state) {
        case 'preamble':
        case 'body': {
          const at = buf.indexOf(this.delimiter);
          if (at === -1) {
            const keep = this.partialDelimiterStart(buf);
            if (this.state === 'body' && keep > 0) events.push({ kind: 'data', data: buf.subarray(0, keep) });
            // Copy the tail so the (possibly large) chunk it came from is not retained.
            this.carry = Buffer.from(buf.subarray(keep));
            return;
          }
          if (this.state === 'body') {
            if (at > 0) events.push({ kind: 'data', data: buf.subarray(0, at) });
            events.push({ kind: 'end-part' });
          }
          this.state = 'delimiter-line';
          this.line = [];
          this.lineLength = 0;
          buf = buf.subarray(at + this.delimiter.length);
          break;
        }
        case 'delimiter-line':
          buf = this.consumeDelimiterLine(buf, events);
          break;
        case 'headers':
          buf = this.consumeHeaders(buf, events);
          break;
        case 'epilogue':
          return;
      }
    }
  }

  /** Index from which `buf` may hold the start of a delimiter split across chunks (buf.length if none). */
  private partialDelimiterStart(buf: Buffer): number {
    const from = Math.max(0, buf.length - (this.delimiter.length - 1));
    for (let i = buf.indexOf(CR, from); i !== -1; i = buf.indexOf(CR, i + 1)) {
      const n = buf.length - i;
      if (buf.compare(this.delimiter, 0, n, i) === 0) return i;
    }
    return buf.length;
  }

  // After `--boundary`: either `--` (close delimiter) or transport padding (spaces/tabs) then CRLF.
  private consumeDelimiterLine(buf: Buffer, events: SplitEvent[]): Buffer {
    const seen = this.lineLength;
    const line = seen === 0 ? buf : Buffer.concat([...this.line, buf]);
    if (line[0] === DASH) {
      if (line.length === 1) return this.keepLine(line);
      if (line[1] !== DASH) {
        throw new MultipartFormatError(
          'bad-delimiter-line',
          'Unexpected characters after a multipart boundary',
        );
      }
      this.state = 'epilogue';
      events.push({ kind: 'close' });
      return EMPTY;
    }
    const eol = line.indexOf(CRLF);
    const paddingEnd = eol === -1 ? line.length : eol;
    for (let i = 0; i < paddingEnd; i++) {
      const c = line[i];
      const pendingCr = eol === -1 && i === paddingEnd - 1 && c === CR;
      if (c !== 0x20 && c !== 0x09 && !pendingCr) {
        throw new MultipartFormatError(
          'bad-delimiter-line',
          'Unexpected characters after a multipart boundary',
        );
      }
    }
    if (eol === -1) {
      if (line.length > MAX_DELIMITER_LINE) {
        throw new MultipartFormatError('bad-delimiter-line', 'Multipart boundary line too long');
      }
      return this.keepLine(line);
    }
    this.state = 'headers';
    this.header = [];
    this.headerLength = 0;
    this.line = [];
    this.lineLength = 0;
    // `eol` indexes the whole line; only the bytes of `buf` past its CRLF go on to the headers.
    return buf.subarray(eol + 2 - seen);
  }

  private keepLine(line: Buffer): Buffer {
    // Copy so that a tiny pending line does not pin a large chunk.
    this.line = [Buffer.from(line)];
    this.lineLength = line.length;
    return EMPTY;
  }

  // The header block ends with an empty line; searching CRLF + block for CRLFCRLF also finds an empty block.
  private consumeHeaders(buf: Buffer, events: SplitEvent[]): Buffer {
    const seen = this.headerLength;
    // The end of a valid header block lies within maxHeaderBytes + 4 bytes: never copy more of a chunk.
    const block = Buffer.concat([CRLF, ...this.header, buf.subarray(0, this.maxHeaderBytes + 4)]);
    const end = block.indexOf(HEADER_END);
    if (end === -1) {
      if (block.length - 2 > this.maxHeaderBytes) {
        throw new MultipartLimitError('maxHeaderBytes', this.maxHeaderBytes);
      }
      this.header = [Buffer.from(block.subarray(2))];
      this.headerLength = block.length - 2;
      return EMPTY;
    }
    if (end > this.maxHeaderBytes) throw new MultipartLimitError('maxHeaderBytes', this.maxHeaderBytes);
    const headers = parseHeaderBlock(block.subarray(2, Math.max(2, end)));
    this.header = [];
    this.headerLength = 0;
    this.state = 'body';
    events.push({ kind: 'part', headers });
    // `end + 4` indexes `block`, which is CRLF + earlier header bytes + buf.
    return buf.subarray(end + 4 - 2 - seen);
  }
}

const EMPTY = Buffer.alloc(0);

function parseHeaderBlock(raw: Buffer): Record<string, string> {
  const headers: Record<string, string> = {};
  if (raw.length === 0) return headers;
  let lastName: string | undefined;
  for (const line of raw.toString('utf8').split(/\r?\n/)) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && lastName !== undefined) {
      headers[lastName] = `${headers[lastName]} ${line.trim()}`.trim(); // obsolete line folding
      continue;
    }
    const colon = line.indexOf(':');
    const name = colon > 0 ? line.slice(0, colon).trim().toLowerCase() : '';
    if (!name || !/^[!#$%&'*+.^_`|~0-9a-z-]+$/.test(name)) {
      throw new MultipartFormatError('bad-part-headers', 'Malformed header line in a multipart part');
    }
    const value = line.slice(colon + 1).trim();
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value;
    lastName = name;
  }
  return headers;
}

/** Collects one part's body in memory, moving it to a temporary file past the spill threshold. */
class PartSink {
  private chunks: Buffer[] = [];
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private file?: FileHandle;
  private filePath?: string;
  size = 0;

  constructor(
    private readonly spillThreshold: number,
    private readonly tmp: TempDir,
  ) {}

  async write(data: Buffer): Promise<void> {
    this.size += data.length;
    if (!this.file) {
      this.chunks.push(data);
      if (this.size <= this.spillThreshold) return;
      this.filePath = await this.tmp.newFile();
      this.file = await fsp.open(this.filePath, 'w', 0o600);
      this.pending = this.chunks;
      this.pendingBytes = this.size;
      this.chunks = [];
    } else {
      this.pending.push(data);
      this.pendingBytes += data.length;
    }
    if (this.pendingBytes >= SPILL_WRITE_BATCH) await this.flush();
  }

  private async flush(): Promise<void> {
    if (!this.file || this.pending.length === 0) return;
    const { bytesWritten } = await this.file.writev(this.pending);
    if (bytesWritten !== this.pendingBytes) throw new Error('Short write while spilling a multipart part');
    this.pending = [];
    this.pendingBytes = 0;
  }

  /** Finishes the part: a Buffer (concatenated once) or the path of the spilled file. */
  async finish(): Promise<{ body: Buffer } | { path: string }> {
    if (this.file && this.filePath) {
      await this.flush();
      await this.file.close();
      this.file = undefined;
      return { path: this.filePath };
    }
    const body = this.chunks.length === 1 ? this.chunks[0] : Buffer.concat(this.chunks, this.size);
    this.chunks = [];
    return { body };
  }

  async discard(): Promise<void> {
    this.chunks = [];
    this.pending = [];
    if (this.file) await this.file.close().catch(() => undefined);
    this.file = undefined;
  }
}

/** A private temporary directory created on first use and removed with everything in it. */
class TempDir {
  private dir?: Promise<string>;
  private count = 0;

  constructor(private readonly parent: string) {}

  async newFile(): Promise<string> {
    this.dir ??= fsp.mkdtemp(path.join(this.parent, 'aperture-multipart-'));
    return path.join(await this.dir, `part-${this.count++}`);
  }

  async remove(file: string): Promise<void> {
    await fsp.rm(file, { force: true });
  }

  async dispose(): Promise<void> {
    if (!this.dir) return;
    const dir = await this.dir.catch(() => undefined);
    if (dir) await fsp.rm(dir, { recursive: true, force: true });
  }
}

/** Extracts and validates the boundary and the `type` parameter of a multipart Content-Type. */
export function parseMultipartContentType(contentTypeHeader: string | undefined): {
  mediaType: string;
  boundary: string;
  type?: string;
} {
  const parsed = parseContentType(contentTypeHeader);
  if (!parsed || !parsed.type.startsWith('multipart/')) {
    throw new MultipartFormatError('not-multipart', 'Content-Type is not a multipart media type');
  }
  const boundary = parsed.params['boundary'];
  if (boundary === undefined || boundary === '') {
    throw new MultipartFormatError('missing-boundary', 'Multipart Content-Type has no boundary parameter');
  }
  if (!BOUNDARY_RE.test(boundary)) {
    throw new MultipartFormatError('invalid-boundary', 'Multipart boundary has invalid characters or length');
  }
  return { mediaType: parsed.type, boundary, type: parsed.params['type'] };
}

function toReadable(body: NodeJS.ReadableStream): Readable {
  return body instanceof Readable ? body : new Readable().wrap(body);
}

/** Stops reading `source`: drains up to `maxDrainBytes` so an error response can still be sent, then destroys it. */
function abandonSource(source: Readable, maxDrainBytes: number): void {
  if (source.destroyed || source.readableEnded) return;
  // Late errors (client reset while draining) must not become uncaught exceptions.
  source.on('error', () => undefined);
  if (maxDrainBytes <= 0) {
    source.destroy();
    return;
  }
  let drained = 0;
  const onData = (chunk: Buffer | string): void => {
    drained += chunk.length;
    if (drained > maxDrainBytes) {
      source.off('data', onData);
      source.destroy();
    }
  };
  source.on('data', onData);
  source.resume();
}

/**
 * Parses a multipart/related body as a stream of parts (RFC 2046 §5.1, RFC 2387; PS3.18 §8.6.1.2).
 *
 * Each part's body is collected in memory (bounded by maxPartBytes) and yielded as one Buffer, because
 * STOW-RS needs the whole instance to parse it; with `spillThresholdBytes`, larger parts go to a temporary
 * file that lives until the next part is requested. Only the current part is ever held.
 *
 * Throws MultipartLimitError (413) or MultipartFormatError (400). If iteration ends before the body has
 * been read (break, return(), error), the source is drained up to `maxDrainBytes` and then destroyed.
 */
export async function* parseMultipartRelated(
  body: NodeJS.ReadableStream,
  contentTypeHeader: string,
  limits: MultipartParseOptions,
): AsyncGenerator<MultipartPart, void, undefined> {
  const source = toReadable(body);
  const maxDrainBytes = limits.maxDrainBytes ?? DEFAULT_MAX_DRAIN_BYTES;
  let sourceEnded = false;
  let contentType: ReturnType<typeof parseMultipartContentType>;
  try {
    contentType = parseMultipartContentType(contentTypeHeader);
  } catch (err) {
    abandonSource(source, maxDrainBytes);
    throw err;
  }
  const defaultPartType = contentType.type ?? 'text/plain';
  const splitter = new MultipartSplitter(
    contentType.boundary,
    limits.maxHeaderBytes ?? DEFAULT_MAX_HEADER_BYTES,
  );
  const tmp = new TempDir(limits.tmpDir ?? os.tmpdir());
  const spillThreshold = limits.spillThresholdBytes ?? Infinity;
  const chunks = source.iterator({ destroyOnReturn: false });

  let total = 0;
  let partCount = 0;
  let sink: PartSink | undefined;
  let headers: Record<string, string> = {};
  let spilledPath: string | undefined;
  const events: SplitEvent[] = [];

  try {
    for (;;) {
      let next: IteratorResult<unknown>;
      try {
        next = await chunks.next();
      } catch (err) {
        throw new MultipartFormatError('stream-error', 'Request body stream failed', { cause: err });
      }
      if (next.done) {
        sourceEnded = true;
        break;
      }
      const chunk = Buffer.isBuffer(next.value) ? next.value : Buffer.from(next.value as string);
      total += chunk.length;
      if (total > limits.maxTotalBytes) throw new MultipartLimitError('maxTotalBytes', limits.maxTotalBytes);
      if (splitter.done) continue; // epilogue: read to the end so the connection can be reused

      events.length = 0;
      splitter.push(chunk, events);
      for (const event of events) {
        switch (event.kind) {
          case 'part':
            if (++partCount > limits.maxParts) throw new MultipartLimitError('maxParts', limits.maxParts);
            headers = event.headers;
            sink = new PartSink(spillThreshold, tmp);
            break;
          case 'data':
            if (sink!.size + event.data.length > limits.maxPartBytes) {
              throw new MultipartLimitError('maxPartBytes', limits.maxPartBytes);
            }
            await sink!.write(event.data);
            break;
          case 'end-part': {
            const finished = await sink!.finish();
            const partContentType = headers['content-type'] || defaultPartType;
            const base = {
              index: partCount - 1,
              headers,
              contentType: partContentType,
              mediaType: parseContentType(partContentType)?.type ?? partContentType.toLowerCase(),
              size: sink!.size,
            };
            sink = undefined;
            if ('path' in finished) {
              spilledPath = finished.path;
              yield { ...base, path: finished.path };
              await tmp.remove(spilledPath);
              spilledPath = undefined;
            } else {
              yield { ...base, body: finished.body };
            }
            break;
          }
          case 'close':
            break;
        }
      }
    }
    if (!splitter.done) {
      throw splitter.sawDelimiter
        ? new MultipartFormatError('truncated', 'Multipart body ended before its closing delimiter')
        : new MultipartFormatError('no-delimiter', 'Multipart body contains no boundary delimiter');
    }
  } finally {
    await chunks.return?.();
    if (!sourceEnded) abandonSource(source, maxDrainBytes);
    await sink?.discard();
    if (spilledPath) await tmp.remove(spilledPath).catch(() => undefined);
    await tmp.dispose().catch(() => undefined);
  }
}

/** A part to write: a Buffer or a stream that is piped (and destroyed if the output is destroyed). */
export interface OutgoingPart {
  contentType: string;
  headers?: Record<string, string>;
  body: Buffer | NodeJS.ReadableStream;
}

/** What `multipartRelatedStream` returns. */
export interface MultipartRelatedStream {
  stream: Readable;
  boundary: string;
  /** The response Content-Type, e.g. `multipart/related; type="application/dicom"; boundary=...`. */
  contentType(type: string, params?: Record<string, string | undefined>): string;
}

/** A random boundary: 32 bytes of randomness as 64 hex characters, so it cannot plausibly occur in a body. */
export function randomBoundary(): string {
  return randomBytes(32).toString('hex');
}

const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;

function partHead(part: OutgoingPart, boundary: string, first: boolean): Buffer {
  const lines = [`${first ? '' : '\r\n'}--${boundary}`, `Content-Type: ${part.contentType}`];
  for (const [name, value] of Object.entries(part.headers ?? {})) {
    if (name.toLowerCase() === 'content-type') continue;
    if (!HEADER_NAME_RE.test(name) || /[\r\n\0]/.test(value)) {
      throw new TypeError('Invalid multipart part header');
    }
    lines.push(`${name}: ${value}`);
  }
  if (/[\r\n\0]/.test(part.contentType)) throw new TypeError('Invalid multipart part Content-Type');
  return Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'utf8');
}

function destroyBody(body: Buffer | NodeJS.ReadableStream | undefined, err?: Error): void {
  if (body && !Buffer.isBuffer(body)) {
    const destroyable = body as NodeJS.ReadableStream & { destroy?: (e?: Error) => void };
    destroyable.destroy?.(err);
  }
}

/**
 * Writes parts as a multipart/related body (RFC 2046 §5.1.1). The next part is only requested once the
 * previous one has been written, and each body is read only as fast as the output is consumed.
 * Destroying the output destroys the body being written and ends the parts iterable.
 */
export function multipartRelatedStream(
  parts: AsyncIterable<OutgoingPart>,
  boundary: string = randomBoundary(),
): MultipartRelatedStream {
  if (!BOUNDARY_RE.test(boundary) || boundary.length > 70 || boundary.endsWith(' ')) {
    throw new TypeError('Invalid multipart boundary');
  }
  let current: Buffer | NodeJS.ReadableStream | undefined;
  let aborted = false;

  async function* frames(): AsyncGenerator<Buffer, void, undefined> {
    let first = true;
    for await (const part of parts) {
      if (aborted) {
        destroyBody(part.body);
        return;
      }
      current = part.body;
      try {
        yield partHead(part, boundary, first);
        first = false;
        if (Buffer.isBuffer(part.body)) {
          if (part.body.length > 0) yield part.body;
        } else {
          for await (const chunk of toReadable(part.body)) {
            yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
          }
        }
      } finally {
        if (aborted) destroyBody(part.body);
        current = undefined;
      }
    }
    yield Buffer.from(`${first ? '' : '\r\n'}--${boundary}--\r\n`, 'latin1');
  }

  const iterator = frames();
  let pumping = false;

  const stream = new Readable({
    read() {
      if (pumping) return;
      pumping = true;
      void (async () => {
        try {
          for (;;) {
            const next = await iterator.next();
            if (this.destroyed) return;
            if (next.done) {
              this.push(null);
              return;
            }
            if (!this.push(next.value)) return;
          }
        } catch (err) {
          this.destroy(err as Error);
        } finally {
          pumping = false;
        }
      })();
    },
    destroy(err, callback) {
      aborted = true;
      // Destroying the body unblocks a pending read, so the generator can run its finally blocks.
      destroyBody(current, err ?? undefined);
      iterator.return(undefined).catch(() => undefined);
      callback(err);
    },
  });

  return {
    stream,
    boundary,
    contentType(type: string, params: Record<string, string | undefined> = {}): string {
      return formatMediaType('multipart/related', { type, ...params, boundary });
    },
  };
}
