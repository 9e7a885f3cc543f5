/**
 * The pipeline-run job (issue 19): one attempt of a run in the worker process (src/pipelines/runner.ts). Job data is
 * the run id only. A worker killed mid-run loses its lock; BullMQ hands the stalled job to the next worker, whose
 * attempt starts from an empty folder, so the run completes once and nothing of the killed attempt is stored.
 */
import { join } from 'node:path';
import { type Job, UnrecoverableError, Worker } from 'bullmq';
import type { Pool } from 'pg';
import type { Config } from '../config';
import { finishRun } from '../index-db/pipelines';
import type { Logger } from '../logger';
import { getFileStore } from '../records/file-store';
import { cgroupSupport, executeRun, type RunnerDeps, type RunOutcome } from '../pipelines/runner';
import { type PipelineRunJobData, QueueName, redisConnection } from './queues';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** Short, like the cohort job's: a killed worker's run is taken over within seconds. Renewed while a run lasts. */
const LOCK_DURATION_MS = 10_000;

/** The tools shipped with Aperture (pipelines/bin), shown read-only in the sandbox. */
export const SHIPPED_TOOLS_DIR = join(__dirname, '../../pipelines/bin');

/** Runs one pipeline-run job. */
export async function execPipelineRunJob(
  job: Pick<Job<PipelineRunJobData>, 'data'> & Partial<Pick<Job<PipelineRunJobData>, 'updateProgress'>>,
  deps: RunnerDeps,
): Promise<RunOutcome> {
  const { runId } = job.data;
  if (typeof runId !== 'string' || !UUID.test(runId))
    throw new UnrecoverableError('job data has no valid run id');
  return executeRun(
    { ...deps, onProgress: (phase, progress) => job.updateProgress?.({ phase, progress }) },
    runId,
  );
}

/** Starts the BullMQ worker of pipeline runs, PIPELINE_CONCURRENCY runs at a time. */
export function initPipelineRunWorker(deps: { db: Pool; logger?: Logger; config: Config }): Worker {
  const connection = redisConnection(deps.config, true);
  const runnerDeps: RunnerDeps = {
    db: deps.db,
    logger: deps.logger,
    config: deps.config,
    files: getFileStore(),
    toolsDir: SHIPPED_TOOLS_DIR,
  };
  // Says at start which limits runs get (cgroup v2, v1 or rlimits, and why), and sweeps dead workers' cgroups.
  if (deps.config.PIPELINE_EXECUTOR === 'host') void cgroupSupport(deps.config, deps.logger);
  const worker = new Worker<PipelineRunJobData>(
    QueueName.pipelineRuns,
    (job) => execPipelineRunJob(job, runnerDeps),
    {
      connection,
      concurrency: deps.config.PIPELINE_CONCURRENCY,
      lockDuration: LOCK_DURATION_MS,
      stalledInterval: LOCK_DURATION_MS / 2,
    },
  );
  worker.on('closed', () => connection.disconnect());
  worker.on('failed', (job, err) => {
    deps.logger?.warn({ job: job?.id, run: job?.data.runId, err: err.message }, 'pipeline run job failed');
    // Out of retries (gateway or database down throughout): the run is failed, visibly, and can be retried.
    if (job && job.attemptsMade >= (job.opts.attempts ?? 1) && UUID.test(job.data.runId))
      void finishRun(deps.db, job.data.runId, {
        state: 'failed',
        error: 'the run could not complete (outage)',
      }).catch(() => undefined);
  });
  worker.on('error', (err) => deps.logger?.warn({ err: err.message }, 'pipeline worker error'));
  return worker;
}
