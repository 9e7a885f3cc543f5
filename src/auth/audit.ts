import type { Pool } from 'pg';
import { errSummary } from '../errors';
import { isUid } from '../dicom/uid';
import { type AuditEvent, insertAuditEvents } from '../index-db/audit';
import type { Logger } from '../logger';
import type { AuditDetail, AuditedRequest } from '../services';

/**
 * The audit trail: one row in `audit_events` per request past the public paths, denied ones included
 * (401, and the 404s that hide other projects' studies).
 *
 * Recorded: who (token subject, client id or share link id: identifiers, never names), which project and
 * which study/series/instance UIDs, the action, the outcome (the HTTP status actually sent), the response
 * body bytes actually written (counted at the socket-facing `res.write`/`res.end`, reported when the
 * response ends, so a download cut short says how much left), client address, time, method, and the route
 * pattern (never the raw URL: query strings can carry patient names).
 *
 * Writes never slow or fail a request: events go to a bounded in-memory queue flushed by multi-row INSERTs
 * every AUDIT_FLUSH_MS or every AUDIT_BATCH events. When the database is down the queue holds what it can
 * and counts what it had to drop (logged), rather than holding requests.
 */

const AUDIT_BATCH = 500;
const AUDIT_FLUSH_MS = 200;
const PROJECT_ID = /^[a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?$/;

// Route parameter names the DICOMweb and API routers use for each level; the first present wins.
const PARAM_NAMES = {
  project: ['project'],
  study: ['study', 'studyUid', 'studyInstanceUid', 'StudyInstanceUID'],
  series: ['series', 'seriesUid', 'seriesInstanceUid', 'SeriesInstanceUID'],
  instance: ['instance', 'instanceUid', 'sopInstanceUid', 'SOPInstanceUID'],
};

function pick(
  params: Record<string, string> | undefined,
  names: readonly string[],
  hasShape: (v: string) => boolean,
): string | null {
  if (!params) return null;
  for (const n of names) {
    const v = params[n];
    if (typeof v === 'string' && hasShape(v)) return v;
  }
  return null;
}

/**
 * Identifiers named by a path that never reached a router (a 401 is decided before routing), so that project
 * admins see attempts on their project too. Only values with the shape of a project id or a UID are kept.
 */
function idsFromPath(path: string): Record<string, string> {
  const out: Record<string, string> = {};
  const project = /^\/(?:api\/)?projects\/([^/]+)/.exec(path)?.[1];
  if (project) out.project = project;
  const study = /\/studies\/([^/]+)/.exec(path)?.[1];
  if (study) out.study = study;
  const series = /\/series\/([^/]+)/.exec(path)?.[1];
  if (series) out.series = series;
  const instance = /\/instances\/([^/]+)/.exec(path)?.[1];
  if (instance) out.instance = instance;
  return out;
}

function wadoUriIds(query: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [param, key] of [
    ['studyUID', 'study'],
    ['seriesUID', 'series'],
    ['objectUID', 'instance'],
  ] as const) {
    const v = query[param];
    if (typeof v === 'string') out[key] = v;
  }
  return out;
}

function byteLength(chunk: unknown, encoding: unknown): number {
  if (chunk == null || typeof chunk === 'function') return 0;
  if (typeof chunk === 'string')
    return Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
  if (ArrayBuffer.isView(chunk)) return chunk.byteLength;
  return 0;
}

/** The audit trail writer: `record` is `services.audit`; `flush` before reading; `close` at shutdown. */
export class AuditTrail {
  private queue: AuditEvent[] = [];
  private timer?: NodeJS.Timeout;
  private flushing: Promise<void> = Promise.resolve();
  private dropped = 0;
  private lastDropLog = 0;

  constructor(
    private readonly db: Pool,
    private readonly logger: Logger,
    private readonly maxQueue = 10_000,
  ) {}

  /** Describes the request and queues it once the response has ended. Never throws. */
  record(ctx: AuditedRequest, outcome: number, detail?: AuditDetail): void {
    try {
      this.recordUnsafe(ctx, outcome, detail);
    } catch (err) {
      this.logger.error({ err: errSummary(err) }, 'audit record failed');
    }
  }

  /** Events waiting to be written, and events dropped so far because the queue was full (for /metrics). */
  get stats(): { pending: number; dropped: number } {
    return { pending: this.queue.length, dropped: this.dropped };
  }

  /** Writes everything queued so far (waits for writes in progress). */
  async flush(): Promise<void> {
    if (this.timer) {
      clearTimeout(this.timer);
      this.timer = undefined;
    }
    this.flushing = this.flushing.then(() => this.drain());
    return this.flushing;
  }

  /** Flushes and stops the timer. */
  async close(): Promise<void> {
    await this.flush();
  }

  /** Queues a ready-made event (jobs and CLI commands audit through this). */
  enqueue(e: AuditEvent): void {
    if (this.queue.length >= this.maxQueue) {
      this.dropped++;
      const now = Date.now();
      if (now - this.lastDropLog > 10_000) {
        this.lastDropLog = now;
        this.logger.error({ dropped: this.dropped }, 'audit queue full: events dropped');
      }
      return;
    }
    this.queue.push(e);
    if (this.queue.length >= AUDIT_BATCH) void this.flush();
    else if (!this.timer) {
      this.timer = setTimeout(() => {
        this.timer = undefined;
        void this.flush();
      }, AUDIT_FLUSH_MS);
      this.timer.unref();
    }
  }

  private recordUnsafe(ctx: AuditedRequest, outcome: number, detail?: AuditDetail): void {
    const principal = ctx.state.principal;
    // Route parameters, or (a 401 is decided before routing) what the path names; WADO-URI (PS3.18 §9) names its
    // UIDs in the query instead: those three parameters only, never the rest of the query.
    const routeParams = {
      ...wadoUriIds(ctx.query),
      ...(ctx.params ?? idsFromPath(ctx.path)),
    };
    const extra: Record<string, unknown> = { ...(detail?.detail ?? {}) };
    if (principal?.clientId && principal.kind !== 'service') extra.client = principal.clientId;
    if (detail?.bytes !== undefined) extra.reportedBytes = detail.bytes;
    const route = ctx._matchedRoute;
    // A share link reaches one project whatever root it uses: its reads belong in that project's trail.
    const shareProject = principal?.shareScopes?.length === 1 ? principal.shareScopes[0].projectId : null;
    const event: AuditEvent = {
      at: new Date(),
      principal: principal?.id ?? 'anonymous',
      principalKind: principal?.kind ?? 'anonymous',
      action: detail?.action ?? 'request',
      projectId:
        detail?.projectId ??
        pick(routeParams, PARAM_NAMES.project, (v) => PROJECT_ID.test(v)) ??
        shareProject,
      studyUid: detail?.studyUid ?? pick(routeParams, PARAM_NAMES.study, isUid),
      seriesUid: detail?.seriesUid ?? pick(routeParams, PARAM_NAMES.series, isUid),
      sopInstanceUid: detail?.sopInstanceUid ?? pick(routeParams, PARAM_NAMES.instance, isUid),
      outcome,
      bytes: 0,
      clientIp: ctx.ip || null,
      method: ctx.method,
      route: typeof route === 'string' ? route : null,
      detail: extra,
    };

    const res = ctx.res;
    if (res.writableFinished || res.destroyed) {
      if (res.headersSent) event.outcome = res.statusCode;
      this.enqueue(event);
      return;
    }
    // Count the body as it is handed to the socket; koa writes it after every middleware has returned.
    let sent = 0;
    const write = res.write;
    const end = res.end;
    res.write = function (this: typeof res, chunk: unknown, ...rest: unknown[]) {
      sent += byteLength(chunk, rest[0]);
      return (write as (...a: unknown[]) => boolean).call(this, chunk, ...rest);
    } as typeof res.write;
    res.end = function (this: typeof res, chunk?: unknown, ...rest: unknown[]) {
      sent += byteLength(chunk, rest[0]);
      return (end as (...a: unknown[]) => typeof res).call(this, chunk, ...rest);
    } as typeof res.end;
    let done = false;
    const finish = () => {
      if (done) return;
      done = true;
      event.bytes = sent;
      if (res.headersSent) event.outcome = res.statusCode;
      if (!res.writableFinished) event.detail.aborted = true;
      this.enqueue(event);
    };
    res.once('finish', finish);
    res.once('close', finish);
  }

  private async drain(): Promise<void> {
    while (this.queue.length) {
      const batch = this.queue.splice(0, AUDIT_BATCH);
      try {
        await insertAuditEvents(this.db, batch);
      } catch (err) {
        // Keep what fits for the next attempt; never let the trail take the gateway down.
        const room = this.maxQueue - this.queue.length;
        const kept = batch.slice(0, Math.max(0, room));
        this.dropped += batch.length - kept.length;
        this.queue.unshift(...kept);
        this.logger.error(
          { err: errSummary(err), pending: this.queue.length, dropped: this.dropped },
          'audit write failed',
        );
        if (!this.timer) {
          this.timer = setTimeout(() => {
            this.timer = undefined;
            void this.flush();
          }, 5_000);
          this.timer.unref();
        }
        return;
      }
    }
  }
}

let trail: AuditTrail | undefined;

/** Starts the process-wide audit trail. */
export function initAuditTrail(db: Pool, logger: Logger, maxQueue?: number): AuditTrail {
  trail = new AuditTrail(db, logger, maxQueue);
  return trail;
}

/** The process-wide audit trail, if started. */
export function getAuditTrail(): AuditTrail | undefined {
  return trail;
}

/** Flushes and forgets the process-wide audit trail. */
export async function closeAuditTrail(): Promise<void> {
  const t = trail;
  trail = undefined;
  await t?.close();
}
