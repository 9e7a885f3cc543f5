import { Writable } from 'node:stream';
import type { Job } from 'bullmq';
import { withJobLogContext } from './jobs/queues';
import { createLogger, runWithLogContext } from './logger';

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const l of chunk.toString('utf8').split('\n')) if (l.trim()) lines.push(JSON.parse(l));
      cb();
    },
  });
  return { lines, logger: createLogger('debug', 'test', sink) };
}

describe('log context', () => {
  it('puts the request id on lines written later in the same request, and on no other', async () => {
    const { lines, logger } = capture();
    await runWithLogContext({ req: 'r-1' }, async () => {
      await new Promise((r) => setTimeout(r, 5));
      logger.child({ part: 'deep' }).info('inside');
    });
    logger.info('outside');
    expect(lines.map((l) => [l.msg, l.req])).toEqual([
      ['inside', 'r-1'],
      ['outside', undefined],
    ]);
  });

  it('names the job on every line its processor writes', async () => {
    const { lines, logger } = capture();
    const run = withJobLogContext('thumbnails', async (job: Job<{ seriesUid: string }>) => {
      await Promise.resolve();
      logger.warn({ seriesUid: job.data.seriesUid }, 'working');
      return 1;
    });
    await expect(run({ id: '17', data: { seriesUid: '1.2.3' } } as Job<{ seriesUid: string }>)).resolves.toBe(
      1,
    );
    expect(lines[0]).toMatchObject({ msg: 'working', job: 'thumbnails:17', seriesUid: '1.2.3' });
  });
});
