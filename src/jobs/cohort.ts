/**
 * The cohort job: runs a cohort's pending instances in the worker process (src/cohorts/execute.ts). Job data is
 * the cohort id only. A run is resumable at any point, so a worker killed mid-cohort simply runs again: BullMQ
 * hands the stalled job to the next worker once its lock expires.
 */
import { type Job, UnrecoverableError, Worker } from 'bullmq';
import { type CohortDeps, type CohortRunOutcome, runCohort } from '../cohorts/execute';
import type { Config } from '../config';
import { type CohortJobData, QueueName, redisConnection, withJobLogContext } from './queues';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/**
 * A killed worker's cohort waits this long for its lock to expire before another worker takes it over; shorter
 * than BullMQ's default (30 s) because a cohort is one long job and its resumption is what users wait for.
 */
const LOCK_DURATION_MS = 10_000;

/** Runs one cohort job; UnrecoverableError for job data that names no cohort. */
export async function execCohortJob(
  job: Pick<Job<CohortJobData>, 'data'>,
  deps: CohortDeps,
): Promise<CohortRunOutcome> {
  const { cohortId } = job.data;
  if (typeof cohortId !== 'string' || !UUID.test(cohortId))
    throw new UnrecoverableError('job data has no valid cohort id');
  const outcome = await runCohort(deps, cohortId);
  if (!outcome) throw new UnrecoverableError(`cohort ${cohortId} does not exist`);
  return outcome;
}

/** Starts the BullMQ worker of the cohort queue. */
export function initCohortWorker(deps: CohortDeps & { config: Pick<Config, 'REDIS_URL'> }): Worker {
  const connection = redisConnection(deps.config, true);
  const worker = new Worker<CohortJobData>(
    QueueName.cohorts,
    withJobLogContext(QueueName.cohorts, (job) => execCohortJob(job, deps)),
    {
      connection,
      // Parallelism is inside a cohort (COHORT_CONCURRENCY); one cohort at a time per worker process.
      concurrency: 1,
      lockDuration: LOCK_DURATION_MS,
      stalledInterval: LOCK_DURATION_MS / 2,
    },
  );
  // BullMQ leaves a connection it was given open; close it with the worker.
  worker.on('closed', () => connection.disconnect());
  worker.on('failed', (job, err) =>
    deps.logger?.warn({ job: job?.id, cohort: job?.data.cohortId, err: err.message }, 'cohort job failed'),
  );
  worker.on('error', (err) => deps.logger?.warn({ err: err.message }, 'cohort worker error'));
  return worker;
}
