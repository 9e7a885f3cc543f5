import type { Readable } from 'node:stream';
import { Agent, errors as undiciErrors, request, type Dispatcher } from 'undici';
import type { Config } from '../config';
import { AppError, DependencyUnavailableError, NotFoundError, UpstreamError } from '../errors';

/** Orthanc's answer to POST /instances. */
export interface StoreResult {
  ID: string;
  Status: 'Success' | 'AlreadyStored' | string;
  ParentStudy: string;
  ParentSeries: string;
  ParentPatient: string;
}

/** One entry of Orthanc's /changes feed. */
export interface OrthancChange {
  Seq: number;
  ChangeType: string;
  ResourceType: 'Patient' | 'Study' | 'Series' | 'Instance' | string;
  ID: string;
  Path: string;
  Date: string;
}

/** A streamed body from the archive, with what the caller needs to frame it. */
export interface ArchiveStream {
  body: Readable;
  contentType: string;
  contentLength?: number;
}

/**
 * The archive as the gateway sees it. Everything that talks to Orthanc goes through this interface,
 * so upstream failures surface as UpstreamError (502/504) and never as raw network errors.
 */
export interface PacsClient {
  store(body: Buffer | Readable, length?: number): Promise<StoreResult>;
  attachmentMd5(instanceId: string): Promise<string | null>;
  instanceFile(instanceId: string, signal?: AbortSignal): Promise<ArchiveStream>;
  getJson<T>(path: string, signal?: AbortSignal): Promise<T>;
  postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T>;
  /** PUT of a JSON body (e.g. /modalities/{id}); answers Orthanc's JSON or undefined for an empty answer. */
  putJson(path: string, body: unknown): Promise<void>;
  getStream(path: string, signal?: AbortSignal, headers?: Record<string, string>): Promise<ArchiveStream>;
  postStream(path: string, body: unknown, signal?: AbortSignal): Promise<ArchiveStream>;
  delete(path: string): Promise<void>;
  lookup(uid: string): Promise<Array<{ ID: string; Type: string; Path: string }>>;
  changes(since: number, limit: number): Promise<{ Changes: OrthancChange[]; Done: boolean; Last: number }>;
  close(): Promise<void>;
}

/** Receives the time to response headers of each archive call (src/http/metrics.ts); never throws. */
export type UpstreamObserver = (
  method: string,
  path: string,
  seconds: number,
  status: number | 'error',
) => void;
let upstreamObserver: UpstreamObserver | undefined;
/** Sets (or, with undefined, clears) the observer of archive calls. */
export function observeUpstream(observer: UpstreamObserver | undefined): void {
  upstreamObserver = observer;
}

/** Orthanc REST client on undici with a keep-alive connection pool. */
export class OrthancClient implements PacsClient {
  private readonly agent: Agent;
  private readonly auth?: string;
  private readonly base: string;

  constructor(
    config: Pick<
      Config,
      'ORTHANC_URL' | 'ORTHANC_USERNAME' | 'ORTHANC_PASSWORD' | 'ORTHANC_TIMEOUT_MS' | 'ORTHANC_CONNECTIONS'
    >,
  ) {
    this.base = config.ORTHANC_URL.replace(/\/+$/, '');
    this.agent = new Agent({
      connections: config.ORTHANC_CONNECTIONS,
      keepAliveTimeout: 4_000,
      // Orthanc announces `Keep-Alive: timeout=1`; undici's default 2 s safety margin would make that negative and
      // close every connection after one response (a new TCP connection per archive request).
      keepAliveTimeoutThreshold: 300,
      headersTimeout: config.ORTHANC_TIMEOUT_MS,
      bodyTimeout: config.ORTHANC_TIMEOUT_MS,
      connectTimeout: 5_000,
    });
    if (config.ORTHANC_USERNAME) {
      this.auth =
        'Basic ' +
        Buffer.from(`${config.ORTHANC_USERNAME}:${config.ORTHANC_PASSWORD ?? ''}`).toString('base64');
    }
  }

  private headers(extra: Record<string, string> = {}): Record<string, string> {
    return this.auth ? { authorization: this.auth, ...extra } : extra;
  }

  private async call(
    method: Dispatcher.HttpMethod,
    path: string,
    opts: { body?: Buffer | Readable | string; headers?: Record<string, string>; signal?: AbortSignal } = {},
  ): Promise<Dispatcher.ResponseData> {
    const send = () =>
      request(this.base + path, {
        method,
        dispatcher: this.agent,
        headers: this.headers(opts.headers),
        body: opts.body,
        signal: opts.signal,
      });
    const observer = upstreamObserver;
    if (observer) {
      const started = process.hrtime.bigint();
      const seconds = () => Number(process.hrtime.bigint() - started) / 1e9;
      return this.send(method, send, opts.signal).then(
        (res) => (observer(method, path, seconds(), res.statusCode), res),
        (err: unknown) => {
          observer(method, path, seconds(), 'error');
          throw err;
        },
      );
    }
    return this.send(method, send, opts.signal);
  }

  private async send(
    method: Dispatcher.HttpMethod,
    send: () => Promise<Dispatcher.ResponseData>,
    signal?: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    try {
      return await send();
    } catch (err) {
      // A kept-alive connection that Orthanc closed just as it was reused fails before any answer byte. A read is
      // safe to send again, once, on a fresh connection; anything else is reported as it is.
      if ((method === 'GET' || method === 'HEAD') && !signal?.aborted && isStaleConnection(err)) {
        try {
          return await send();
        } catch (err2) {
          throw toUpstreamError(err2);
        }
      }
      throw toUpstreamError(err);
    }
  }

  /** Reads a JSON answer, mapping Orthanc's 404 to NotFoundError and other failures to UpstreamError. */
  private async json<T>(res: Dispatcher.ResponseData, what: string): Promise<T> {
    if (res.statusCode === 404) {
      await res.body.dump();
      throw new NotFoundError(`${what} not found in the archive`);
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text().catch(() => '');
      throw new OrthancHttpError(res.statusCode, what, text);
    }
    try {
      return (await res.body.json()) as T;
    } catch (err) {
      throw toUpstreamError(err);
    }
  }

  async store(body: Buffer | Readable, length?: number): Promise<StoreResult> {
    const headers: Record<string, string> = { 'content-type': 'application/dicom' };
    if (length !== undefined) headers['content-length'] = String(length);
    const res = await this.call('POST', '/instances', { body, headers });
    return this.json<StoreResult>(res, 'store');
  }

  async attachmentMd5(instanceId: string): Promise<string | null> {
    const res = await this.call('GET', `/instances/${encodeURIComponent(instanceId)}/attachments/dicom/md5`);
    if (res.statusCode >= 400) {
      await res.body.dump();
      return null;
    }
    return (await res.body.text()).trim() || null;
  }

  async instanceFile(instanceId: string, signal?: AbortSignal): Promise<ArchiveStream> {
    return this.getStream(`/instances/${encodeURIComponent(instanceId)}/file`, signal);
  }

  async getJson<T>(path: string, signal?: AbortSignal): Promise<T> {
    return this.json<T>(await this.call('GET', path, { signal }), 'resource');
  }

  async postJson<T>(path: string, body: unknown, signal?: AbortSignal): Promise<T> {
    const res = await this.call('POST', path, {
      body: typeof body === 'string' ? body : JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      signal,
    });
    return this.json<T>(res, 'resource');
  }

  async putJson(path: string, body: unknown): Promise<void> {
    const res = await this.call('PUT', path, {
      body: JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
    });
    if (res.statusCode >= 400) {
      const text = await res.body.text().catch(() => '');
      throw new OrthancHttpError(res.statusCode, 'resource', text);
    }
    await res.body.dump();
  }

  async getStream(
    path: string,
    signal?: AbortSignal,
    headers?: Record<string, string>,
  ): Promise<ArchiveStream> {
    return this.streamOf(await this.call('GET', path, { signal, headers }));
  }

  async postStream(path: string, body: unknown, signal?: AbortSignal): Promise<ArchiveStream> {
    const res = await this.call('POST', path, {
      body: typeof body === 'string' ? body : JSON.stringify(body),
      headers: { 'content-type': 'application/json' },
      signal,
    });
    return this.streamOf(res);
  }

  private async streamOf(res: Dispatcher.ResponseData): Promise<ArchiveStream> {
    if (res.statusCode === 404) {
      await res.body.dump();
      throw new NotFoundError('not found in the archive');
    }
    if (res.statusCode >= 400) {
      const text = await res.body.text().catch(() => '');
      throw new OrthancHttpError(res.statusCode, 'resource', text);
    }
    const len = Number(res.headers['content-length']);
    return {
      body: res.body,
      contentType: String(res.headers['content-type'] ?? 'application/octet-stream'),
      contentLength: Number.isFinite(len) ? len : undefined,
    };
  }

  async delete(path: string): Promise<void> {
    const res = await this.call('DELETE', path);
    await res.body.dump();
    if (res.statusCode >= 400 && res.statusCode !== 404)
      throw new OrthancHttpError(res.statusCode, 'delete', '');
  }

  async lookup(uid: string): Promise<Array<{ ID: string; Type: string; Path: string }>> {
    const res = await this.call('POST', '/tools/lookup', {
      body: uid,
      headers: { 'content-type': 'text/plain' },
    });
    return this.json(res, 'lookup');
  }

  async changes(
    since: number,
    limit: number,
  ): Promise<{ Changes: OrthancChange[]; Done: boolean; Last: number }> {
    return this.getJson(`/changes?since=${since}&limit=${limit}`);
  }

  async close(): Promise<void> {
    await this.agent.close();
  }
}

/** Orthanc answered with an HTTP error. 4xx on a store means Orthanc refused the object itself. */
export class OrthancHttpError extends UpstreamError {
  constructor(
    readonly upstreamStatus: number,
    what: string,
    readonly upstreamBody: string,
  ) {
    super(`archive refused ${what} (HTTP ${upstreamStatus})`);
  }
}

/**
 * Maps a network failure talking to Orthanc to a typed error. An archive that cannot be reached (refused, reset,
 * closed mid-answer, no connection in time) is an outage: 503 with Retry-After, so clients retry. An archive that
 * accepted the request but did not answer in time is 504. Nothing of the raw error reaches the client.
 */
export function toUpstreamError(err: unknown): AppError {
  if (err instanceof AppError) return err;
  const e = err as { name?: string; code?: string };
  if (e?.name === 'AbortError' || e?.code === 'UND_ERR_ABORTED') {
    return new UpstreamError('request to the archive aborted');
  }
  if (err instanceof undiciErrors.HeadersTimeoutError || err instanceof undiciErrors.BodyTimeoutError) {
    return new UpstreamError('the archive did not answer in time', true);
  }
  if (err instanceof SyntaxError) return new UpstreamError('the archive answered something unreadable');
  return new DependencyUnavailableError('archive');
}

let client: PacsClient | undefined;

/** Creates the shared archive client. */
export function initPacs(config: ConstructorParameters<typeof OrthancClient>[0]): PacsClient {
  client ??= new OrthancClient(config);
  return client;
}
/** The shared archive client. */
export function getPacs(): PacsClient {
  if (!client) throw new Error('archive client not initialised');
  return client;
}
/** Closes the shared archive client. */
export async function closePacs(): Promise<void> {
  const c = client;
  client = undefined;
  await c?.close();
}

/** True for errors of a connection that died before the request got an answer (reset or closed by the peer). */
export function isStaleConnection(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === 'UND_ERR_SOCKET' || code === 'ECONNRESET' || code === 'EPIPE';
}
