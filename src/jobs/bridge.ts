/**
 * The bridge's worker (issue 14): retrieves from remote nodes and watcher runs (src/bridge/retrieve.ts). Job data is
 * an id only. A retrieve whose node has no free association slot waits (moved to delayed, not failed); a killed
 * worker's retrieve is taken over by the next worker once its lock expires and resumes at its first unfinished study.
 */
import { DelayedError, type Job, UnrecoverableError, Worker } from 'bullmq';
import { NodeBusyError, runRetrieve, runWatcher, type BridgeDeps } from '../bridge/retrieve';
import { failRetrieve } from '../index-db/bridge';
import type { Config } from '../config';
import { type BridgeJobData, enqueueCohort, enqueueRetrieve, QueueName, redisConnection } from './queues';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** As for cohorts: a killed worker's retrieve is resumed after this, not after BullMQ's default 30 s. */
const LOCK_DURATION_MS = 10_000;
/** How long a retrieve waits for a free association slot of its node before trying again. */
const BUSY_RETRY_MS = 2000;

/** Runs one bridge job; UnrecoverableError for job data that names nothing. */
export async function execBridgeJob(
  job: Pick<Job<BridgeJobData>, 'data' | 'moveToDelayed'>,
  deps: BridgeDeps,
  token?: string,
): Promise<unknown> {
  const data = job.data as { retrieveId?: unknown; watcherId?: unknown };
  if (typeof data.retrieveId === 'string' && UUID.test(data.retrieveId)) {
    try {
      const out = await runRetrieve(deps, data.retrieveId);
      if (!out) throw new UnrecoverableError(`retrieve ${data.retrieveId} does not exist`);
      return out;
    } catch (err) {
      if (err instanceof NodeBusyError && token) {
        await job.moveToDelayed(Date.now() + BUSY_RETRY_MS, token);
        throw new DelayedError();
      }
      throw err;
    }
  }
  if (typeof data.watcherId === 'string' && UUID.test(data.watcherId)) {
    const out = await runWatcher(deps, data.watcherId);
    return out ?? { skipped: true };
  }
  throw new UnrecoverableError('job data names no retrieve and no watcher');
}

/** Starts the BullMQ worker of the bridge queue. */
export function initBridgeWorker(
  deps: Omit<BridgeDeps, 'enqueueRetrieve' | 'enqueueCohort'> & {
    config: BridgeDeps['config'] & Pick<Config, 'REDIS_URL' | 'BRIDGE_WORKER_CONCURRENCY'>;
  },
): Worker {
  const connection = redisConnection(deps.config, true);
  const full: BridgeDeps = { ...deps, enqueueRetrieve, enqueueCohort };
  const worker = new Worker<BridgeJobData>(
    QueueName.bridge,
    (job, token) => execBridgeJob(job, full, token),
    {
      connection,
      concurrency: deps.config.BRIDGE_WORKER_CONCURRENCY,
      lockDuration: LOCK_DURATION_MS,
      stalledInterval: LOCK_DURATION_MS / 2,
    },
  );
  worker.on('closed', () => connection.disconnect());
  worker.on('failed', (job, err) => {
    deps.logger.warn({ job: job?.id, err: err.message }, 'bridge job failed');
    // Its last attempt: a retrieve must not be left reading `running` with no job behind it.
    const retrieveId = (job?.data as { retrieveId?: unknown } | undefined)?.retrieveId;
    const final = !job || err instanceof UnrecoverableError || job.attemptsMade >= (job.opts.attempts ?? 1);
    if (final && typeof retrieveId === 'string' && UUID.test(retrieveId))
      void failRetrieve(
        deps.db,
        retrieveId,
        `the retrieve stopped after ${job?.attemptsMade ?? 1} attempts: ${err.message}`,
      ).catch(() => undefined);
  });
  worker.on('error', (err) => deps.logger.warn({ err: err.message }, 'bridge worker error'));
  return worker;
}
