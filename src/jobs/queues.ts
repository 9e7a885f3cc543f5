/**
 * The BullMQ queues on Redis: background work runs in worker processes (src/worker.ts), never in the HTTP
 * process. Job data carries identifiers only (UIDs), never PHI.
 */
import { type Job, type JobsOptions, Queue } from 'bullmq';
import IORedis, { type RedisOptions } from 'ioredis';
import type { Config } from '../config';
import { AppError, DependencyUnavailableError } from '../errors';
import { type Logger, runWithLogContext } from '../logger';

/** A job processor whose every log line (however deep) carries `job: "<queue>:<id>"`. */
export function withJobLogContext<D, R>(
  queue: string,
  processor: (job: Job<D>) => Promise<R>,
): (job: Job<D>) => Promise<R> {
  return (job) => runWithLogContext({ job: `${queue}:${job.id}` }, () => processor(job));
}

/** Queue names, one per job kind. */
export const QueueName = {
  thumbnails: 'thumbnails',
  cohorts: 'cohorts',
  pipelineRuns: 'pipeline-runs',
  /** bridge (issue 14): retrieves from remote nodes and watcher runs. */
  bridge: 'bridge',
} as const;
export type QueueNameValue = (typeof QueueName)[keyof typeof QueueName];

/** Job data of the thumbnail job: which series to make a thumbnail for. */
export interface ThumbnailJobData {
  seriesUid: string;
}

/** Job data of the cohort job: the cohort id only (its instances and keys are in PostgreSQL). */
export interface CohortJobData {
  cohortId: string;
}

/**
 * Queues a run of a cohort. Deduplicated per cohort like thumbnails: while a run waits nothing more is added, while
 * one runs one more is kept, so a retry during a run is not lost. Redis down answers DependencyUnavailableError.
 */
export async function enqueueCohort(cohortId: string): Promise<void> {
  const data: CohortJobData = { cohortId };
  await withinQueueDeadline(
    getQueue(QueueName.cohorts).add('cohort', data, {
      deduplication: { id: `cohort-${cohortId}`, keepLastIfActive: true },
    }),
    ENQUEUE_TIMEOUT_MS,
  );
}

/** Job data of a pipeline run (issue 19): the run id only (pipeline, parameters and inputs are in PostgreSQL). */
export interface PipelineRunJobData {
  runId: string;
}

/**
 * Queues a pipeline run. Tool failures are final (the runner records them); the queue's retries are for outages of
 * the gateway or the database on the way (3 attempts with backoff). One job per run at a time.
 */
export async function enqueuePipelineRun(runId: string): Promise<void> {
  const data: PipelineRunJobData = { runId };
  await withinQueueDeadline(
    getQueue(QueueName.pipelineRuns).add('pipeline-run', data, {
      attempts: 3,
      deduplication: { id: `run-${runId}` },
    }),
    ENQUEUE_TIMEOUT_MS,
  );
}

/** Job data of the bridge's jobs: a retrieve id or a watcher id (their details are in PostgreSQL). */
export type BridgeJobData = { retrieveId: string } | { watcherId: string };

/** Queues a run of a retrieve (deduplicated while one waits, like cohorts). Redis down: DependencyUnavailableError. */
export async function enqueueRetrieve(retrieveId: string): Promise<void> {
  const data: BridgeJobData = { retrieveId };
  await withinQueueDeadline(
    getQueue(QueueName.bridge).add('retrieve', data, {
      deduplication: { id: `retrieve-${retrieveId}`, keepLastIfActive: true },
    }),
    ENQUEUE_TIMEOUT_MS,
  );
}

/** Queues one run of a watcher now. */
export async function enqueueWatcherRun(watcherId: string): Promise<void> {
  const data: BridgeJobData = { watcherId };
  await withinQueueDeadline(
    getQueue(QueueName.bridge).add('watcher', data, {
      deduplication: { id: `watcher-${watcherId}`, keepLastIfActive: true },
    }),
    ENQUEUE_TIMEOUT_MS,
  );
}

/** Schedules a watcher as a BullMQ job scheduler (repeatable job) every `intervalS` seconds. */
export async function scheduleWatcher(watcherId: string, intervalS: number): Promise<void> {
  const data: BridgeJobData = { watcherId };
  await withinQueueDeadline(
    getQueue(QueueName.bridge).upsertJobScheduler(
      `watcher-${watcherId}`,
      { every: intervalS * 1000 },
      { name: 'watcher', data, opts: { removeOnComplete: { count: 100 }, removeOnFail: { count: 100 } } },
    ),
    ENQUEUE_TIMEOUT_MS,
  );
}

/** Removes a watcher's schedule. */
export async function unscheduleWatcher(watcherId: string): Promise<void> {
  await withinQueueDeadline(
    getQueue(QueueName.bridge).removeJobScheduler(`watcher-${watcherId}`),
    ENQUEUE_TIMEOUT_MS,
  );
}

/**
 * Retries with exponential backoff (2 s, 4 s, 8 s ...) for transient failures (archive or database down); finished
 * jobs are kept for a while for inspection, bounded in number so Redis does not grow without end.
 */
export const DEFAULT_JOB_OPTIONS: JobsOptions = {
  attempts: 5,
  backoff: { type: 'exponential', delay: 2000 },
  removeOnComplete: { age: 24 * 3600, count: 1000 },
  removeOnFail: { age: 7 * 24 * 3600, count: 5000 },
};

/** Redis options for BullMQ connections: workers need blocking commands that never give up. */
export function redisOptions(forWorker: boolean): RedisOptions {
  return {
    // Workers block on Redis and must retry forever; producers fail fast so a request never hangs on Redis.
    maxRetriesPerRequest: forWorker ? null : 1,
    enableOfflineQueue: forWorker,
    connectionName: forWorker ? 'aperture-worker' : 'aperture-gateway',
  };
}

/** A Redis connection for BullMQ. */
export function redisConnection(config: Pick<Config, 'REDIS_URL'>, forWorker: boolean): IORedis {
  const conn = new IORedis(config.REDIS_URL, redisOptions(forWorker));
  // Connection errors surface through the commands that fail; an unhandled 'error' event must not crash the process.
  conn.on('error', () => undefined);
  return conn;
}

let connection: IORedis | undefined;
let queues: Map<QueueNameValue, Queue> | undefined;
let log: Logger | undefined;

/** Opens the producer connection and the queues. Idempotent. */
export function initQueues(config: Pick<Config, 'REDIS_URL'>, logger?: Logger): void {
  if (queues) return;
  connection = redisConnection(config, false);
  log = logger;
  queues = new Map();
  let lastErrorLog = 0;
  for (const name of Object.values(QueueName)) {
    const queue = new Queue(name, { connection, defaultJobOptions: DEFAULT_JOB_OPTIONS });
    // While Redis is down every reconnect attempt errors: log it now and then, never crash or flood the log.
    queue.on('error', (err) => {
      if (Date.now() - lastErrorLog < 10_000) return;
      lastErrorLog = Date.now();
      log?.warn({ queue: name, err: err.message }, 'job queue: Redis unavailable');
    });
    queues.set(name, queue);
  }
}

/** Runs a Redis operation within `ms`; any failure or timeout is an outage of the queue (503 with Retry-After). */
async function withinQueueDeadline<T>(op: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error('timed out waiting for Redis')), ms);
  });
  op.catch(() => undefined); // a late rejection after the timeout is not an unhandled one
  try {
    return await Promise.race([op, timeout]);
  } catch (err) {
    if (err instanceof AppError) throw err;
    throw new DependencyUnavailableError('queue');
  } finally {
    clearTimeout(timer);
  }
}

/** True when Redis answers a PING within `timeoutMs` (for /readyz); false when it does not or queues are closed. */
export async function pingQueues(timeoutMs: number): Promise<boolean> {
  const conn = connection;
  if (!conn) return false;
  try {
    return (await withinQueueDeadline(conn.ping(), timeoutMs)) === 'PONG';
  } catch {
    return false;
  }
}

/** The queue of one job kind; initQueues must have run. */
export function getQueue(name: QueueNameValue): Queue {
  const q = queues?.get(name);
  if (!q) throw new Error('job queues not initialised');
  return q;
}

/** True once initQueues has run (and closeQueues has not). */
export function queuesReady(): boolean {
  return queues !== undefined;
}

/** Closes the queues and their connection. */
export async function closeQueues(): Promise<void> {
  const qs = queues;
  const conn = connection;
  queues = undefined;
  connection = undefined;
  if (qs) await Promise.all([...qs.values()].map((q) => q.close().catch(() => undefined)));
  conn?.disconnect();
}

/** How long a producer waits for Redis before giving up on an enqueue. */
const ENQUEUE_TIMEOUT_MS = 3000;

/**
 * Schedules the derived work for a series whose content changed: called by the change feed on Orthanc's
 * StableSeries and by STOW-RS for each series it added instances to. Today that is the thumbnail.
 *
 * Deduplicated per series with BullMQ deduplication (`keepLastIfActive`): while a job for the series waits, further
 * calls add nothing; while one runs, one more is kept to run after it, so instances that arrive during a run are
 * not missed. (A fixed jobId would also dedupe, but it would swallow every later enqueue for as long as the finished
 * job is retained.) Never throws: derived work must not fail the store that triggered it; returns false when the
 * job could not be queued (Redis down, queues not initialised), which the caller may log.
 */
export async function enqueueSeriesStable(seriesUid: string): Promise<boolean> {
  if (!queues) return false;
  const data: ThumbnailJobData = { seriesUid };
  try {
    const add = getQueue(QueueName.thumbnails).add('series-thumbnail', data, {
      deduplication: { id: `thumbnail-${seriesUid}`, keepLastIfActive: true },
    });
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error('timed out waiting for Redis')), ENQUEUE_TIMEOUT_MS);
    });
    try {
      await Promise.race([add, timeout]);
    } finally {
      clearTimeout(timer);
    }
    return true;
  } catch (err) {
    log?.warn({ seriesUid, err: (err as Error).message }, 'could not enqueue derived work for series');
    return false;
  }
}

/** Job counts per queue, for the status endpoint; Redis down or silent answers DependencyUnavailableError. */
export async function queueCounts(): Promise<Record<string, Record<string, number>>> {
  const out: Record<string, Record<string, number>> = {};
  for (const name of Object.values(QueueName)) {
    out[name] = await withinQueueDeadline(
      getQueue(name).getJobCounts('waiting', 'active', 'delayed', 'completed', 'failed', 'prioritized'),
      ENQUEUE_TIMEOUT_MS,
    );
  }
  return out;
}
