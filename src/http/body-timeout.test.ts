import { PassThrough } from 'node:stream';
import { RequestTimeoutError, timedBody } from './body-timeout';

async function drain(s: NodeJS.ReadableStream): Promise<{ bytes: number; err?: unknown }> {
  let bytes = 0;
  try {
    for await (const c of s) bytes += (c as Buffer).length;
    return { bytes };
  } catch (err) {
    return { bytes, err };
  }
}

describe('request body timeouts', () => {
  it('passes a body that keeps flowing', async () => {
    const src = new PassThrough();
    const body = timedBody(src, { idleMs: 200, totalMs: 5000 });
    const done = drain(body);
    for (let i = 0; i < 5; i++) {
      src.write(Buffer.alloc(10));
      await new Promise((r) => setTimeout(r, 50));
    }
    src.end();
    expect(await done).toEqual({ bytes: 50 });
  });

  it('fails a body that stops sending with a 408', async () => {
    const src = new PassThrough();
    const body = timedBody(src, { idleMs: 100, totalMs: 5000 });
    const done = drain(body);
    src.write(Buffer.alloc(10));
    const r = await done;
    expect(r.bytes).toBe(10);
    expect(r.err).toBeInstanceOf(RequestTimeoutError);
    expect((r.err as RequestTimeoutError).status).toBe(408);
  });

  it('fails a trickling body at the total timeout', async () => {
    const src = new PassThrough();
    const body = timedBody(src, { idleMs: 1000, totalMs: 200 });
    const done = drain(body);
    const t = setInterval(() => src.write(Buffer.alloc(1)), 20);
    const r = await done;
    clearInterval(t);
    expect((r.err as Error).message).toMatch(/within 200 ms/);
  });
});

describe('a reader that stops early', () => {
  it('destroys the request, as before, unless the stop was a timeout', async () => {
    const src = new PassThrough();
    const body = timedBody(src, { idleMs: 1000, totalMs: 5000 });
    src.write(Buffer.alloc(10));
    body.destroy();
    await new Promise((r) => setImmediate(r));
    expect(src.destroyed).toBe(true);

    const src2 = new PassThrough();
    const body2 = timedBody(src2, { idleMs: 50, totalMs: 5000 });
    await drain(body2);
    expect(src2.destroyed).toBe(false);
  });
});
