import type { Context, Next } from 'koa';
import { DOWNLOAD_PREFIX, redeemDownloadLink } from '../auth/download-links';
import { NotFoundError } from '../errors';
import type { Services } from '../services';

/**
 * `GET /download/{token}` (before authentication): a valid link becomes the request it was made for, with the
 * principal that made it, so the usual route, access checks, audit and streaming apply. The token is single-use, so
 * a copy of the URL in a log or history opens nothing.
 */
export function downloadLinks(services: Services) {
  const redeem = async (ctx: Context, next: Next): Promise<void> => {
    const link = await redeemDownloadLink(services.db, ctx.path.slice(DOWNLOAD_PREFIX.length));
    if (!link)
      throw new NotFoundError('this download link has expired or was already used; start the download again');
    ctx.state.downloadPrincipal = link.principal;
    ctx.path = link.path;
    ctx.querystring = '';
    ctx.request.headers.accept = link.accept;
    delete ctx.request.headers.range;
    return next();
  };
  // Not async itself: a request it passes on (nearly all) costs no promise of its own.
  return (ctx: Context, next: Next): Promise<void> =>
    ctx.path.startsWith(DOWNLOAD_PREFIX) && (ctx.method === 'GET' || ctx.method === 'HEAD')
      ? redeem(ctx, next)
      : next();
}
