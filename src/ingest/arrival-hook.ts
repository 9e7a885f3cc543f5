/**
 * The endpoint Orthanc's C-STORE filter (orthanc-config/aperture-arrivals.py) hands re-arrivals of archived objects
 * to. Served by the leading indexer only, on its own loopback listener (not the public gateway port), behind a random
 * bearer token the indexer registers with Orthanc together with the URL; the registration expires unless renewed,
 * so a dead leader's endpoint is forgotten and the next leader's found.
 *
 * The answer is always 200 with the DIMSE status the filter gives the modality: any trouble here (database down,
 * body too large) becomes a status, never a lost arrival.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Config } from '../config';
import { errSummary } from '../errors';
import { indexText } from '../dicom/text';
import { DimseStatus, handleRearrival, type RearrivalDeps } from './rearrival';

/** What the endpoint needs. */
export interface ArrivalHookDeps extends RearrivalDeps {
  config: RearrivalDeps['config'] &
    Partial<
      Pick<Config, 'ARRIVAL_HOOK_HOST' | 'ARRIVAL_HOOK_PORT' | 'ARRIVAL_HOOK_URL' | 'STOW_MAX_PART_BYTES'>
    >;
}

/** Registration lifetime in Orthanc; renewed every RENEW_MS while this process leads. */
const TTL_S = 30;
export const RENEW_MS = 5000;
const DEFAULT_MAX_BYTES = 1024 ** 3;

/** The endpoint; `start` listens, `register` tells Orthanc, `close` stops. */
export class ArrivalHook {
  private server?: Server;
  private url?: string;
  private readonly token = randomBytes(32).toString('hex');
  private lastRegistered = 0;
  private warnedUnsupported = false;

  constructor(private readonly deps: ArrivalHookDeps) {}

  async start(): Promise<void> {
    if (this.server) return;
    const host = this.deps.config.ARRIVAL_HOOK_HOST ?? '127.0.0.1';
    const server = createServer((req, res) => void this.handle(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.deps.config.ARRIVAL_HOOK_PORT ?? 0, host, () => resolve());
    });
    this.server = server;
    const { port } = server.address() as AddressInfo;
    this.url = `${(this.deps.config.ARRIVAL_HOOK_URL ?? `http://${host}:${port}`).replace(/\/+$/, '')}/arrivals`;
    this.lastRegistered = 0;
  }

  /** Registers (again) with Orthanc when the last registration is older than RENEW_MS. */
  async renew(): Promise<void> {
    if (!this.url || Date.now() - this.lastRegistered < RENEW_MS) return;
    try {
      await this.deps.archive.registerArrivalHook(this.url, this.token, TTL_S);
      this.lastRegistered = Date.now();
    } catch (err) {
      // An archive without the C-STORE filter (an older Orthanc configuration) must not stop the change feed.
      if (!this.warnedUnsupported) {
        this.warnedUnsupported = true;
        this.deps.logger.warn(
          { err: errSummary(err) },
          'change feed: the archive did not take the re-arrival hook (is orthanc-python loaded?)',
        );
      }
      this.lastRegistered = Date.now();
    }
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    this.url = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((r) => server.close(() => r()));
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const answer = (code: number, status?: number) => {
      res.writeHead(code, { 'content-type': 'application/json' });
      res.end(JSON.stringify(status === undefined ? {} : { status }));
    };
    if (req.method !== 'POST' || req.url !== '/arrivals') return void (req.resume(), answer(404));
    if (!this.authorized(req.headers.authorization)) return void (req.resume(), answer(401));
    const max = this.deps.config.STOW_MAX_PART_BYTES ?? DEFAULT_MAX_BYTES;
    const declared = Number(req.headers['content-length'] ?? NaN);
    if (!Number.isFinite(declared) || declared > max) {
      req.resume();
      return answer(200, DimseStatus.RefusedOutOfResources);
    }
    const route = {
      calledAet: header(req, 'x-aperture-called-aet'),
      callingAet: header(req, 'x-aperture-calling-aet'),
      remoteIp: header(req, 'x-aperture-remote-ip'),
    };
    try {
      const bytes = await readBody(req, max);
      const verdict = await handleRearrival(this.deps, bytes, route);
      answer(200, verdict.status);
    } catch (err) {
      this.deps.logger.warn({ err: errSummary(err) }, 'C-STORE re-arrival not decided: sender told to retry');
      answer(200, DimseStatus.RefusedOutOfResources);
    }
  }

  private authorized(value: string | undefined): boolean {
    const want = Buffer.from(`Bearer ${this.token}`);
    const got = Buffer.from(value ?? '');
    return got.length === want.length && timingSafeEqual(got, want);
  }
}

// indexText: an AE title is whatever bytes the peer sent, and these strings go into text columns.
function header(req: IncomingMessage, name: string): string {
  const v = req.headers[name];
  return indexText(typeof v === 'string' ? v : '').trim();
}

async function readBody(req: IncomingMessage, max: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let total = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    total += chunk.length;
    if (total > max) throw new Error('re-arrival body larger than STOW_MAX_PART_BYTES');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks, total);
}
