import { PrincipalLimiter, TooManyRequestsError } from './rate-limit';

describe('per-principal limits', () => {
  it('lets a burst through, then answers 429 with Retry-After until the bucket refills', () => {
    let now = 0;
    const l = new PrincipalLimiter({ ratePerS: 10, burst: 3, concurrency: 0, now: () => now });
    for (let i = 0; i < 3; i++) l.acquire('user:a')();
    let err: unknown;
    try {
      l.acquire('user:a');
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TooManyRequestsError);
    expect((err as TooManyRequestsError).status).toBe(429);
    expect((err as TooManyRequestsError).headers['Retry-After']).toBe('1');
    // Another principal is not affected.
    expect(() => l.acquire('user:b')).not.toThrow();
    now += 100; // one token back at 10/s
    expect(() => l.acquire('user:a')).not.toThrow();
    expect(() => l.acquire('user:a')).toThrow(TooManyRequestsError);
  });

  it('caps requests in progress and frees the slot when one ends', () => {
    const l = new PrincipalLimiter({ ratePerS: 0, burst: 1, concurrency: 2 });
    const r1 = l.acquire('share:x');
    l.acquire('share:x');
    expect(() => l.acquire('share:x')).toThrow(/in progress/);
    r1();
    r1(); // releasing twice must not free a second slot
    l.acquire('share:x');
    expect(() => l.acquire('share:x')).toThrow(TooManyRequestsError);
  });

  it('forgets idle callers so memory does not grow with the number of addresses', () => {
    let now = 0;
    const l = new PrincipalLimiter({ ratePerS: 100, burst: 2, concurrency: 4, now: () => now });
    for (let i = 0; i < 3000; i++) {
      now += 10;
      l.acquire(`ip:10.0.${i >> 8}.${i & 255}`)();
    }
    expect(l.size).toBeLessThan(1100);
  });
});
