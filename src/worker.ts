import type { Worker } from 'bullmq';
import { loadConfig } from './config';
import { migrate } from './index-db/migrate';
import { closeDb, initDb } from './index-db/pool';
import { deidentifier } from './cohorts/deidentifier';
import { initCohortWorker } from './jobs/cohort';
import { initThumbnailWorker } from './jobs/thumbnail';
import { initArchive } from './orthanc/archive';
import { createLogger } from './logger';
import { closePacs, initPacs } from './orthanc/client';

/**
 * The job worker process: runs the BullMQ workers (thumbnails) against the gateway's database and archive.
 * It serves no HTTP, so it opens only the database and the archive client (no token verification, no audit).
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL, 'aperture-worker');
  const db = initDb(config);
  // The gateway migrates too; the advisory lock makes whichever starts first do it.
  await migrate(db);
  const pacs = initPacs(config);
  const archive = initArchive(pacs);
  const workers: Worker[] = [
    initThumbnailWorker({ db, pacs, config, logger }),
    initCohortWorker({ db, pacs, archive, deid: deidentifier, config, logger }),
  ];
  logger.info({ queues: workers.map((w) => w.name) }, 'worker started');

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down: finishing active jobs');
    // Worker.close waits for active jobs, so none is cut off halfway (they are idempotent anyway).
    await Promise.all(
      workers.map((w) => w.close().catch((err) => logger.error({ err: String(err) }, 'worker close'))),
    );
    await closePacs().catch(() => undefined);
    await closeDb().catch(() => undefined);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
