import type { Context, Next } from 'koa';
import { timingSafeEqual } from 'node:crypto';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { getAuditExporter } from '../audit-export/exporter';
import { getAuditTrail } from '../auth/audit';
import { isUid } from '../dicom/uid';
import { AppError, ForbiddenError, UnauthorizedError } from '../errors';
import { readIndexerCursor } from '../index-db/ops-metrics';
import { replicationState } from '../index-db/sites';
import { readSyncStatus } from '../sites/storage-sync';
import { storageSyncStateDir } from '../sites/sync-config';
import { CURSOR_NAME } from '../ingest/change-feed';
import { QueueName, getQueue, queuesReady } from '../jobs/queues';
import { observeUpstream } from '../orthanc/client';
import { storedFileReads } from '../orthanc/storage-files';
import { siteSummary, syncSummary } from '../readiness';
import type { Services } from '../services';

/**
 * Prometheus metrics of one gateway process, served at /metrics in the text exposition format.
 *
 * Labels carry route templates (`/projects/:project/dicom-web/studies/:study`), methods and status codes, never a
 * UID, a query string or anything a caller typed: label values are a fixed, small set, and hold no PHI.
 *
 * Who may read it: with METRICS_TOKEN set, callers presenting `Authorization: Bearer <token>`; without it, only
 * clients connected over the loopback interface (the socket's address, never X-Forwarded-For). The reverse proxy
 * and the Ingress also refuse /metrics from outside.
 */

const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const UPSTREAM_BUCKETS = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30];
/** Each dependency read of a scrape gives up after this long, so that a scrape never hangs on a dependency. */
const COLLECT_TIMEOUT_MS = 1000;

/** Path of Orthanc's REST API with its identifiers replaced, so that it is fit to be a label. */
export function upstreamPathTemplate(path: string): string {
  return path
    .split('?')[0]
    .split('/')
    .map((seg) => {
      if (/^[0-9a-f]{8}(-[0-9a-f]{8}){4}$/.test(seg)) return ':id';
      if (/^\d+$/.test(seg)) return ':n';
      if (isUid(seg) && seg.includes('.')) return ':uid';
      if (seg.length > 40) return ':x';
      return seg;
    })
    .join('/');
}

function within<T>(op: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  op.catch(() => undefined);
  return Promise.race([
    op,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timeout')), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

/** Orthanc's change dates are `YYYYMMDDTHHMMSS`, in the archive's local time (UTC in the images deploy/ uses). */
function orthancDate(s: string): number | undefined {
  const m = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})$/.exec(s);
  return m ? Date.UTC(+m[1], +m[2] - 1, +m[3], +m[4], +m[5], +m[6]) : undefined;
}

/** The process's metrics and the middleware that records requests and serves /metrics. */
export class GatewayMetrics {
  readonly registry = new Registry();
  private readonly httpDuration: Histogram<'method' | 'route' | 'status'>;
  private readonly upstreamDuration: Histogram<'method' | 'path' | 'status'>;

  constructor(private readonly services: Services) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'aperture_process_' });
    this.httpDuration = new Histogram({
      name: 'aperture_http_request_duration_seconds',
      help: 'Time from request to the last byte of the answer, by route template, method and status',
      labelNames: ['method', 'route', 'status'],
      buckets: HTTP_BUCKETS,
      registers,
    });
    this.upstreamDuration = new Histogram({
      name: 'aperture_orthanc_request_duration_seconds',
      help: "Time to Orthanc's response headers, by method, REST path template and status (error = no answer)",
      labelNames: ['method', 'path', 'status'],
      buckets: UPSTREAM_BUCKETS,
      registers,
    });
    const { db, pacs } = services;
    new Gauge({
      name: 'aperture_db_pool_connections',
      help: 'PostgreSQL pool connections by state (waiting = callers queued for a connection)',
      labelNames: ['state'],
      registers,
      collect() {
        this.set({ state: 'total' }, db.totalCount);
        this.set({ state: 'idle' }, db.idleCount);
        this.set({ state: 'waiting' }, db.waitingCount);
      },
    });
    new Gauge({
      name: 'aperture_queue_jobs',
      help: 'BullMQ jobs by queue and state (failed = jobs that used up their attempts and are kept)',
      labelNames: ['queue', 'state'],
      registers,
      async collect() {
        if (!queuesReady()) return;
        for (const name of Object.values(QueueName)) {
          try {
            const counts = await within(
              getQueue(name).getJobCounts('waiting', 'active', 'delayed', 'failed', 'completed'),
              COLLECT_TIMEOUT_MS,
            );
            for (const [state, n] of Object.entries(counts)) this.set({ queue: name, state }, n);
          } catch {
            // Redis down: the series go stale rather than the scrape failing; /readyz says why.
          }
        }
      },
    });
    const lagSeconds = new Gauge({
      name: 'aperture_indexer_lag_seconds',
      help: 'Age of the oldest archive change the change-feed indexer has not handled yet (0 = up to date)',
      registers,
    });
    new Gauge({
      name: 'aperture_indexer_cursor',
      help: 'Orthanc change sequence number the change-feed indexer has handled up to (shared by all gateways)',
      registers,
      async collect() {
        try {
          const cursor = await within(readIndexerCursor(db, CURSOR_NAME), COLLECT_TIMEOUT_MS);
          if (cursor === null) return;
          this.set(cursor);
          const next = await within(pacs.changes(cursor, 1), COLLECT_TIMEOUT_MS);
          const at = next.Changes[0] ? orthancDate(next.Changes[0].Date) : undefined;
          lagSeconds.set(at === undefined ? 0 : Math.max(0, (Date.now() - at) / 1000));
        } catch {
          // Index or archive down: stale series, and /readyz reports it.
        }
      },
    });
    // sites (issue 16): streaming replication, as this site's PostgreSQL sees it. prom-client collects all gauges
    // at once, so the four share one query per scrape.
    let siteRead: { at: number; p: Promise<ReturnType<typeof siteSummary> | undefined> } | undefined;
    const site = () => {
      if (!siteRead || Date.now() - siteRead.at > 1000) {
        siteRead = {
          at: Date.now(),
          p: within(replicationState(db), COLLECT_TIMEOUT_MS).then(siteSummary, () => undefined),
        };
      }
      return siteRead.p;
    };
    const siteGauge = (name: string, help: string, value: (s: ReturnType<typeof siteSummary>) => number) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          // Index down: stale series, and /readyz reports it.
          const s = await site();
          if (s) this.set(value(s));
        },
      });
    siteGauge(
      'aperture_replication_lag_bytes',
      'WAL bytes not yet replayed: by this standby, or (primary) by its slowest standby',
      (s) => s.replicationLagBytes,
    );
    siteGauge(
      'aperture_replication_lag_seconds',
      "Replication delay: age of the last replayed commit while this standby is behind, or (primary) the slowest standby's replay lag",
      (s) => s.replicationLagSeconds,
    );
    siteGauge('aperture_replication_standbys', 'Standbys connected to this primary', (s) => s.standbys);
    siteGauge('aperture_site_standby', '1 while this site is a read-only standby', (s) =>
      s.role === 'standby' ? 1 : 0,
    );
    // Storage sync at a standby site (issue 16): what `aperture storage-sync` last wrote to its status file. Absent
    // (no series) where no sync runs.
    const stateDir = storageSyncStateDir(this.services.config);
    let syncRead: { at: number; p: Promise<ReturnType<typeof syncSummary>> } | undefined;
    const sync = () => {
      if (!syncRead || Date.now() - syncRead.at > 1000)
        syncRead = { at: Date.now(), p: readSyncStatus(stateDir).then(syncSummary) };
      return syncRead.p;
    };
    const syncGauge = (
      name: string,
      help: string,
      value: (s: NonNullable<ReturnType<typeof syncSummary>>) => number,
    ) =>
      new Gauge({
        name,
        help,
        registers,
        async collect() {
          const s = await sync();
          if (s) this.set(value(s));
        },
      });
    syncGauge(
      'aperture_storage_sync_backlog_files',
      "Storage files this site's replicated Orthanc index names that are not on its disk yet (found by the sync)",
      (s) => s.backlogFiles,
    );
    syncGauge('aperture_storage_sync_backlog_bytes', 'Bytes of those files', (s) => s.backlogBytes);
    syncGauge(
      'aperture_storage_sync_corrupt_files',
      'Copies at this site the last verify pass found not matching the index (moved aside and fetched again)',
      (s) => s.corruptFiles,
    );
    syncGauge(
      'aperture_storage_sync_behind_seconds',
      'Time since the start of the newest sync pass that ended with every indexed file here (-1: never)',
      (s) => s.behindSeconds,
    );
    syncGauge(
      'aperture_storage_sync_status_age_seconds',
      'Age of the sync status (grows when the sync process stopped)',
      (s) => s.statusAgeSeconds,
    );
    new Gauge({
      name: 'aperture_archive_file_reads',
      help: 'Whole stored instances read from Orthanc storage files (ARCHIVE_FILE_READS) or through its REST API instead, since start',
      labelNames: ['source'],
      registers,
      collect() {
        this.set({ source: 'disk' }, storedFileReads.fromDisk);
        this.set({ source: 'rest' }, storedFileReads.throughRest);
      },
    });
    new Gauge({
      name: 'aperture_audit_queue_events',
      help: 'Audit events waiting in memory to be written to the audit trail',
      registers,
      collect() {
        this.set(getAuditTrail()?.stats.pending ?? 0);
      },
    });
    new Gauge({
      name: 'aperture_audit_dropped_events',
      help: 'Audit events dropped because the in-memory queue was full while PostgreSQL was down (since start)',
      registers,
      collect() {
        this.set(getAuditTrail()?.stats.dropped ?? 0);
      },
    });
    new Gauge({
      name: 'aperture_audit_export_backlog_events',
      help: 'Audit trail events not yet forwarded, per destination (syslog, hec)',
      labelNames: ['destination'],
      registers,
      async collect() {
        const exporter = getAuditExporter();
        if (!exporter) return;
        try {
          const backlog = await within(exporter.backlog(), COLLECT_TIMEOUT_MS);
          for (const [destination, n] of Object.entries(backlog)) this.set({ destination }, n);
        } catch {
          // Index down: stale series.
        }
      },
    });
    new Counter({
      name: 'aperture_audit_export_failures_total',
      help: 'Failed attempts to forward a batch of audit messages, per destination (each is retried)',
      labelNames: ['destination'],
      registers,
      collect() {
        const exporter = getAuditExporter();
        if (!exporter) return;
        this.reset();
        for (const [destination, n] of Object.entries(exporter.failures)) this.inc({ destination }, n);
      },
    });
    observeUpstream((method, path, seconds, status) => {
      this.upstreamDuration.observe(
        { method, path: upstreamPathTemplate(path), status: String(status) },
        seconds,
      );
    });
  }

  /** Stops observing the archive client (the registry is dropped with this object). */
  close(): void {
    observeUpstream(undefined);
  }

  /** Koa middleware: serves /metrics, and times every other request until its answer has been sent. */
  middleware(): (ctx: Context, next: Next) => Promise<void> {
    const token = this.services.config.METRICS_TOKEN;
    return async (ctx, next) => {
      if (ctx.path === '/metrics') return this.serve(ctx, token);
      const started = process.hrtime.bigint();
      let thrownStatus: number | undefined;
      const res = ctx.res;
      const observe = () => {
        const route = (ctx as unknown as { _matchedRoute?: unknown })._matchedRoute;
        this.httpDuration.observe(
          {
            method: ctx.method,
            route: typeof route === 'string' ? route : '(unmatched)',
            status: String(res.headersSent ? res.statusCode : (thrownStatus ?? ctx.status)),
          },
          Number(process.hrtime.bigint() - started) / 1e9,
        );
      };
      // Streamed answers (WADO, ZIP) are written after every middleware has returned: time them to the last byte.
      // 'close' alone: Node emits it after 'finish' and on an aborted answer. The response already carries ten
      // 'close' listeners (Koa and the other middleware); a leak warning per request for an eleventh would cost
      // more than the histogram, and one bounded listener per response is no leak, so the limit is raised by one.
      res.setMaxListeners(res.getMaxListeners() + 1);
      res.once('close', observe);
      try {
        await next();
      } catch (err) {
        thrownStatus = (err as { status?: number }).status ?? 500;
        throw err;
      }
    };
  }

  private async serve(ctx: Context, token: string): Promise<void> {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') {
      throw new AppError(405, 'method_not_allowed', 'metrics are read with GET', { Allow: 'GET, HEAD' });
    }
    if (token) {
      const given = Buffer.from(/^Bearer (.+)$/i.exec(ctx.get('authorization'))?.[1] ?? '');
      const want = Buffer.from(token);
      if (given.length !== want.length || !timingSafeEqual(given, want)) {
        throw new UnauthorizedError('metrics need the bearer token set in METRICS_TOKEN');
      }
    } else if (!isLoopback(ctx.socket.remoteAddress)) {
      // The socket's address, not ctx.ip: X-Forwarded-For must not make a remote caller look local.
      throw new ForbiddenError('metrics are served to loopback clients only unless METRICS_TOKEN is set');
    }
    ctx.set('Content-Type', this.registry.contentType);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await this.registry.metrics();
  }
}

function isLoopback(addr: string | undefined): boolean {
  return !!addr && (addr === '::1' || addr.startsWith('127.') || addr.startsWith('::ffff:127.'));
}

/** Metrics middleware for createApp; a pass-through when METRICS_ENABLED is false. */
export function metricsMiddleware(services: Services): (ctx: Context, next: Next) => Promise<void> {
  if (!services.config.METRICS_ENABLED) return (_ctx, next) => next();
  const m = new GatewayMetrics(services);
  return m.middleware();
}
