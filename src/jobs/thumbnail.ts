/**
 * The thumbnail job: renders the thumbnail of a series' representative image into the thumbnail cache, so that
 * viewers listing series get them at once. Triggered per series (stable series in the change feed, STOW-RS).
 */
import { type Job, UnrecoverableError, Worker } from 'bullmq';
import type { Pool } from 'pg';
import type { Config } from '../config';
import { AppError, UnrecoverableInputError } from '../errors';
import {
  countSeriesInstances,
  getThumbnail,
  putThumbnail,
  type RenderableRow,
  seriesRepresentative,
} from '../index-db/thumbnails';
import type { Logger } from '../logger';
import { codecPoolFor } from '../codecs';
import { isUid } from '../dicom/uid';
import { type Archive, OrthancArchive } from '../orthanc/archive';
import type { PacsClient } from '../orthanc/client';
import { renderThumbnail as renderFrameThumbnail, THUMBNAIL_QUALITY } from '../retrieve/render';
import { QueueName, redisConnection, type ThumbnailJobData, withJobLogContext } from './queues';

/** What the thumbnail job needs. */
export interface ThumbnailDeps {
  db: Pool;
  pacs: PacsClient;
  /** The archive; built over `pacs` when absent. */
  archive?: Archive;
  config: Pick<
    Config,
    | 'THUMBNAIL_SIZE'
    | 'RENDER_MAX_PIXELS'
    | 'RENDER_MAX_OUTPUT_PIXELS'
    | 'CODEC_THREADS'
    | 'CODEC_QUEUE'
    | 'CODEC_MAX_FRAME_BYTES'
  >;
  logger?: Logger;
}

export { THUMBNAIL_QUALITY };

/** Renders the thumbnail of an instance as cached (see retrieve/render). */
export async function renderThumbnail(
  deps: Pick<ThumbnailDeps, 'pacs' | 'archive' | 'config'>,
  row: RenderableRow,
  size: number,
  signal?: AbortSignal,
): Promise<Buffer> {
  return renderFrameThumbnail(
    deps.archive ?? new OrthancArchive(deps.pacs),
    row,
    size,
    {
      maxPixels: deps.config.RENDER_MAX_PIXELS,
      maxOutputPixels: deps.config.RENDER_MAX_OUTPUT_PIXELS,
      // Compressed frames decode on this process's thread pool, never on the job's event loop.
      codecs: codecPoolFor(deps.config),
    },
    signal,
  );
}

/** What one run did, for logs and tests. */
export type ThumbnailOutcome =
  { status: 'rendered' | 'cached'; sopInstanceUid: string; bytes: number } | { status: 'no-images' };

/**
 * Makes sure the representative image of a series has a cached thumbnail. Idempotent: a current cache entry is
 * kept as is. Throws UnrecoverableError for a series the index does not know or an image that can never be
 * rendered (BullMQ then does not retry); other errors (archive or database unavailable) are retried.
 */
export async function execThumbnailJob(
  job: Pick<Job<ThumbnailJobData>, 'data'>,
  deps: ThumbnailDeps,
): Promise<ThumbnailOutcome> {
  const { seriesUid } = job.data;
  if (!isUid(seriesUid)) {
    throw new UnrecoverableError('job data has no valid series UID');
  }
  const row = await seriesRepresentative(deps.db, null, seriesUid);
  if (!row) {
    if ((await countSeriesInstances(deps.db, seriesUid)) === 0) {
      throw new UnrecoverableError(`series ${seriesUid} is not in the index`);
    }
    // Reports, structured documents, waveforms: nothing to draw, nothing to retry.
    return { status: 'no-images' };
  }
  const size = deps.config.THUMBNAIL_SIZE;
  const cached = await getThumbnail(deps.db, row.sopInstanceUid, size);
  if (cached) return { status: 'cached', sopInstanceUid: row.sopInstanceUid, bytes: cached.bytes.length };
  let bytes: Buffer;
  try {
    bytes = await renderThumbnail(deps, row, size);
  } catch (err) {
    // Undecodable or absurd images never get better by retrying; a missing archive object neither.
    if (err instanceof UnrecoverableInputError || (err instanceof AppError && err.status === 404)) {
      throw new UnrecoverableError(`series ${seriesUid}: ${err.message}`);
    }
    throw err;
  }
  await putThumbnail(deps.db, {
    sopInstanceUid: row.sopInstanceUid,
    size,
    contentType: 'image/jpeg',
    bytes,
    sourceMd5: row.md5,
  });
  return { status: 'rendered', sopInstanceUid: row.sopInstanceUid, bytes: bytes.length };
}

/** Starts a worker for the thumbnail queue. */
export function initThumbnailWorker(
  deps: ThumbnailDeps & { config: Pick<Config, 'REDIS_URL' | 'THUMBNAIL_CONCURRENCY'> },
): Worker {
  const connection = redisConnection(deps.config, true);
  const worker = new Worker<ThumbnailJobData, ThumbnailOutcome>(
    QueueName.thumbnails,
    withJobLogContext(QueueName.thumbnails, (job) => execThumbnailJob(job, deps)),
    { connection, concurrency: deps.config.THUMBNAIL_CONCURRENCY },
  );
  // BullMQ leaves a connection it was given open; close it with the worker.
  worker.on('closed', () => connection.disconnect());
  worker.on('completed', (job, outcome) => {
    deps.logger?.debug(
      { job: job.id, seriesUid: job.data.seriesUid, status: outcome.status },
      'thumbnail job done',
    );
  });
  worker.on('failed', (job, err) => {
    deps.logger?.warn(
      { job: job?.id, seriesUid: job?.data.seriesUid, attempts: job?.attemptsMade, err: err.message },
      'thumbnail job failed',
    );
  });
  worker.on('error', (err) => deps.logger?.error({ err: err.message }, 'thumbnail worker error'));
  return worker;
}
