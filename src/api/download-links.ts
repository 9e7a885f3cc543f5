import Router from '@koa/router';
import { createDownloadLink } from '../auth/download-links';
import { noteAudit, principalOf } from '../http/context';
import type { Services } from '../services';
import { readJsonBody } from './body';

/** `POST /api/download-links` `{"path": ...}`: a single-use link to a ZIP the caller may fetch. */
export function downloadLinksRouter(services: Services): Router {
  const router = new Router();
  router.post('/api/download-links', async (ctx) => {
    const body = (await readJsonBody(ctx)) as { path?: unknown } | undefined;
    const path = typeof body?.path === 'string' ? body.path : '';
    const made = await createDownloadLink(
      services.db,
      principalOf(ctx),
      path,
      services.config.DOWNLOAD_LINK_TTL_S,
    );
    noteAudit(ctx, { action: 'download-link.create', detail: { path } });
    ctx.status = 201;
    ctx.set('Cache-Control', 'no-store');
    ctx.body = made;
  });
  return router;
}
