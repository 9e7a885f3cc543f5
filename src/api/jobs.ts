import Router from '@koa/router';
import { requireGlobalAdmin } from '../auth/access';
import { noteAudit, principalOf } from '../http/context';
import { AppError } from '../errors';
import { queueCounts, queuesReady } from '../jobs/queues';
import type { Services } from '../services';

/** `/api/jobs`: background job status for global administrators (counts per queue and state). */
export function jobsRouter(_services: Services): Router {
  const router = new Router({ prefix: '/api/jobs' });

  router.get('/', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    noteAudit(ctx, { action: 'jobs.status' });
    if (!queuesReady()) throw new AppError(503, 'unavailable', 'the job queues are not open in this process');
    ctx.body = { queues: await queueCounts() };
  });

  return router;
}
