import { SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { loadConfig } from '../../config';
import { errSummary } from '../../errors';
import { migrate } from '../../index-db/migrate';
import { closeDb, initDb } from '../../index-db/pool';
import {
  type ArrivalDeps,
  type ArrivalOutcome,
  indexArrival,
  isInfrastructureError,
  placeArrival,
  readArrival,
  type ReadArrival,
  setAside,
  sweepDeleted,
} from '../../ingest/arrival';
import { createLogger } from '../../logger';
import { OrthancArchive } from '../../orthanc/archive';
import { closePacs, initPacs } from '../../orthanc/client';

/** What a re-index did. */
export interface ReindexSummary {
  /** Instances Orthanc listed. */
  archived: number;
  /** Unknown to the index, now indexed and routed to a project. */
  indexed: number;
  /** Unknown to the index, now indexed into quarantine (no rule matched). */
  quarantined: number;
  /** Known, rewritten because the archived copy or its parse differ (e.g. after an upgrade of the parser). */
  updated: number;
  unchanged: number;
  /** Refused by the index (recorded in index_failures) or failed to process. */
  failed: number;
  /** Of those, the ones that failed to process (archive or database errors): worth running again. */
  errors: number;
  /** Index rows removed because Orthanc no longer holds their object. */
  removedStale: number;
  seconds: number;
}

/** Options of runReindex. */
export interface ReindexOptions {
  /** Instances read at once (default 4). */
  concurrency?: number;
  /** Orthanc ids listed per request (default 200). */
  pageSize?: number;
  /** Called after each page with the instances handled so far and Orthanc's total. */
  onProgress?: (done: number, total: number, summary: ReindexSummary) => void;
}

/** Runs fn over items with at most `limit` running at once, keeping results in order. */
async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (t: T) => Promise<R>,
): Promise<PromiseSettledResult<R>[]> {
  const out: PromiseSettledResult<R>[] = new Array(items.length);
  let next = 0;
  const workers = Array.from({ length: Math.min(limit, items.length) }, async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = { status: 'fulfilled', value: await fn(items[i]) };
      } catch (reason) {
        out[i] = { status: 'rejected', reason };
      }
    }
  });
  await Promise.all(workers);
  return out;
}

/**
 * Rebuilds the index from Orthanc: every archived instance is read and parsed again and upserted (rows change only
 * where the parse differs), instances the index does not know are routed like new arrivals, project memberships are
 * kept, and at the end rows whose object Orthanc no longer holds are removed. Nothing is truncated, every write is an
 * idempotent upsert, so it is safe while the gateway serves traffic (and safe to interrupt and run again).
 * Objects stored over REST and not yet indexed are left to their writer (STOW indexes right after storing) until
 * the end of the scan, then routed if still unindexed.
 */
export async function runReindex(deps: ArrivalDeps, opts: ReindexOptions = {}): Promise<ReindexSummary> {
  const started = Date.now();
  const concurrency = opts.concurrency ?? 4;
  const pageSize = opts.pageSize ?? 200;
  const s: ReindexSummary = {
    archived: 0,
    indexed: 0,
    quarantined: 0,
    updated: 0,
    unchanged: 0,
    failed: 0,
    errors: 0,
    removedStale: 0,
    seconds: 0,
  };
  /**
   * An instance failed: when the archive or the database is unavailable it counts as an error (run again later);
   * otherwise the object is set aside with its UIDs, as the change feed does, and counts as failed.
   */
  const failed = async (orthancId: string, err: unknown, read?: ReadArrival) => {
    if (!isInfrastructureError(err)) {
      try {
        return tally(await setAside(deps, orthancId, err, read));
      } catch (e) {
        err = e;
      }
    }
    tally(undefined, err, orthancId);
  };
  const tally = (out: ArrivalOutcome | undefined, err?: unknown, orthancId?: string) => {
    if (err !== undefined || !out) {
      s.failed++;
      s.errors++;
      deps.logger.warn({ orthancId, err: errSummary(err) }, 'reindex: instance failed');
      return;
    }
    if (out.status === 'indexed') {
      if (out.projectId) s.indexed++;
      else s.quarantined++;
    } else if (out.status === 'updated') s.updated++;
    else if (out.status === 'unchanged') s.unchanged++;
    else if (out.status === 'failed') s.failed++;
    // 'gone': deleted while we looked; the sweep at the end accounts for its row.
  };

  // The archive in DICOM verbs over the same client (ingest's deps still carry the client itself).
  const archive = new OrthancArchive(deps.pacs);
  let total = await archive.countInstances();
  const deferred: string[] = [];
  for (let since = 0; ; since += pageSize) {
    const ids = await archive.listInstances(since, pageSize);
    const reads = await mapLimit(ids, concurrency, (id) =>
      readArrival(deps, id, { refresh: true, deferRest: true }),
    );
    // Placed in listing order (arrival order), so the first instance of a series decides its route.
    for (let i = 0; i < ids.length; i++) {
      const r = reads[i];
      if (r.status === 'rejected') {
        await failed(ids[i], r.reason);
        continue;
      }
      if ('status' in r.value) {
        if (r.value.status === 'deferred') deferred.push(ids[i]);
        else tally(r.value);
        continue;
      }
      try {
        tally(await placeArrival(deps, r.value));
      } catch (err) {
        await failed(ids[i], err, r.value);
      }
    }
    s.archived += ids.length;
    total = Math.max(total, s.archived);
    opts.onProgress?.(s.archived, total, s);
    if (ids.length < pageSize) break;
  }
  for (const id of deferred) {
    try {
      tally(await indexArrival(deps, id, { refresh: true }));
    } catch (err) {
      await failed(id, err);
    }
  }
  const sweep = await sweepDeleted(deps);
  s.removedStale = sweep.removed;
  // Objects the paged listing skipped (the archive changed under it) but Orthanc holds: index them too.
  for (const id of sweep.missed) {
    try {
      tally(await indexArrival(deps, id, { refresh: true }));
    } catch (err) {
      await failed(id, err);
    }
  }
  s.seconds = Math.round((Date.now() - started) / 100) / 10;
  return s;
}

/** `reindex`: rebuild the index from Orthanc with a progress bar and a summary. */
export function register(program: Command): void {
  program
    .command('reindex')
    .description(
      'rebuild the index from the archive (safe while the gateway runs): re-parse, route unknown, drop stale',
    )
    .option('-c, --concurrency <n>', 'instances read at once', (v) => Number.parseInt(v, 10), 4)
    .option('--page-size <n>', 'Orthanc ids listed per request', (v) => Number.parseInt(v, 10), 200)
    .option('--json', 'print the summary as JSON')
    .option('--no-progress', 'no progress bar')
    .action(async (opts: { concurrency: number; pageSize: number; json?: boolean; progress: boolean }) => {
      const config = loadConfig();
      const logger = createLogger(
        config.LOG_LEVEL === 'info' ? 'warn' : config.LOG_LEVEL,
        'aperture-reindex',
      );
      const db = initDb(config);
      const pacs = initPacs(config);
      const bar =
        opts.progress && process.stderr.isTTY
          ? new SingleBar({
              format:
                'reindex [{bar}] {percentage}% {value}/{total} | new {indexed} quarantined {quarantined} ' +
                'updated {updated} unchanged {unchanged} failed {failed}',
              stream: process.stderr,
              hideCursor: true,
            })
          : undefined;
      try {
        await migrate(db);
        let started = false;
        const summary = await runReindex(
          { db, pacs, config, logger },
          {
            concurrency: opts.concurrency,
            pageSize: opts.pageSize,
            onProgress: (done, total, s) => {
              if (!bar) return;
              const payload = { ...s };
              if (!started) {
                bar.start(total, done, payload);
                started = true;
              } else {
                bar.setTotal(total);
                bar.update(done, payload);
              }
            },
          },
        );
        bar?.stop();
        if (opts.json) console.log(JSON.stringify(summary, null, 2));
        else {
          console.log(
            `reindex done in ${summary.seconds} s: ${summary.archived} archived — ${summary.indexed} newly indexed, ` +
              `${summary.quarantined} quarantined, ${summary.updated} updated, ${summary.unchanged} unchanged, ` +
              `${summary.failed} failed, ${summary.removedStale} stale rows removed`,
          );
        }
        if (summary.errors > 0) process.exitCode = 2;
      } finally {
        bar?.stop();
        await closePacs();
        await closeDb();
      }
    });
}
