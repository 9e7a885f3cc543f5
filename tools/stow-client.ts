/**
 * A small STOW-RS client (PS3.18 §10.5 Store Instances): POSTs Part-10 objects to `{baseUrl}/studies` as
 * `multipart/related; type="application/dicom"`, batched and with several requests in flight. Used by the
 * `synth` CLI command, the demo and the benchmarks.
 *
 * Bodies are framed around the caller's buffers (never concatenated into one) and sent with a
 * Content-Length, which every server accepts (chunked uploads are not universal). Memory is bounded by
 * concurrency x batch size, since a batch's buffers are held until its request is answered.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { request, type Dispatcher } from 'undici';
import { BadRequestError } from '../src/errors';

/** One object to store: a Part-10 buffer, with its study when batching by study. */
export type StowItem = Buffer | { buffer: Buffer; studyInstanceUid?: string };

export interface StowClientOptions {
  /**
   * DICOMweb root, e.g. http://localhost:8080/projects/demo/dicom-web (the client appends /studies).
   * Credentials in the URL (http://user:pass@host/...) are sent as Basic authentication, e.g. for Orthanc's
   * own DICOMweb plugin in benchmarks.
   */
  baseUrl: string;
  /** Bearer token sent as `Authorization: Bearer ...` (wins over URL credentials). */
  token?: string;
  /** Extra request headers. */
  headers?: Record<string, string>;
  /** Instances per request, or 'study' (default): one request per run of consecutive instances of a study. */
  batch?: number | 'study';
  /** Requests in flight at once (default 1). */
  concurrency?: number;
  /** A batch is cut before it would exceed this many bytes of DICOM (default 256 MiB). */
  maxBatchBytes?: number;
  /** Headers and body timeout per request, ms (default 300 000). */
  timeoutMs?: number;
  /**
   * A request not answered 200 is sent again up to this many times (default 0), e.g. for long loads on a busy
   * machine; storing the same objects again is AlreadyStored. The result of its last attempt is the one reported.
   */
  retries?: number;
  /** Keep every result in the summary (default true); turn off for very long runs and use onResult. */
  keepResults?: boolean;
  /** Called as each request completes. */
  onResult?: (result: StowRequestResult) => void;
  /** undici dispatcher (connection pool, proxy, or a MockAgent in tests). */
  dispatcher?: Dispatcher;
}

export interface StowRequestResult {
  /** 0-based position of the batch in the input. */
  index: number;
  /** HTTP status; 0 when no response arrived (connection refused, timeout). */
  status: number;
  instances: number;
  /** Bytes of DICOM in the request (framing excluded). */
  bytes: number;
  studyInstanceUids: string[];
  /** Parsed JSON response (DICOM JSON for a STOW-RS store response), or null. */
  body: unknown;
  /** Why the request failed without a response, or the start of a non-JSON error body. */
  error?: string;
  ms: number;
}

export interface StowSummary {
  requests: number;
  instances: number;
  bytes: number;
  /** Requests answered 200 (all stored) / 202 (some stored, warnings or failures) / anything else. */
  ok: number;
  partial: number;
  failed: number;
  /** Attempts sent again after an answer other than 200 (see StowClientOptions.retries). */
  retried: number;
  /** Requests per HTTP status ('0' for no response). */
  statuses: Record<string, number>;
  seconds: number;
  results: StowRequestResult[];
}

const DEFAULT_MAX_BATCH_BYTES = 256 * 1024 * 1024;

/** Stores every object from `source` with STOW-RS and summarises the responses; never throws for HTTP errors. */
export async function stowInstances(
  source: Iterable<StowItem> | AsyncIterable<StowItem>,
  opts: StowClientOptions,
): Promise<StowSummary> {
  const batch = opts.batch ?? 'study';
  if (batch !== 'study' && (!Number.isInteger(batch) || batch < 1)) {
    throw new BadRequestError('batch must be a positive integer or "study"');
  }
  const concurrency = opts.concurrency ?? 1;
  if (!Number.isInteger(concurrency) || concurrency < 1) {
    throw new BadRequestError('concurrency must be a positive integer');
  }
  const { url, authorization } = studiesUrl(opts.baseUrl);
  const requestOpts = {
    ...opts,
    headers: { ...(authorization ? { authorization } : {}), ...opts.headers },
  };
  const batches = new Batcher(source, batch, opts.maxBatchBytes ?? DEFAULT_MAX_BATCH_BYTES);
  const started = performance.now();
  const summary: StowSummary = {
    requests: 0,
    instances: 0,
    bytes: 0,
    ok: 0,
    partial: 0,
    failed: 0,
    retried: 0,
    statuses: {},
    seconds: 0,
    results: [],
  };

  const worker = async (): Promise<void> => {
    for (let next = await batches.next(); next; next = await batches.next()) {
      let sent = await storeBatch(url, next.items, requestOpts);
      for (let left = opts.retries ?? 0; sent.status !== 200 && left > 0; left--) {
        summary.retried++;
        sent = await storeBatch(url, next.items, requestOpts);
      }
      const result: StowRequestResult = {
        index: next.index,
        instances: next.items.length,
        bytes: next.bytes,
        studyInstanceUids: [
          ...new Set(next.items.flatMap((i) => (i.studyInstanceUid ? [i.studyInstanceUid] : []))),
        ],
        ...sent,
      };
      summary.requests++;
      summary.instances += result.instances;
      summary.bytes += result.bytes;
      summary.statuses[result.status] = (summary.statuses[result.status] ?? 0) + 1;
      if (result.status === 200) summary.ok++;
      else if (result.status === 202) summary.partial++;
      else summary.failed++;
      if (opts.keepResults ?? true) summary.results.push(result);
      opts.onResult?.(result);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  summary.results.sort((a, b) => a.index - b.index);
  summary.seconds = (performance.now() - started) / 1000;
  return summary;
}

/** One STOW-RS request with the given objects; HTTP errors come back as a status, not an exception. */
export async function storeBatch(
  url: string,
  buffers: readonly (Buffer | { buffer: Buffer })[],
  opts: Pick<StowClientOptions, 'token' | 'headers' | 'timeoutMs' | 'dispatcher'> = {},
): Promise<{ status: number; body: unknown; error?: string; ms: number }> {
  const started = performance.now();
  const parts = buffers.map((b) => (Buffer.isBuffer(b) ? b : b.buffer));
  const body = multipartBody(parts);
  const headers: Record<string, string> = {
    ...Object.fromEntries(Object.entries(opts.headers ?? {}).map(([k, v]) => [k.toLowerCase(), v])),
    'content-type': body.contentType,
    'content-length': String(body.length),
    accept: 'application/dicom+json',
  };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  const timeout = opts.timeoutMs ?? 300_000;
  try {
    const res = await request(url, {
      method: 'POST',
      headers,
      body: Readable.from(body.chunks()),
      headersTimeout: timeout,
      bodyTimeout: timeout,
      dispatcher: opts.dispatcher,
    });
    const text = await res.body.text();
    const type = String(res.headers['content-type'] ?? '');
    const ms = performance.now() - started;
    if (text && /json/i.test(type)) {
      try {
        return { status: res.statusCode, body: JSON.parse(text) as unknown, ms };
      } catch {
        return { status: res.statusCode, body: null, error: 'response is not valid JSON', ms };
      }
    }
    const error = res.statusCode >= 400 && text ? text.slice(0, 500) : undefined;
    return { status: res.statusCode, body: null, ...(error ? { error } : {}), ms };
  } catch (err) {
    const e = err as Error & { code?: string };
    return {
      status: 0,
      body: null,
      error: e.code ? `${e.code}: ${e.message}` : e.message,
      ms: performance.now() - started,
    };
  }
}

/** `{baseUrl}/studies` (trailing slash tolerated), with URL credentials moved to a Basic Authorization value. */
export function studiesUrl(baseUrl: string): { url: string; authorization?: string } {
  let parsed: URL;
  try {
    parsed = new URL(baseUrl);
  } catch {
    throw new BadRequestError('baseUrl must be an absolute http(s) URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    throw new BadRequestError('baseUrl must be an absolute http(s) URL');
  }
  let authorization: string | undefined;
  if (parsed.username || parsed.password) {
    const user = decodeURIComponent(parsed.username);
    const pass = decodeURIComponent(parsed.password);
    authorization = `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
    parsed.username = '';
    parsed.password = '';
  }
  return { url: `${parsed.href.replace(/\/+$/, '')}/studies`, authorization };
}

/**
 * A multipart/related body (RFC 2387, PS3.18 §8.6.1.2) with one application/dicom part per buffer: its exact
 * length, Content-Type, and the chunks to send (framing interleaved with the caller's buffers, uncopied).
 */
export function multipartBody(parts: readonly Buffer[]): {
  boundary: string;
  contentType: string;
  length: number;
  chunks: () => Generator<Buffer>;
} {
  let boundary = `aperture-stow-${randomBytes(16).toString('hex')}`;
  // 128 random bits cannot plausibly occur in the data, but checking is cheap next to sending.
  while (parts.some((p) => p.includes(boundary)))
    boundary = `aperture-stow-${randomBytes(16).toString('hex')}`;
  const head = (first: boolean): Buffer =>
    Buffer.from(`${first ? '' : '\r\n'}--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, 'latin1');
  const firstHead = head(true);
  const nextHead = head(false);
  const close = Buffer.from(`${parts.length ? '\r\n' : ''}--${boundary}--\r\n`, 'latin1');
  const length =
    parts.reduce((n, p) => n + p.length, 0) +
    (parts.length ? firstHead.length + (parts.length - 1) * nextHead.length : 0) +
    close.length;
  return {
    boundary,
    contentType: `multipart/related; type="application/dicom"; boundary=${boundary}`,
    length,
    *chunks() {
      for (let k = 0; k < parts.length; k++) {
        yield k === 0 ? firstHead : nextHead;
        yield parts[k];
      }
      yield close;
    },
  };
}

interface Batch {
  index: number;
  items: { buffer: Buffer; studyInstanceUid?: string }[];
  bytes: number;
}

/** Cuts the source into batches; workers take batches one at a time, so the source is read in order. */
class Batcher {
  private readonly it: Iterator<StowItem> | AsyncIterator<StowItem>;
  private pending: { buffer: Buffer; studyInstanceUid?: string } | null = null;
  private done = false;
  private count = 0;
  private queue: Promise<unknown> = Promise.resolve();

  constructor(
    source: Iterable<StowItem> | AsyncIterable<StowItem>,
    private readonly size: number | 'study',
    private readonly maxBytes: number,
  ) {
    this.it =
      Symbol.asyncIterator in source
        ? (source as AsyncIterable<StowItem>)[Symbol.asyncIterator]()
        : (source as Iterable<StowItem>)[Symbol.iterator]();
  }

  next(): Promise<Batch | null> {
    const taken = this.queue.then(() => this.take());
    this.queue = taken.catch(() => undefined);
    return taken;
  }

  private async take(): Promise<Batch | null> {
    const items: Batch['items'] = [];
    let bytes = 0;
    for (;;) {
      let item = this.pending;
      this.pending = null;
      if (!item) {
        if (this.done) break;
        const r = await this.it.next();
        if (r.done) {
          this.done = true;
          break;
        }
        item = Buffer.isBuffer(r.value) ? { buffer: r.value } : r.value;
        if (this.size === 'study' && !item.studyInstanceUid) {
          throw new BadRequestError('batching by study needs studyInstanceUid on every item');
        }
      }
      const fits =
        items.length === 0 ||
        ((this.size === 'study'
          ? item.studyInstanceUid === items[0].studyInstanceUid
          : items.length < this.size) &&
          bytes + item.buffer.length <= this.maxBytes);
      if (!fits) {
        this.pending = item;
        break;
      }
      items.push(item);
      bytes += item.buffer.length;
    }
    return items.length ? { index: this.count++, items, bytes } : null;
  }
}
