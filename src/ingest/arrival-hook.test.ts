import type { Pool } from 'pg';
import { createLogger } from '../logger';
import type { Archive } from '../orthanc/archive';
import { ArrivalHook } from './arrival-hook';
import { DimseStatus } from './rearrival';

/**
 * The endpoint's own gate, before any object is judged: what reaches handleRearrival is covered against the real
 * stack in test/dimse-routing.itest.ts. The database here throws if touched, so these answers cannot come from it.
 */
describe("the re-arrival endpoint Orthanc's C-STORE filter calls", () => {
  let hook: ArrivalHook;
  let registered: { url: string; token: string; ttl: number } | undefined;
  const untouchable = new Proxy(
    {},
    {
      get() {
        throw new Error('the index must not be reached');
      },
    },
  ) as Pool;

  beforeAll(async () => {
    const archive = {
      registerArrivalHook: async (url: string, token: string, ttl: number) => {
        registered = { url, token, ttl };
      },
    } as unknown as Archive;
    hook = new ArrivalHook({
      db: untouchable,
      archive,
      config: { DEFAULT_PROJECT: '', STOW_MAX_PART_BYTES: 1024 },
      logger: createLogger('silent'),
    });
    await hook.start();
    await hook.renew();
  });
  afterAll(() => hook.close());

  const post = (headers: Record<string, string>, body: Buffer, path = '/arrivals') =>
    fetch(registered!.url.replace(/\/arrivals$/, path), { method: 'POST', headers, body });

  it('registers a loopback URL and a fresh random token with the archive, with an expiry', () => {
    expect(registered?.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/arrivals$/);
    expect(registered?.token).toMatch(/^[0-9a-f]{64}$/);
    expect(registered?.ttl).toBeGreaterThan(0);
  });

  it('refuses a caller without the token, or with another one', async () => {
    const none = await post({}, Buffer.from('x'));
    expect(none.status).toBe(401);
    const wrong = await post({ authorization: `Bearer ${'0'.repeat(64)}` }, Buffer.from('x'));
    expect(wrong.status).toBe(401);
  });

  it('answers only its own path', async () => {
    const res = await post({ authorization: `Bearer ${registered!.token}` }, Buffer.from('x'), '/other');
    expect(res.status).toBe(404);
  });

  it('tells the sender to retry later for an object over STOW_MAX_PART_BYTES, unread', async () => {
    const res = await post({ authorization: `Bearer ${registered!.token}` }, Buffer.alloc(2048));
    expect(res.status).toBe(200);
    expect(await res.json()).toEqual({ status: DimseStatus.RefusedOutOfResources });
  });

  it('refuses bytes that are not DICOM as not understood, without touching the index', async () => {
    const res = await post({ authorization: `Bearer ${registered!.token}` }, Buffer.from('not dicom'));
    expect(await res.json()).toEqual({ status: DimseStatus.CannotUnderstand });
  });
});
