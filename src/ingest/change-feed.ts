/**
 * The change-feed indexer: follows Orthanc's `/changes` log from a cursor kept in PostgreSQL and indexes what
 * modalities stored by C-STORE, routing each new series to a project or to quarantine.
 *
 * - One active indexer across all gateway processes: the leader holds a session-level advisory lock on a dedicated
 *   connection. When the leader dies its connection closes, the lock is released, and a follower (retrying every
 *   second) takes over.
 * - Crash safety: the work for an event is idempotent and the cursor moves after it (monotonically, on the lock's
 *   connection), so a crash replays at most the few events of one unfinished step, and a replay changes nothing.
 * - Poison objects: an object that cannot be indexed (anything but an unavailable archive or database) is set aside
 *   at once in index_failures, with the UIDs Orthanc's database holds for it, and the feed goes on.
 * - Objects stored over Orthanc's REST API: the gateway's STOW claims what it is about to store (ingest_claims) and
 *   indexes it itself; the feed skips past claimed objects (retrying them, the cursor held below them) and indexes
 *   everything else at once, whoever stored it.
 * - Deletions: Orthanc 1.10 does not log them (a deleted resource's changes vanish with it). `Deleted` events are
 *   honoured if a later Orthanc emits them; otherwise a sweep compares the index with Orthanc and removes what
 *   Orthanc no longer holds: when idle and the index holds more than Orthanc, and while busy on a time budget.
 * - Late commits: with concurrent writers in Orthanc's index a change can become visible after later ones. Holes in
 *   the sequence are re-read for INDEXER_GAP_WAIT_MS (ingest/change-gaps.ts) and the stored cursor stays below the
 *   lowest; what appears in one is indexed like any change.
 * - Backstop: when idle, an archive that holds more than the index (and the count stays so) is compared with it, and
 *   whatever the feed never saw is indexed (INDEXER_RECONCILE_MS at most once per interval).
 * - Derived work: on StableSeries the series is queued for thumbnails, whatever way its instances came in.
 */
import type { Client } from 'pg';
import type { Config } from '../config';
import { FailureReason } from '../dicom/parse';
import { NotFoundError, errSummary } from '../errors';
import {
  connectLockClient,
  indexedOrFailedCount,
  readCursor,
  saveCursor,
  seriesIndexed,
  tryLeaderLock,
} from '../index-db/change-feed';
import { expireClaims, findInstanceByOrthancId, removeInstance } from '../index-db/instances';
import { enqueueSeriesStable } from '../jobs/queues';
import type { Archive, ArchiveChange } from '../orthanc/archive';
import type { Services } from '../services';
import { ArrivalHook } from './arrival-hook';
import { ChangeGaps } from './change-gaps';
import {
  type ArrivalDeps,
  type ArrivalOutcome,
  failureMessage,
  isInfrastructureError,
  placeArrival,
  readArrival,
  type ReadArrival,
  setAside,
  sweepDeleted,
} from './arrival';

export { INDEXER_LOCK_KEY } from '../index-db/change-feed';
/** The cursor's row in indexer_state. */
export const CURSOR_NAME = 'orthanc-changes';

const BATCH = 100;
/** New instances indexed at once: overlaps Orthanc and PostgreSQL round trips without flooding either. */
const CONCURRENCY = 4;
const FOLLOWER_RETRY_MS = 1000;
const ERROR_BACKOFF_MS = 1000;
/** Least interval between two checks for deletions while idle. */
const SWEEP_CHECK_MS = 2000;
/** Reads of the change log per look into the holes (each covers up to BATCH changes), and least interval between looks. */
const GAP_READS_PER_LOOK = 2;
const GAP_LOOK_MS = 1000;

/** What the indexer needs. */
export interface IndexerDeps extends ArrivalDeps {
  config: Pick<Config, 'DATABASE_URL' | 'INDEXER_POLL_MS' | 'DEFAULT_PROJECT'> &
    Partial<
      Pick<
        Config,
        | 'INDEXER_CLAIM_TTL_MS'
        | 'INDEXER_BUSY_SWEEP_MS'
        | 'ARRIVAL_HOOK_HOST'
        | 'ARRIVAL_HOOK_PORT'
        | 'ARRIVAL_HOOK_URL'
        | 'STOW_MAX_PART_BYTES'
        | 'INDEXER_GAP_WAIT_MS'
        | 'INDEXER_RECONCILE_MS'
      >
    >;
  /** The leader also serves the archive's C-STORE filter (re-arrivals, ingest/arrival-hook.ts). */
  archive: Archive;
  /** Called on StableSeries with the Series Instance UID; default: the derived-work queue. */
  onSeriesStable?: (seriesUid: string) => Promise<unknown>;
}

/** Counters for logs, tests and benchmarks. */
export interface IndexerStats {
  indexed: number;
  quarantined: number;
  unchanged: number;
  failed: number;
  removed: number;
  seriesStable: number;
  /** Changes that became visible after later ones (found in a hole of the sequence). */
  late: number;
  /** Instances the change log never showed, found by comparing the archive with the index. */
  reconciled: number;
}

/** Follows Orthanc's change log while it holds the leadership; see the module comment. */
export class ChangeFeedIndexer {
  readonly stats: IndexerStats = {
    indexed: 0,
    quarantined: 0,
    unchanged: 0,
    failed: 0,
    removed: 0,
    seriesStable: 0,
    late: 0,
    reconciled: 0,
  };
  private running = false;
  private leading = false;
  private lockClient?: Client;
  private loop?: Promise<void>;
  private wake?: () => void;
  private sleepTimer?: NodeJS.Timeout;
  /**
   * NewInstance events whose object a gateway STOW has claimed (it will index it itself), by sequence number. The feed
   * goes on past them and retries them each step; the stored cursor stays below the first of them, so a crash replays
   * from there (replays of what was done meanwhile change nothing).
   */
  private readonly waiting = new Map<number, ArchiveChange>();
  /** Holes in the sequence seen in this leadership (see ChangeGaps); reset to the cursor when leadership starts. */
  private readonly gaps: ChangeGaps;
  private gapsFromCursor = true;
  private lastReconcile = 0;
  private lastGapLook = 0;
  private reconcileCandidate?: { archived: number; counted: number };
  /** The last idle check found the archive holding more than the index: keep checking until that changes. */
  private shortfall = false;
  /** Highest sequence number handled in this leadership (the cursor, unless events wait below it). */
  private scannedTo = 0;
  private lastBusySweep = 0;
  private lastSweepMs = 0;
  private sweepNeeded = false;
  private lastSweepCheck = 0;
  private lastArchiveCount = -1;
  private changedSinceCheck = true;
  /** Served while leading: C-STORE arrivals of objects Orthanc already holds, which its change log never shows. */
  private hook?: ArrivalHook;

  constructor(private readonly deps: IndexerDeps) {
    this.gaps = new ChangeGaps(deps.config.INDEXER_GAP_WAIT_MS ?? 30_000);
  }

  /** True while this process is the active indexer. */
  get isLeader(): boolean {
    return this.leading;
  }

  /** Starts following (as leader or follower). */
  start(): void {
    if (this.running) return;
    this.running = true;
    this.loop = this.run();
  }

  /** Stops following and gives up the leadership (closing the lock's connection releases the lock). */
  async stop(): Promise<void> {
    this.running = false;
    this.wake?.();
    await this.loop;
    await this.dropLock();
  }

  private async run(): Promise<void> {
    const { logger } = this.deps;
    while (this.running) {
      try {
        if (!this.leading) {
          await this.closeHook();
          await this.tryLead();
          if (!this.leading) {
            await this.sleep(FOLLOWER_RETRY_MS);
            continue;
          }
        }
        await this.serveHook();
        const more = await this.pollOnce();
        if (more && this.running) await this.maybeBusySweep();
        if (!more && this.running) {
          await this.maybeSweep();
          await this.sleep(this.deps.config.INDEXER_POLL_MS);
        }
      } catch (err) {
        if (!this.running) break;
        logger.warn({ err: errSummary(err) }, 'change feed: step failed, retrying');
        if (!this.lockClient) this.leading = false;
        await this.sleep(ERROR_BACKOFF_MS);
      }
    }
  }

  private async tryLead(): Promise<void> {
    if (!this.lockClient) {
      const lost = (client: Client) => {
        if (this.lockClient !== client) return;
        this.lockClient = undefined;
        if (this.leading) this.deps.logger.warn('change feed: lost the leader connection');
        this.leading = false;
        void client.end().catch(() => undefined);
      };
      this.lockClient = await connectLockClient(this.deps.config.DATABASE_URL, lost);
    }
    if (await tryLeaderLock(this.lockClient)) {
      this.leading = true;
      this.waiting.clear();
      this.scannedTo = 0;
      this.gapsFromCursor = true;
      this.changedSinceCheck = true;
      this.deps.logger.info({ pid: process.pid }, 'change feed: leadership acquired');
    }
  }

  private async dropLock(): Promise<void> {
    const client = this.lockClient;
    this.lockClient = undefined;
    this.leading = false;
    await this.closeHook();
    await client?.end().catch(() => undefined);
  }

  private async serveHook(): Promise<void> {
    if (!this.hook) {
      const hook = new ArrivalHook(this.deps);
      await hook.start();
      this.hook = hook;
    }
    await this.hook.renew();
  }

  private async closeHook(): Promise<void> {
    const hook = this.hook;
    this.hook = undefined;
    await hook?.close();
  }

  /** The leader lock's connection: the cursor is only ever read and moved on it, and only while leading. */
  private leaderClient(): Client {
    if (!this.lockClient || !this.leading) throw new LeadershipLost();
    return this.lockClient;
  }

  private readCursor(): Promise<number> {
    return readCursor(this.leaderClient(), CURSOR_NAME);
  }

  private saveCursor(seq: number, reset = false): Promise<void> {
    return saveCursor(this.leaderClient(), CURSOR_NAME, seq, reset);
  }

  /** Processes one page of changes; true when more are waiting. */
  private async pollOnce(): Promise<boolean> {
    const { archive, logger } = this.deps;
    const cursor = await this.readCursor();
    this.scannedTo = Math.max(this.scannedTo, cursor);
    if (this.gapsFromCursor) {
      this.gaps.reset(this.scannedTo);
      this.gapsFromCursor = false;
    }
    await this.retryWaiting();
    await this.retryGaps();
    const from = this.scannedTo;
    const page = await archive.changes(from, BATCH);
    for (const c of page.changes) this.gaps.observe(c.seq);
    if (page.changes.length === 0) {
      if (page.last < from) {
        // The log restarted below our cursor: Orthanc's database was replaced. Follow the new log from its start;
        // the idle sweep removes what the old archive held and the new one does not.
        logger.warn(
          { cursor: from, last: page.last },
          'change feed: Orthanc change log is behind the cursor; restarting it',
        );
        await this.saveCursor(0, true);
        this.waiting.clear();
        this.scannedTo = 0;
        this.gaps.reset(0);
        this.sweepNeeded = true;
        return true;
      }
      return false;
    }
    const changes = page.changes;
    let i = 0;
    while (i < changes.length) {
      if (!this.running || !this.leading) return false;
      if (changes[i].kind === 'NewInstance') {
        const run: ArchiveChange[] = [];
        while (i < changes.length && changes[i].kind === 'NewInstance' && run.length < CONCURRENCY) {
          run.push(changes[i++]);
        }
        // Reads (Orthanc round trips, parsing) overlap; placing follows arrival order, so the first instance of a
        // series decides its route. The cursor moves past the finished prefix only.
        const reads = await Promise.allSettled(run.map((c) => this.readNew(c)));
        let done = 0;
        let failure: unknown;
        for (; done < run.length; done++) {
          try {
            if ((await this.indexNew(run[done], reads[done])) === 'wait')
              this.waiting.set(run[done].seq, run[done]);
          } catch (err) {
            failure = err;
            break;
          }
        }
        if (done > 0) await this.advance(run[done - 1].seq);
        if (done < run.length) {
          if (failure !== undefined) await this.failedEvent(run[done], failure);
          return false;
        }
      } else {
        try {
          await this.otherChange(changes[i]);
        } catch (err) {
          await this.failedEvent(changes[i], err);
          return false;
        }
        await this.advance(changes[i].seq);
        i++;
      }
    }
    return !page.done;
  }

  /** Reads the instance of a NewInstance change; 'wait' while a gateway STOW claims it (see ingest_claims). */
  private async readNew(change: ArchiveChange): Promise<ReadArrival | ArrivalOutcome | 'wait'> {
    const out = await readArrival(this.deps, change.archiveId, { deferRest: true });
    return 'status' in out && out.status === 'deferred' ? 'wait' : out;
  }

  /**
   * Indexes the instance of one NewInstance change, wherever the feed meets it (in order, in a hole of the sequence,
   * retried after its STOW writer's claim, or found by the backstop): places what was read, records what cannot be
   * indexed (set aside) and counts the outcome. 'wait' while a gateway STOW claims the object; what the caller does
   * with a 'wait' is its own. `read` is a read already made (the main loop overlaps them). Only an unavailable
   * archive or database, or lost leadership, throws.
   */
  private async indexNew(
    change: ArchiveChange,
    read?: PromiseSettledResult<ReadArrival | ArrivalOutcome | 'wait'>,
  ): Promise<ArrivalOutcome | 'wait'> {
    let placing: ReadArrival | undefined;
    let out: ArrivalOutcome;
    try {
      if (read?.status === 'rejected') throw read.reason;
      const r = read ? read.value : await this.readNew(change);
      if (r === 'wait') return 'wait';
      if ('status' in r) out = r;
      else {
        placing = r;
        out = await placeArrival(this.deps, r);
      }
    } catch (err) {
      // An object that cannot be indexed is set aside at once (recorded with its UIDs) and the events behind it go on.
      if (err instanceof LeadershipLost || isInfrastructureError(err)) throw err;
      out = await this.setAside(change, err, placing);
    }
    this.count(out);
    return out;
  }

  /** Records progress up to `seq`; the stored cursor stays below the first waiting event and the lowest hole. */
  private async advance(seq: number): Promise<void> {
    this.scannedTo = Math.max(this.scannedTo, seq);
    let upTo = this.scannedTo;
    for (const w of this.waiting.keys()) upTo = Math.min(upTo, w - 1);
    const hole = this.gaps.lowest;
    if (hole !== undefined) upTo = Math.min(upTo, hole - 1);
    await this.saveCursor(upTo);
  }

  /**
   * Looks into the holes of the sequence below scannedTo (see ChangeGaps): a change that committed late is handled
   * now, like any other. Holes older than INDEXER_GAP_WAIT_MS are given up on (burnt numbers, deleted resources).
   */
  private async retryGaps(): Promise<void> {
    const expired = this.gaps.expire();
    if (expired) this.deps.logger.debug({ expired }, 'change feed: holes in the change log given up on');
    let pos = this.gaps.lowest;
    let handled = false;
    if (pos !== undefined && Date.now() - this.lastGapLook < GAP_LOOK_MS) pos = undefined;
    else this.lastGapLook = Date.now();
    for (let reads = 0; pos !== undefined && reads < GAP_READS_PER_LOOK; reads++) {
      if (!this.running || !this.leading) break;
      const page = await this.deps.archive.changes(pos - 1, BATCH);
      for (const c of page.changes) {
        if (!this.gaps.has(c.seq)) continue;
        this.deps.logger.info({ seq: c.seq, change: c.kind }, 'change feed: a change committed late');
        await this.handleChange(c);
        this.gaps.fill(c.seq);
        this.stats.late++;
        handled = true;
      }
      const lastSeen = page.changes.at(-1)?.seq;
      if (page.done || lastSeen === undefined) break;
      const next = this.gaps.open.find((r) => r.to > lastSeen);
      pos = next ? Math.max(next.from, lastSeen + 1) : undefined;
    }
    if (handled || expired) await this.advance(this.scannedTo);
  }

  /** One change met out of order (in a hole): as pollOnce would handle it; only unavailable dependencies throw. */
  private async handleChange(change: ArchiveChange): Promise<void> {
    if (change.kind !== 'NewInstance') {
      try {
        await this.otherChange(change);
      } catch (err) {
        await this.failedEvent(change, err);
      }
      return;
    }
    if ((await this.indexNew(change)) === 'wait') this.waiting.set(change.seq, change);
  }

  /** Retries the events left to their STOW writer: done once the writer indexed them, or its claim expired. */
  private async retryWaiting(): Promise<void> {
    if (this.waiting.size === 0) return;
    let finished = false;
    for (const [seq, change] of [...this.waiting].sort((a, b) => a[0] - b[0])) {
      if (!this.running || !this.leading) return;
      if ((await this.indexNew(change)) === 'wait') continue;
      this.waiting.delete(seq);
      finished = true;
    }
    if (finished) await this.advance(this.scannedTo);
  }

  /**
   * Deletions while the feed works through a backlog: Orthanc 1.10 does not log them and the idle check never runs,
   * so a sweep runs every INDEXER_BUSY_SWEEP_MS, and never more than a tenth of the time (the pause after a sweep is
   * at least nine times its length), so that a large archive's listing cannot slow indexing down much.
   */
  private async maybeBusySweep(): Promise<void> {
    const interval = Math.max(this.deps.config.INDEXER_BUSY_SWEEP_MS ?? 10_000, 9 * this.lastSweepMs);
    if (Date.now() - this.lastBusySweep < interval) return;
    const t0 = Date.now();
    const res = await sweepDeleted(this.deps);
    this.lastSweepMs = Date.now() - t0;
    this.lastBusySweep = Date.now();
    this.stats.removed += res.removed;
    if (res.removed) this.changedSinceCheck = true;
  }

  /** setAside, made unable to stop the feed itself: a record that cannot be written is logged and skipped. */
  private async setAside(change: ArchiveChange, err: unknown, read?: ReadArrival): Promise<ArrivalOutcome> {
    try {
      return await setAside(this.deps, change.archiveId, err, read);
    } catch (e) {
      if (isInfrastructureError(e)) throw e;
      this.deps.logger.error(
        { seq: change.seq, orthancId: change.archiveId, err: errSummary(e) },
        'change feed: could not record an index failure; skipped',
      );
      return { status: 'failed', reason: FailureReason.ProcessingFailure, message: failureMessage(err) };
    }
  }

  private count(out: ArrivalOutcome): void {
    this.changedSinceCheck = true;
    if (out.status === 'indexed') {
      if (out.projectId) this.stats.indexed++;
      else this.stats.quarantined++;
    } else if (out.status === 'failed') this.stats.failed++;
    else if (out.status === 'unchanged' || out.status === 'updated') this.stats.unchanged++;
  }

  private async otherChange(change: ArchiveChange): Promise<void> {
    const { db, archive, logger } = this.deps;
    if (change.kind === 'StableSeries') {
      let seriesUid: string | undefined;
      try {
        seriesUid = (await archive.seriesInstanceUid(change.archiveId))?.trim();
      } catch (err) {
        if (err instanceof NotFoundError) return; // deleted meanwhile
        throw err;
      }
      if (!seriesUid) return;
      if (!(await seriesIndexed(db, seriesUid))) return;
      const enqueue = this.deps.onSeriesStable ?? enqueueSeriesStable;
      // Derived work must not hold up indexing: a series whose job could not be queued is logged (by the queue).
      await enqueue(seriesUid);
      this.stats.seriesStable++;
      logger.debug({ seriesUid }, 'series stable: derived work queued');
    } else if (change.kind === 'Deleted') {
      if (change.level === 'Instance') {
        const row = await findInstanceByOrthancId(db, change.archiveId);
        if (row && (await removeInstance(db, row.sop_instance_uid))) this.stats.removed++;
      } else {
        // The ids of the instances under a deleted series/study/patient are gone with it: compare instead.
        this.sweepNeeded = true;
      }
      this.changedSinceCheck = true;
    }
    // NewSeries, NewStudy, NewPatient, StableStudy, StablePatient, metadata and attachment changes: nothing to do.
  }

  /**
   * An event failed. Unavailable archive or database, or lost leadership: thrown, so the step is retried after a
   * back-off (nothing is lost, the feed waits for its dependencies). Any other failure of an event that is not a new
   * instance (those are set aside where they fail) is logged and skipped: derived work must not stop indexing.
   */
  private async failedEvent(change: ArchiveChange, err: unknown): Promise<void> {
    if (err instanceof LeadershipLost || isInfrastructureError(err)) throw err;
    this.deps.logger.warn(
      { seq: change.seq, change: change.kind, orthancId: change.archiveId, err: errSummary(err) },
      'change feed: event failed, skipped',
    );
    await this.advance(change.seq);
  }

  /**
   * When idle, checks whether Orthanc lost instances the index still lists (index rows + recorded failures > Orthanc's
   * count: every archived object is one or the other once the feed is idle) and sweeps them out. The index count is
   * read before Orthanc's so that a STOW completing in between cannot look like a deletion.
   *
   * The other way round, an archive that holds more than the index is normal for a moment (a STOW between storing and
   * indexing), so only a shortfall seen twice, unchanged, with the feed idle and no hole left open in the change log,
   * leads to a comparison; it indexes what the feed never saw, at most once per INDEXER_RECONCILE_MS.
   */
  private async maybeSweep(): Promise<void> {
    const now = Date.now();
    if (!this.sweepNeeded && now - this.lastSweepCheck < SWEEP_CHECK_MS) return;
    this.lastSweepCheck = now;
    const { db, archive } = this.deps;
    await expireClaims(db, this.deps.config.INDEXER_CLAIM_TTL_MS ?? 120_000);
    const before = await archive.countInstances();
    if (!this.sweepNeeded && !this.changedSinceCheck && !this.shortfall && before === this.lastArchiveCount)
      return;
    const counted = await indexedOrFailedCount(db);
    const archived = await archive.countInstances();
    this.lastArchiveCount = archived;
    this.changedSinceCheck = false;
    let reconcile = false;
    this.shortfall = counted < archived;
    if (counted < archived && this.gaps.size === 0 && this.waiting.size === 0) {
      const seen = this.reconcileCandidate;
      this.reconcileCandidate = { archived, counted };
      reconcile =
        seen?.archived === archived &&
        seen.counted === counted &&
        now - this.lastReconcile >= (this.deps.config.INDEXER_RECONCILE_MS ?? 60_000);
    } else this.reconcileCandidate = undefined;
    if (!this.sweepNeeded && counted <= archived && !reconcile) return;
    this.sweepNeeded = false;
    const res = await sweepDeleted(this.deps);
    this.stats.removed += res.removed;
    this.changedSinceCheck = res.removed > 0;
    if (reconcile) {
      this.lastReconcile = Date.now();
      this.reconcileCandidate = undefined;
      await this.indexUnseen(res.unindexed);
    }
  }

  /** Indexes archived instances the change log never showed (see maybeSweep), as the feed would have. */
  private async indexUnseen(ids: string[]): Promise<void> {
    let found = 0;
    for (const archiveId of ids) {
      if (!this.running || !this.leading) return;
      const out = await this.indexNew({ seq: 0, kind: 'NewInstance', level: 'Instance', archiveId });
      // A STOW writer's claim ('wait'): that writer indexes it; nothing to find there.
      if (out !== 'wait' && (out.status === 'indexed' || out.status === 'updated' || out.status === 'failed'))
        found++;
    }
    this.stats.reconciled += found;
    if (found) this.deps.logger.warn({ found }, 'change feed: indexed instances the change log never showed');
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      if (!this.running) return resolve();
      this.wake = () => {
        clearTimeout(this.sleepTimer);
        resolve();
      };
      this.sleepTimer = setTimeout(resolve, ms);
    });
  }
}

class LeadershipLost extends Error {
  constructor() {
    super('indexer leadership lost');
  }
}

let indexer: ChangeFeedIndexer | undefined;

/** Starts the change-feed indexer of this process (follower until it wins the leadership); initServices opens the queues it feeds. */
export function initIndexer(
  services: Pick<Services, 'db' | 'archive' | 'config' | 'logger'>,
): ChangeFeedIndexer {
  if (indexer) return indexer;
  indexer = new ChangeFeedIndexer(services);
  indexer.start();
  return indexer;
}

/** The running indexer, if any. */
export function getIndexer(): ChangeFeedIndexer | undefined {
  return indexer;
}

/** Stops the indexer (releasing the leadership). */
export async function closeIndexer(): Promise<void> {
  const i = indexer;
  indexer = undefined;
  await i?.stop();
}
