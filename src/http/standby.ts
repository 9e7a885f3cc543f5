import type { Context, Next } from 'koa';
import { AppError, retryAfterS } from '../errors';
import type { Services } from '../services';
import { isStandbySite } from '../sites/role';

const READS = new Set(['GET', 'HEAD', 'OPTIONS']);

/**
 * At a standby site (issue 16, docs/two-sites.md) every write (STOW-RS, API changes) answers 503 with the reason and
 * Retry-After before it reaches a handler: the database is a read-only replica until it is promoted. Reads pass.
 */
export function refuseWritesOnStandby(services: Pick<Services, 'db' | 'config'>) {
  const write = async (next: Next): Promise<void> => {
    if (await isStandbySite(services.db, services.config.SITE_ROLE_CACHE_MS)) {
      throw new AppError(
        503,
        'standby-site',
        'this site is a read-only standby (its database follows the primary site); send writes to the primary site',
        { 'Retry-After': String(retryAfterS()) },
      );
    }
    await next();
  };
  // Reads pass with no promise of this middleware's own.
  return (ctx: Context, next: Next): Promise<void> => (READS.has(ctx.method) ? next() : write(next));
}
