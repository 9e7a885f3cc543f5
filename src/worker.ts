import type { Worker } from 'bullmq';
import { initServices, stopOnSignals } from './bootstrap';
import { loadConfig } from './config';
import { deidentifier } from './cohorts/deidentifier';
import { initBridgeWorker } from './jobs/bridge';
import { initCohortWorker } from './jobs/cohort';
import { initPipelineRunWorker } from './jobs/pipeline-run';
import { getRemoteNodes } from './orthanc/remote-nodes';
import { initThumbnailWorker } from './jobs/thumbnail';
import { createLogger } from './logger';
import { startBlobSweep } from './records/blob-gc';

/**
 * The job worker process: runs the BullMQ workers (thumbnails, cohorts) against the gateway's database and
 * archive. It serves no HTTP (no token verification, no audit trail); it opens the producer queues because a
 * cohort's output goes through the ingest path, which enqueues derived work.
 */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL, 'aperture-worker');
  // The gateway migrates too; the advisory lock makes whichever starts first do it.
  const services = await initServices(config, logger, { http: false });
  const workers: Worker[] = [
    initThumbnailWorker(services),
    initCohortWorker({ ...services, deid: deidentifier }),
    initPipelineRunWorker(services),
    initBridgeWorker({ ...services, nodes: getRemoteNodes(), deid: deidentifier }),
  ];
  logger.info({ queues: workers.map((w) => w.name) }, 'worker started');
  const sweep = startBlobSweep(services);

  stopOnSignals(services, async () => {
    await sweep.stop();
    // Worker.close waits for active jobs, so none is cut off halfway (they are idempotent anyway).
    await Promise.all(
      workers.map((w) => w.close().catch((err) => logger.error({ err: String(err) }, 'worker close'))),
    );
  });
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
