import { UnrecoverableError, type Worker } from 'bullmq';
import { readFileSync } from 'node:fs';
import { loadConfig } from '../src/config';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { closeQueues, enqueueSeriesStable, getQueue, initQueues, QueueName } from '../src/jobs/queues';
import { execThumbnailJob, initThumbnailWorker, type ThumbnailDeps } from '../src/jobs/thumbnail';
import { OrthancClient } from '../src/orthanc/client';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

const sample = (path: string) => readFileSync(`${SAMPLES}/${path}`);

async function until<T>(what: string, fn: () => Promise<T | undefined>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describe('thumbnail job and queue', () => {
  let gw: TestGateway;
  let deps: ThumbnailDeps;
  const series: Record<string, string> = {};

  async function store(key: string, path: string): Promise<void> {
    const out = await ingestInstance(gw.services, sample(path), ['alpha'], 'stow');
    if (!out.ok) throw new Error(`ingest failed: ${out.message}`);
    series[key] = out.parsed.seriesInstanceUid;
  }
  const thumbnailOf = async (sop: string) =>
    (
      await gw.services.db.query(
        'SELECT size, content_type, length(bytes) AS n FROM thumbnails WHERE sop_instance_uid = $1',
        [sop],
      )
    ).rows[0];

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    deps = { db: gw.services.db, pacs: gw.services.pacs, config: gw.config };
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    for (const f of ['17106', '17136', '17166', '17196']) await store('ct', `hierarchy/77654033/CT2/${f}`);
    await store('us', 'us/US-Philips-3EAF5680_jpeg-baseline.dcm');
    await store('sr', 'rt-sr-seg/reportsi_basic-text-sr.dcm');
    await store('j2k', 'ct/CT1_J2KI_jpeg2000.dcm');
    await store('mr', 'mr/MR_small.dcm');
  });
  afterAll(async () => {
    await closeQueues();
    await gw.close();
  });

  it('renders the middle image of a series into the cache, and keeps it on a second run', async () => {
    const slices = await gw.services.db.query<{ sop_instance_uid: string }>(
      'SELECT sop_instance_uid FROM instances WHERE series_uid = $1 ORDER BY instance_number, sop_instance_uid',
      [series.ct],
    );
    const middle = slices.rows[2].sop_instance_uid;
    const first = await execThumbnailJob({ data: { seriesUid: series.ct } }, deps);
    expect(first).toMatchObject({ status: 'rendered', sopInstanceUid: middle });
    expect(await thumbnailOf(middle)).toMatchObject({ size: 128, content_type: 'image/jpeg' });
    const again = await execThumbnailJob({ data: { seriesUid: series.ct } }, deps);
    expect(again).toMatchObject({ status: 'cached', sopInstanceUid: middle });
  });

  it('serves what the job cached to the thumbnail resource without rendering again', async () => {
    const study = (
      await gw.services.db.query('SELECT study_uid FROM instances WHERE series_uid = $1 LIMIT 1', [series.ct])
    ).rows[0].study_uid;
    const res = await fetch(
      `${gw.url}/projects/alpha/dicom-web/studies/${study}/series/${series.ct}/thumbnail`,
    );
    expect(res.status).toBe(200);
    expect(res.headers.get('x-thumbnail-cache')).toBe('hit');
  });

  it('gives up at once on a series the index does not know, and renders a JPEG 2000 image', async () => {
    await expect(execThumbnailJob({ data: { seriesUid: '1.2.3.999' } }, deps)).rejects.toThrow(
      UnrecoverableError,
    );
    await expect(execThumbnailJob({ data: { seriesUid: 'not a uid' } }, deps)).rejects.toThrow(
      UnrecoverableError,
    );
    // JPEG 2000 is decoded in-process (src/codecs), whatever plugins the archive has.
    expect((await execThumbnailJob({ data: { seriesUid: series.j2k } }, deps)).status).toBe('rendered');
  });

  it('has nothing to do for a series without images (a report)', async () => {
    expect(await execThumbnailJob({ data: { seriesUid: series.sr } }, deps)).toEqual({ status: 'no-images' });
  });

  it('fails retryably (not unrecoverably) while the archive is unreachable', async () => {
    const down = new OrthancClient({
      ...gw.config,
      ORTHANC_URL: 'http://127.0.0.1:9',
      ORTHANC_TIMEOUT_MS: 1000,
    });
    try {
      const err = await execThumbnailJob({ data: { seriesUid: series.mr } }, { ...deps, pacs: down }).catch(
        (e: unknown) => e,
      );
      expect(err).toBeInstanceOf(Error);
      expect(err).not.toBeInstanceOf(UnrecoverableError);
    } finally {
      await down.close();
    }
  });

  it('runs through Redis: repeated enqueues of a waiting series collapse into one job that a worker completes', async () => {
    initQueues(gw.config);
    const queue = getQueue(QueueName.thumbnails);
    await queue.obliterate({ force: true });
    for (let i = 0; i < 3; i++) expect(await enqueueSeriesStable(series.us)).toBe(true);
    expect(await queue.getJobCounts('waiting', 'active', 'completed')).toEqual({
      waiting: 1,
      active: 0,
      completed: 0,
    });
    const [job] = await queue.getJobs(['waiting']);
    // Identifiers only in job data: never names or other PHI.
    expect(job.data).toEqual({ seriesUid: series.us });
    expect(job.opts.attempts).toBeGreaterThan(1);

    const sop = (
      await gw.services.db.query('SELECT sop_instance_uid FROM instances WHERE series_uid = $1', [series.us])
    ).rows[0].sop_instance_uid as string;
    let worker: Worker | undefined;
    try {
      worker = initThumbnailWorker({
        ...deps,
        config: loadConfig({ ...process.env, THUMBNAIL_CONCURRENCY: '1' }),
      });
      await until('the thumbnail', () => thumbnailOf(sop));
      await until('the completed job', async () =>
        (await queue.getJobCounts('completed')).completed === 1 ? true : undefined,
      );
    } finally {
      await worker?.close();
    }
    expect(await thumbnailOf(sop)).toMatchObject({ content_type: 'image/jpeg' });
  });

  it('shows queue counts at GET /api/jobs to global administrators', async () => {
    initQueues(gw.config);
    const res = await fetch(`${gw.url}/api/jobs`);
    expect(res.status).toBe(200);
    const body = (await res.json()) as { queues: Record<string, Record<string, number>> };
    expect(body.queues.thumbnails).toMatchObject({
      waiting: expect.any(Number),
      completed: expect.any(Number),
      failed: expect.any(Number),
    });
  });
});
