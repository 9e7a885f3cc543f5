/**
 * Per-principal request rate and concurrency limits (issue 8, defect 9): one token, share link or anonymous client
 * address cannot monopolise the gateway or the archive behind it. State lives in this process: with several
 * gateway processes each one enforces the limits on its own.
 */
import type { Context, Next } from 'koa';
import type { Principal } from '../auth/access';
import { AppError } from '../errors';

export interface RateLimitOptions {
  /** Sustained requests per second per principal; 0 disables the rate limit. */
  ratePerS: number;
  /** Requests allowed above the sustained rate in a burst (bucket size). */
  burst: number;
  /** Requests in progress at once per principal; 0 disables the concurrency limit. */
  concurrency: number;
  /** Clock, for tests. */
  now?: () => number;
}

/** 429 Too Many Requests with the seconds to wait. */
export class TooManyRequestsError extends AppError {
  constructor(message: string, retryAfterS: number) {
    super(429, 'too_many_requests', message, { 'Retry-After': String(Math.max(1, Math.ceil(retryAfterS))) });
  }
}

interface Bucket {
  tokens: number;
  at: number;
  inFlight: number;
}

/** Who a request counts against: the authenticated principal, or the client address when there is none. */
export function limitKey(ctx: Context): string {
  const p = ctx.state.principal as Principal | undefined;
  if (p && p.kind !== 'anonymous') return `${p.kind}:${p.id}`;
  return `ip:${ctx.ip}`;
}

/** Token bucket per key plus a count of requests whose answers have not finished (streams included). */
export class PrincipalLimiter {
  private readonly buckets = new Map<string, Bucket>();
  private readonly now: () => number;

  constructor(private readonly opts: RateLimitOptions) {
    this.now = opts.now ?? Date.now;
  }

  /** Takes one request for `key`, or throws TooManyRequestsError; the returned function releases it (idempotent). */
  acquire(key: string): () => void {
    const t = this.now();
    let b = this.buckets.get(key);
    if (!b) {
      b = { tokens: this.opts.burst, at: t, inFlight: 0 };
      this.buckets.set(key, b);
    }
    if (this.opts.ratePerS > 0) {
      b.tokens = Math.min(this.opts.burst, b.tokens + ((t - b.at) / 1000) * this.opts.ratePerS);
      b.at = t;
      if (b.tokens < 1) {
        throw new TooManyRequestsError(
          `more than ${this.opts.ratePerS} requests per second`,
          (1 - b.tokens) / this.opts.ratePerS,
        );
      }
    }
    if (this.opts.concurrency > 0 && b.inFlight >= this.opts.concurrency) {
      throw new TooManyRequestsError(`more than ${this.opts.concurrency} requests in progress at once`, 1);
    }
    if (this.opts.ratePerS > 0) b.tokens -= 1;
    b.inFlight++;
    const bucket = b;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      bucket.inFlight--;
      this.sweep();
    };
  }

  /** Keys in memory (for tests and to see that idle ones go). */
  get size(): number {
    return this.buckets.size;
  }

  /** Forgets idle keys whose bucket has refilled, so memory does not grow with the number of callers. */
  private sweep(): void {
    if (this.buckets.size < 1024) return;
    const t = this.now();
    for (const [k, b] of this.buckets) {
      const full =
        this.opts.ratePerS <= 0 || b.tokens + ((t - b.at) / 1000) * this.opts.ratePerS >= this.opts.burst;
      if (b.inFlight === 0 && full) this.buckets.delete(k);
    }
  }
}

/**
 * Koa middleware, mounted after authentication so that the principal is known. A request counts as in progress
 * until its response has been sent or the connection closed, so a slow download holds its slot.
 */
export function rateLimit(opts: RateLimitOptions, exempt: ReadonlySet<string> = new Set()) {
  const limiter = new PrincipalLimiter(opts);
  return async (ctx: Context, next: Next): Promise<void> => {
    if (exempt.has(ctx.path) || (opts.ratePerS <= 0 && opts.concurrency <= 0)) return next();
    const release = limiter.acquire(limitKey(ctx));
    ctx.res.once('close', release);
    try {
      await next();
    } catch (err) {
      release();
      throw err;
    }
  };
}
