import { ServiceBusyError } from '../errors';
import type { Services } from '../services';
import { runRender } from './rendered';

/** Services as runRender reads them: only the render bounds of the configuration. */
function services(concurrency: number, queue: number): Services {
  return { config: { RENDER_CONCURRENCY: concurrency, RENDER_QUEUE: queue } } as unknown as Services;
}

describe('the render limiter', () => {
  it('runs RENDER_CONCURRENCY renders at once, queues RENDER_QUEUE more, and answers 503 beyond', async () => {
    const s = services(1, 1);
    const releases: Array<() => void> = [];
    let running = 0;
    let most = 0;
    const render = () =>
      runRender(s, async () => {
        running++;
        most = Math.max(most, running);
        await new Promise<void>((resolve) => releases.push(resolve));
        running--;
        return 'done';
      });
    const first = render();
    const second = render();
    const third = render();
    await expect(third).rejects.toBeInstanceOf(ServiceBusyError);
    await expect(third).rejects.toMatchObject({ status: 503, headers: { 'Retry-After': '1' } });
    // The queued render starts once the first ends; nothing ran beside it.
    await new Promise((r) => setImmediate(r));
    expect(releases).toHaveLength(1);
    releases.shift()?.();
    await expect(first).resolves.toBe('done');
    await new Promise((r) => setImmediate(r));
    expect(releases).toHaveLength(1);
    releases.shift()?.();
    await expect(second).resolves.toBe('done');
    expect(most).toBe(1);
    // Once the queue drained, new renders are accepted again.
    const again = render();
    await new Promise((r) => setImmediate(r));
    releases.shift()?.();
    await expect(again).resolves.toBe('done');
  });
});
