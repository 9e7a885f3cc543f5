import { hostname } from 'node:os';
import type { Pool } from 'pg';
import type { Config } from '../config';
import { errSummary } from '../errors';
import { claimExportBatch, ensureExportCursor, exportBacklog } from '../index-db/audit-export';
import type { Logger } from '../logger';
import { toAuditMessage } from './dicom-audit';
import { type AuditDestination, HecDestination, SyslogDestination } from './transports';

/**
 * Forwards the audit trail (table audit_events) to each configured destination as DICOM audit messages.
 *
 * It reads what the trail has already written, so requests never wait for it, and the backlog of a destination
 * that is down stays in PostgreSQL (memory holds one batch). Each destination has its own cursor, advanced only
 * after a batch was sent; failures back off exponentially up to AUDIT_EXPORT_MAX_BACKOFF_MS. Several gateways
 * may run it: a destination's cursor row is locked while one of them sends (see claimExportBatch).
 */
export class AuditExporter {
  readonly failures: Record<string, number> = {};
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private readonly running = new Map<string, Promise<void>>();
  private closed = false;
  private readonly sourceId: string;

  constructor(
    private readonly db: Pool,
    private readonly logger: Logger,
    private readonly config: Pick<
      Config,
      'AUDIT_SOURCE_ID' | 'AUDIT_EXPORT_BATCH' | 'AUDIT_EXPORT_INTERVAL_MS' | 'AUDIT_EXPORT_MAX_BACKOFF_MS'
    >,
    private readonly destinations: readonly AuditDestination[],
  ) {
    this.sourceId = config.AUDIT_SOURCE_ID || hostname();
    for (const d of destinations) this.failures[d.name] = 0;
  }

  /** Creates missing cursors and starts polling. */
  async start(): Promise<void> {
    for (const d of this.destinations) {
      await ensureExportCursor(this.db, d.name);
      this.schedule(d, 0);
    }
  }

  private schedule(d: AuditDestination, delayMs: number): void {
    if (this.closed) return;
    const t = setTimeout(() => {
      const run = this.runOnce(d).then((next) => this.schedule(d, next));
      this.running.set(d.name, run);
    }, delayMs);
    t.unref();
    this.timers.set(d.name, t);
  }

  /** Sends batches while full ones come; returns the delay before the next look. */
  private async runOnce(d: AuditDestination): Promise<number> {
    const { AUDIT_EXPORT_BATCH: batch, AUDIT_EXPORT_INTERVAL_MS: interval } = this.config;
    try {
      for (;;) {
        if (this.closed) return interval;
        const claimed = await claimExportBatch(this.db, d.name, batch);
        if (!claimed) return interval;
        try {
          await d.send(
            claimed.rows,
            claimed.rows.map((r) => toAuditMessage(r, { sourceId: this.sourceId })),
          );
        } catch (err) {
          await claimed.release().catch(() => undefined);
          throw err;
        }
        await claimed.commit();
        this.failures[d.name] = 0;
        if (claimed.rows.length < batch) return interval;
      }
    } catch (err) {
      this.failures[d.name] = (this.failures[d.name] ?? 0) + 1;
      const backoff = Math.min(
        this.config.AUDIT_EXPORT_MAX_BACKOFF_MS,
        interval * 2 ** Math.min(this.failures[d.name], 16),
      );
      this.logger.warn(
        { destination: d.name, err: errSummary(err), retryInMs: backoff },
        'audit export failed',
      );
      return backoff;
    }
  }

  /** Events not yet forwarded, per destination. */
  backlog(): Promise<Record<string, number>> {
    return exportBacklog(this.db);
  }

  /** Sends what is due once more, for every destination (tests and shutdown). */
  async drain(): Promise<void> {
    await Promise.all([...this.running.values()]);
    for (const d of this.destinations) await this.runOnce(d);
  }

  /** Stops polling, lets a batch in flight finish, closes connections. */
  async close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers.values()) clearTimeout(t);
    await Promise.all([...this.running.values()]).catch(() => undefined);
    for (const d of this.destinations) await d.close().catch(() => undefined);
  }
}

let exporter: AuditExporter | undefined;

/** Starts the process-wide exporter when a destination is configured; otherwise does nothing. */
export async function initAuditExporter(
  db: Pool,
  logger: Logger,
  config: Config,
): Promise<AuditExporter | undefined> {
  const destinations: AuditDestination[] = [];
  if (config.AUDIT_SYSLOG_URL)
    destinations.push(
      new SyslogDestination(config.AUDIT_SYSLOG_URL, config.AUDIT_SYSLOG_CA_FILE || undefined),
    );
  if (config.AUDIT_HEC_URL) {
    if (!config.AUDIT_HEC_TOKEN) throw new Error('AUDIT_HEC_URL is set but AUDIT_HEC_TOKEN is not');
    destinations.push(new HecDestination(config.AUDIT_HEC_URL, config.AUDIT_HEC_TOKEN));
  }
  if (!destinations.length) return undefined;
  exporter = new AuditExporter(db, logger, config, destinations);
  await exporter.start();
  return exporter;
}

/** The process-wide exporter, if one runs. */
export function getAuditExporter(): AuditExporter | undefined {
  return exporter;
}

/** Stops the process-wide exporter. */
export async function closeAuditExporter(): Promise<void> {
  const e = exporter;
  exporter = undefined;
  await e?.close();
}
