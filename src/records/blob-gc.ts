/**
 * Collection of the bytes of deleted non-DICOM files (issue 18). Deleting a record, subject or project deletes its
 * file rows (cascades); a trigger (migration 272) then lists each blob as a candidate. A sweep removes a candidate's
 * bytes once both the deletion and the blob's last write are older than the grace period, and only while no row of
 * any project (another version, another subject's identical upload, a pipeline run's artefact) names it. The check
 * and the removal run under the blob's advisory lock, the same lock an upload's row transaction takes, so an upload
 * of the same bytes either names the blob first (it stays) or finds it gone and is answered 503 to send it again.
 * The grace period also covers a put whose row is not written yet (a pipeline run still going): a put rewrites the
 * blob, which makes it young again.
 */
import type { Pool } from 'pg';
import type { CoreServices } from '../services';
import { insertAuditEvents } from '../index-db/audit';
import { withTransaction } from '../index-db/pool';
import { blobCandidates, blobReferenced, dropBlobCandidate, lockBlob } from '../index-db/records';
import { type FileStore, getFileStore } from './file-store';

/** What one sweep did. */
export interface SweepResult {
  /** Blobs whose bytes were removed. */
  removed: number;
  /** Candidates still named by a row (dropped; their bytes stay). */
  kept: number;
  /** Candidates whose blob was written within the grace period (left for a later sweep). */
  young: number;
  /** Bytes freed. */
  bytes: number;
}

/** Removes the bytes of blobs no row names any more, deleted over `graceMs` ago; audited as `records.blobs.collect`. */
export async function sweepDeletedBlobs(
  db: Pool,
  store: FileStore,
  opts: { graceMs: number; batch?: number; now?: Date },
): Promise<SweepResult> {
  const now = opts.now ?? new Date();
  const before = new Date(now.getTime() - opts.graceMs);
  const out: SweepResult = { removed: 0, kept: 0, young: 0, bytes: 0 };
  let after = '';
  for (;;) {
    const batch = await blobCandidates(db, before, after, opts.batch ?? 500);
    if (batch.length === 0) break;
    after = batch[batch.length - 1];
    for (const sha of batch) {
      await withTransaction(db, async (client) => {
        await lockBlob(client, sha);
        if (await blobReferenced(client, sha)) {
          out.kept++;
          await dropBlobCandidate(client, sha, before);
          return;
        }
        const st = await store.statBlob(sha);
        if (st && st.mtime > before) {
          out.young++;
          return;
        }
        if (st) {
          await store.remove(sha);
          out.bytes += st.size;
          out.removed++;
        }
        await dropBlobCandidate(client, sha, before);
      });
    }
  }
  if (out.removed + out.kept > 0)
    await insertAuditEvents(db, [
      {
        at: new Date(),
        principal: 'system',
        principalKind: 'service',
        action: 'records.blobs.collect',
        projectId: null,
        studyUid: null,
        seriesUid: null,
        sopInstanceUid: null,
        outcome: 200,
        bytes: out.bytes,
        clientIp: null,
        method: null,
        route: 'worker:records-blob-gc',
        detail: { removed: out.removed, kept: out.kept, young: out.young, grace_ms: opts.graceMs },
      },
    ]);
  return out;
}

/**
 * Sweeps every RECORDS_BLOB_SWEEP_MS in the worker process (first one a minute after start). Sweeps of several
 * workers may overlap: each blob is decided under its lock, so they only repeat each other's checks.
 */
export function startBlobSweep(services: Pick<CoreServices, 'config' | 'db' | 'logger'>): {
  stop(): Promise<void>;
} {
  const every = services.config.RECORDS_BLOB_SWEEP_MS;
  if (every === 0) return { stop: async () => undefined };
  let running: Promise<unknown> | undefined;
  const run = () => {
    if (running) return;
    running = sweepDeletedBlobs(services.db, getFileStore(), {
      graceMs: services.config.RECORDS_BLOB_GRACE_MS,
    })
      .then((r) => {
        if (r.removed + r.kept > 0) services.logger.info({ ...r }, 'records blob sweep');
      })
      .catch((err: unknown) => services.logger.warn({ err: String(err) }, 'records blob sweep failed'))
      .finally(() => (running = undefined));
  };
  const first = setTimeout(run, Math.min(60_000, every));
  const timer = setInterval(run, every);
  first.unref();
  timer.unref();
  return {
    async stop() {
      clearTimeout(first);
      clearInterval(timer);
      await running;
    },
  };
}
