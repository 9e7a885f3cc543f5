/**
 * Storage sync to a standby site (issue 16). Orthanc keeps its files outside PostgreSQL, so streaming replication
 * brings site 2 Orthanc's index but not the files it names. This runs at site 2: it pages through the replicated
 * index (`AttachedFiles` in the standby's `orthanc` database, read-only queries only), and every file that is not on
 * site 2's disk is fetched from site 1's Orthanc exactly as stored (`.../compressed-data`), checked against the
 * size and MD5 the index recorded, written to a temporary name, fsynced and renamed into place.
 *
 * - Idempotent and resumable: the disk is the state. A file in place with the right size is done; an interrupted
 *   copy leaves only a temporary name that the next pass overwrites. A pass can stop anywhere.
 * - Incremental: between full passes (STORAGE_SYNC_FULL_EVERY_MS) a pass reads only Orthanc's change log after the
 *   watermark the previous pass left (plus a look-back for late commits), so its cost follows what is new, not the
 *   archive's size; the full pass is the safety net for anything the log does not name.
 * - Pruning: a full pass deletes files the replicated index no longer names (deleted at the source site), after a
 *   grace period, never one the index names (asked again just before the delete).
 * - Checksummed: a copy whose bytes do not match the index is never put in place. A verify pass re-reads every copy
 *   at site 2; a corrupted one is moved aside to `<state>/corrupt/` and fetched again.
 * - Why not Orthanc peers: a peer re-stores an object into its own index under new attachment UUIDs, which cannot
 *   match the replicated index that site 2's Orthanc will run on after promotion.
 *
 * The state (status.json, corrupt copies) lives in its own folder beside the storage, never inside Orthanc's
 * StorageDirectory. The status file is what the gateway's /metrics and /readyz report (`readSyncStatus`).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import type { Dirent } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Logger } from 'pino';
import type { Queryable } from '../index-db/pool';
import type { PacsClient } from '../orthanc/client';
import {
  attachmentsStillNamed,
  isStorageUuid,
  lastChangeSeq,
  listAttachmentsChangedSince,
  listStoredAttachments,
  storagePathOf,
  storedBytesPath,
  type StoredAttachment,
} from '../orthanc/storage-index';

/** What went wrong with one file (by Orthanc's storage UUID: never PHI). */
export interface SyncDifference {
  uuid: string;
  problem:
    'source-size' | 'source-md5' | 'source-missing' | 'unreachable' | 'corrupt-copy' | 'write' | 'prune';
  detail: string;
}

/** One pass's account. */
export interface SyncPassReport {
  startedAt: string;
  seconds: number;
  verify: boolean;
  mode: SyncMode;
  /** Files this pass looked at (full: every file the replicated index lists; changes: the files of the new log
   * entries), and of those the ones found on this site's disk (before copying). */
  indexedFiles: number;
  presentFiles: number;
  /** Files fetched and put in place by this pass. */
  copiedFiles: number;
  copiedBytes: number;
  /** Copies the verify re-read and found not matching the index (moved aside, then fetched again). */
  corruptFiles: number;
  /** Files still not (correctly) on this site's disk at the end of the pass. */
  failedFiles: number;
  /** Full passes with pruning: files here the index no longer names, kept for their grace period / deleted now. */
  orphanFiles: number;
  prunedFiles: number;
  differences: SyncDifference[];
}

/** status.json: the sync as the gateway reports it. */
export interface SyncStatus {
  format: 1;
  updatedAt: string;
  /** A pass is running (its counts so far are in `current`). */
  running: boolean;
  /** Start of the newest pass that ended with nothing missing: every file indexed before it is here, checked. */
  syncedAsOf: string | null;
  /** Files found missing by the running (or last) pass and not copied yet, failures included. */
  backlogFiles: number;
  backlogBytes: number;
  /** Since the sync process started. */
  copiedFiles: number;
  copiedBytes: number;
  /** Corrupt copies found by the newest verify pass. */
  corruptFiles: number;
  /** Orthanc's change log entry up to which every named file was synced (null: a full pass comes next). */
  changesSeq?: number | null;
  lastFullAt?: string | null;
  /** Orphans waiting out their grace period (newest full pass), and files pruned since the state was created. */
  orphanFiles?: number;
  prunedFiles?: number;
  lastPass?: SyncPassReport;
  lastVerify?: SyncPassReport;
}

export interface SyncTarget {
  /** Index of this site's Orthanc (the replicated `orthanc` database). */
  orthancIndex: Queryable;
  /** Orthanc of the site the files come from. */
  source: PacsClient;
  /** This site's Orthanc StorageDirectory. */
  storageDir: string;
  /** status.json and corrupt/ (outside StorageDirectory). */
  stateDir: string;
  concurrency: number;
  logger?: Logger;
}

const PAGE = 500;
/** Change log entries a `changes` pass reads again before its watermark (see SyncPassOptions.changesLookback). */
export const DEFAULT_CHANGES_LOOKBACK = 1000;
const MAX_DIFFERENCES = 100;

/** Default state folder: beside the storage folder, `<storage>-sync`. */
export function defaultStateDir(storageDir: string): string {
  return storageDir.replace(/\/+$/, '') + '-sync';
}

async function sizeOnDisk(path: string): Promise<number | undefined> {
  try {
    return (await stat(path)).size;
  } catch {
    return undefined;
  }
}

async function md5OfPath(path: string): Promise<string> {
  const h = createHash('md5');
  for await (const chunk of createReadStream(path) as AsyncIterable<Buffer>) h.update(chunk);
  return h.digest('hex');
}

/** Fetches one file from the source into place; a difference when it cannot be done. */
async function copyOne(t: SyncTarget, a: StoredAttachment): Promise<SyncDifference | undefined> {
  const path = storagePathOf(t.storageDir, a.uuid);
  const tmp = join(dirname(path), `.${a.uuid}.sync-tmp`);
  let body: AsyncIterable<Buffer>;
  try {
    body = (await t.source.getStream(storedBytesPath(a), AbortSignal.timeout(300_000)))
      .body as AsyncIterable<Buffer>;
  } catch (err) {
    const missing = err instanceof Error && /not found/i.test(err.message);
    return {
      uuid: a.uuid,
      problem: missing ? 'source-missing' : 'unreachable',
      detail: missing ? 'the source site does not hold it' : err instanceof Error ? err.message : String(err),
    };
  }
  await mkdir(dirname(path), { recursive: true });
  const h = createHash('md5');
  let bytes = 0;
  const fh = await open(tmp, 'w', 0o644);
  try {
    // Chunk by chunk, awaiting each write: memory stays flat whatever the file's size.
    for await (const chunk of body) {
      h.update(chunk);
      bytes += chunk.length;
      await fh.write(chunk);
    }
    await fh.sync();
  } catch (err) {
    await fh.close().catch(() => undefined);
    await rm(tmp, { force: true });
    return { uuid: a.uuid, problem: 'write', detail: err instanceof Error ? err.message : String(err) };
  }
  await fh.close();
  const md5 = h.digest('hex');
  if (bytes !== a.size || (a.md5 && md5 !== a.md5)) {
    await rm(tmp, { force: true });
    return bytes !== a.size
      ? { uuid: a.uuid, problem: 'source-size', detail: `received ${bytes} bytes, the index says ${a.size}` }
      : { uuid: a.uuid, problem: 'source-md5', detail: `received MD5 ${md5}, the index says ${a.md5}` };
  }
  await rename(tmp, path);
  return undefined;
}

/** Runs `fn` over `items`, at most `n` at once. */
async function eachLimited<T>(items: T[], n: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]);
    }),
  );
}

/** Reads status.json (undefined when the sync never ran here). */
export async function readSyncStatus(stateDir: string): Promise<SyncStatus | undefined> {
  try {
    return JSON.parse(await readFile(join(stateDir, 'status.json'), 'utf8')) as SyncStatus;
  } catch {
    return undefined;
  }
}

/** Writes status.json (atomically: a reader never sees half of it). */
export async function writeSyncStatus(stateDir: string, s: SyncStatus): Promise<void> {
  return writeStatus(stateDir, s);
}

async function writeStatus(stateDir: string, s: SyncStatus): Promise<void> {
  await mkdir(stateDir, { recursive: true });
  const tmp = join(stateDir, `.status.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(s, null, 2));
  await rename(tmp, join(stateDir, 'status.json'));
}

/** What a pass looks at: every indexed file (`full`), or the files of Orthanc's change log entries since the last pass. */
export type SyncMode = 'full' | 'changes';

export interface SyncPassOptions {
  /** Re-read every copy against the index's MD5 (implies a full pass). */
  verify?: boolean;
  /** `full`: page through all of AttachedFiles; `changes`: only what the change log names since the watermark (a full
   * pass when there is no watermark yet). Default `changes`. */
  mode?: SyncMode;
  /** In a full pass: delete files here that the index no longer names once they have been orphans this long
   * (undefined: never prune). */
  pruneGraceMs?: number;
  /** Change log entries re-read before the watermark (late commits of transactions that took their number earlier). */
  changesLookback?: number;
}

/**
 * One pass: every missing file (or, with `verify`, every file whose copy does not match) is fetched. A full pass pages
 * through the whole replicated index (a stat per file: its cost grows with the archive); a `changes` pass reads only
 * Orthanc's change log after the watermark the previous pass left (primary-key range: its cost grows with what is
 * new). status.json is rewritten after every page, so the backlog is visible while a pass runs.
 */
export async function syncStoragePass(t: SyncTarget, opts: SyncPassOptions = {}): Promise<SyncPassReport> {
  const started = Date.now();
  const prev = await readSyncStatus(t.stateDir);
  const mode: SyncMode =
    opts.verify || opts.mode === 'full' || prev?.changesSeq === undefined || prev.changesSeq === null
      ? 'full'
      : 'changes';
  const report: SyncPassReport = {
    startedAt: new Date(started).toISOString(),
    seconds: 0,
    verify: opts.verify === true,
    mode,
    indexedFiles: 0,
    presentFiles: 0,
    copiedFiles: 0,
    copiedBytes: 0,
    corruptFiles: 0,
    failedFiles: 0,
    orphanFiles: 0,
    prunedFiles: 0,
    differences: [],
  };
  const note = (d: SyncDifference) => {
    if (report.differences.length < MAX_DIFFERENCES) report.differences.push(d);
    t.logger?.warn({ uuid: d.uuid, problem: d.problem }, 'storage sync: file not synced');
  };
  let backlogFiles = 0;
  let backlogBytes = 0;
  // Where the next `changes` pass starts. A full pass takes the log's end *before* it pages, so that whatever is
  // logged while it runs is read again by the next pass.
  let changesSeq: number | null = prev?.changesSeq ?? null;
  const status = (running: boolean): SyncStatus => ({
    format: 1,
    updatedAt: new Date().toISOString(),
    running,
    syncedAsOf: !running && report.failedFiles === 0 ? report.startedAt : (prev?.syncedAsOf ?? null),
    backlogFiles,
    backlogBytes,
    copiedFiles: (prev?.copiedFiles ?? 0) + report.copiedFiles,
    copiedBytes: (prev?.copiedBytes ?? 0) + report.copiedBytes,
    corruptFiles: opts.verify ? report.corruptFiles : (prev?.corruptFiles ?? 0),
    // A pass with a file not synced keeps the old watermark: the next pass reads the same entries again.
    changesSeq: running || report.failedFiles ? (prev?.changesSeq ?? null) : changesSeq,
    lastFullAt: mode === 'full' && !running ? report.startedAt : (prev?.lastFullAt ?? null),
    orphanFiles: mode === 'full' && !running ? report.orphanFiles : (prev?.orphanFiles ?? 0),
    prunedFiles: (prev?.prunedFiles ?? 0) + report.prunedFiles,
    lastPass: running ? prev?.lastPass : report,
    lastVerify: opts.verify && !running ? report : prev?.lastVerify,
  });
  const seen = new Set<string>();
  const handlePage = async (page: StoredAttachment[]) => {
    const fresh = page.filter((a) => !seen.has(a.uuid));
    // A changes pass may meet a file twice (several log entries of one resource); a full pass never does.
    if (mode === 'changes') for (const a of fresh) seen.add(a.uuid);
    report.indexedFiles += fresh.length;
    const todo: StoredAttachment[] = [];
    await eachLimited(fresh, t.concurrency * 4, async (a) => {
      const path = storagePathOf(t.storageDir, a.uuid);
      const size = await sizeOnDisk(path);
      if (size !== a.size) return void todo.push(a);
      if (opts.verify && a.md5 && (await md5OfPath(path)) !== a.md5) {
        report.corruptFiles++;
        note({
          uuid: a.uuid,
          problem: 'corrupt-copy',
          detail: "this site's copy does not match the index's MD5",
        });
        // Kept for inspection, out of Orthanc's folder; the copy is fetched again below.
        await mkdir(join(t.stateDir, 'corrupt'), { recursive: true });
        await rename(path, join(t.stateDir, 'corrupt', `${a.uuid}.${started}`));
        return void todo.push(a);
      }
      report.presentFiles++;
    });
    backlogFiles += todo.length;
    backlogBytes += todo.reduce((n, a) => n + a.size, 0);
    // Seen before the copies start, so that a scrape during a large catch-up shows what is pending.
    if (todo.length) await writeStatus(t.stateDir, status(true));
    await eachLimited(todo, t.concurrency, async (a) => {
      const d = await copyOne(t, a);
      if (d) {
        report.failedFiles++;
        note(d);
        return;
      }
      report.copiedFiles++;
      report.copiedBytes += a.size;
      backlogFiles--;
      backlogBytes -= a.size;
    });
    await writeStatus(t.stateDir, status(true));
  };

  if (mode === 'full') {
    changesSeq = await lastChangeSeq(t.orthancIndex);
    let after = '';
    for (;;) {
      const page = await listStoredAttachments(t.orthancIndex, after, PAGE);
      if (page.length === 0) break;
      after = page[page.length - 1].uuid;
      await handlePage(page);
    }
    if (opts.pruneGraceMs !== undefined) await pruneOrphans(t, report, opts.pruneGraceMs, note);
  } else {
    let from = Math.max(0, (prev?.changesSeq ?? 0) - (opts.changesLookback ?? DEFAULT_CHANGES_LOOKBACK));
    for (;;) {
      const page = await listAttachmentsChangedSince(t.orthancIndex, from, PAGE);
      if (page.changes === 0) break;
      from = page.lastSeq;
      changesSeq = Math.max(changesSeq ?? 0, page.lastSeq);
      await handlePage(page.attachments);
    }
  }
  report.seconds = (Date.now() - started) / 1000;
  await writeStatus(t.stateDir, status(false));
  if (report.copiedFiles || report.failedFiles || report.corruptFiles || report.prunedFiles)
    t.logger?.info(
      {
        mode,
        copied: report.copiedFiles,
        bytes: report.copiedBytes,
        failed: report.failedFiles,
        corrupt: report.corruptFiles,
        pruned: report.prunedFiles,
        verify: report.verify,
      },
      'storage sync pass',
    );
  return report;
}

/** Files under Orthanc's folder layout (<2 hex>/<2 hex>/<uuid>), batch by batch (memory stays flat). */
async function* storedFileBatches(storageDir: string, size: number): AsyncGenerator<string[]> {
  let batch: string[] = [];
  const walk = async function* (dir: string, depth: number): AsyncGenerator<string[]> {
    let entries: Dirent[];
    try {
      entries = await readdir(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const e of entries) {
      if (depth < 2 && e.isDirectory() && /^[0-9a-f]{2}$/.test(e.name))
        yield* walk(join(dir, e.name), depth + 1);
      else if (depth === 2 && e.isFile() && isStorageUuid(e.name)) {
        batch.push(e.name);
        if (batch.length >= size) {
          yield batch;
          batch = [];
        }
      }
    }
  };
  yield* walk(storageDir, 0);
  if (batch.length) yield batch;
}

/**
 * Pruning (full passes only): a file on this site's disk that the replicated index no longer names was deleted at
 * the source site. It is recorded in `<state>/orphans.json` when first seen, and deleted only once it has been an
 * orphan for `graceMs` and the index, asked again just before, still does not name it. Never when the index names
 * no file at all (the wrong database, an empty restore): that would empty the folder.
 */
async function pruneOrphans(
  t: SyncTarget,
  report: SyncPassReport,
  graceMs: number,
  note: (d: SyncDifference) => void,
): Promise<void> {
  if (report.indexedFiles === 0) return;
  const path = join(t.stateDir, 'orphans.json');
  let known: Record<string, number> = {};
  try {
    known = JSON.parse(await readFile(path, 'utf8')) as Record<string, number>;
  } catch {
    /* none yet */
  }
  const now = Date.now();
  const next: Record<string, number> = {};
  for await (const batch of storedFileBatches(t.storageDir, PAGE)) {
    const named = await attachmentsStillNamed(t.orthancIndex, batch);
    const orphans = batch.filter((u) => !named.has(u));
    if (orphans.length === 0) continue;
    const due = orphans.filter((u) => now - (known[u] ?? now) >= graceMs);
    // Asked again right before deleting: a file the index names now (replication moved on) is kept.
    const renamed = due.length ? await attachmentsStillNamed(t.orthancIndex, due) : new Set<string>();
    for (const u of orphans) {
      if (due.includes(u) && !renamed.has(u)) {
        try {
          await rm(storagePathOf(t.storageDir, u));
          report.prunedFiles++;
        } catch (err) {
          next[u] = known[u] ?? now;
          note({ uuid: u, problem: 'prune', detail: err instanceof Error ? err.message : String(err) });
        }
      } else if (!renamed.has(u)) {
        next[u] = known[u] ?? now;
        report.orphanFiles++;
      }
    }
  }
  await mkdir(t.stateDir, { recursive: true });
  const tmp = join(t.stateDir, `.orphans.${process.pid}.tmp`);
  await writeFile(tmp, JSON.stringify(next));
  await rename(tmp, path);
}

/**
 * The sync loop: a pass every `intervalMs` (a verify pass every `verifyEveryMs`), until `signal` aborts. A pass that
 * fails (index or source down) is logged and retried at the next interval.
 */
export async function runStorageSync(
  t: SyncTarget,
  opts: {
    intervalMs: number;
    verifyEveryMs: number;
    /** A full pass (and pruning) this often; 0 = every pass is full. */
    fullEveryMs: number;
    pruneGraceMs?: number;
    changesLookback?: number;
    signal: AbortSignal;
  },
): Promise<void> {
  let lastVerify = Date.now();
  let lastFull = 0;
  while (!opts.signal.aborted) {
    const verify = opts.verifyEveryMs > 0 && Date.now() - lastVerify >= opts.verifyEveryMs;
    const full = verify || Date.now() - lastFull >= opts.fullEveryMs;
    try {
      const r = await syncStoragePass(t, {
        verify,
        mode: full ? 'full' : 'changes',
        pruneGraceMs: opts.pruneGraceMs,
        changesLookback: opts.changesLookback,
      });
      if (verify) lastVerify = Date.now();
      if (r.mode === 'full') lastFull = Date.now();
    } catch (err) {
      t.logger?.warn({ err: err instanceof Error ? err.message : String(err) }, 'storage sync pass failed');
    }
    await new Promise<void>((resolve) => {
      // One listener per pause, removed with it (a listener per pass would pile up on the long-lived signal).
      const wake = () => {
        clearTimeout(timer);
        opts.signal.removeEventListener('abort', wake);
        resolve();
      };
      const timer = setTimeout(wake, opts.intervalMs);
      opts.signal.addEventListener('abort', wake, { once: true });
    });
  }
}

/** Files the index names that are missing (or of the wrong size) on this site's disk: a stat each, nothing fetched. */
export async function countMissingFiles(
  t: Pick<SyncTarget, 'orthancIndex' | 'storageDir' | 'concurrency'>,
): Promise<{ indexedFiles: number; missingFiles: number; missingBytes: number; sample: string[] }> {
  const out = { indexedFiles: 0, missingFiles: 0, missingBytes: 0, sample: [] as string[] };
  let after = '';
  for (;;) {
    const page = await listStoredAttachments(t.orthancIndex, after, PAGE);
    if (page.length === 0) return out;
    after = page[page.length - 1].uuid;
    out.indexedFiles += page.length;
    await eachLimited(page, t.concurrency * 4, async (a) => {
      if ((await sizeOnDisk(storagePathOf(t.storageDir, a.uuid))) === a.size) return;
      out.missingFiles++;
      out.missingBytes += a.size;
      if (out.sample.length < 20) out.sample.push(a.uuid);
    });
  }
}
