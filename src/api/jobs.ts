import Router from '@koa/router';
import type { Context } from 'koa';
import { requireGlobalAdmin } from '../auth/access';
import { noteAudit, principalOf } from '../http/context';
import { AppError, BadRequestError, NotFoundError } from '../errors';
import {
  cancelJob,
  JOB_KINDS,
  JOB_STATES,
  type JobState,
  listJobs,
  retryJob,
  showJob,
} from '../jobs/dashboard';
import { queueCounts, queuesReady, type QueueNameValue } from '../jobs/queues';
import type { Services } from '../services';

const JOB_ID = /^[A-Za-z0-9:_-]{1,100}$/;
const PROJECT_ID = /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

/** A comma-separated list of allowed words, or all of them when absent. */
function listParam<T extends string>(raw: unknown, allowed: readonly T[], name: string): T[] {
  if (raw === undefined || raw === '') return [...allowed];
  const words = String(raw).split(',');
  const bad = words.filter((w) => !(allowed as readonly string[]).includes(w));
  if (bad.length > 0) throw new BadRequestError(`${name} must be among ${allowed.join(', ')}`);
  return words as T[];
}

function intParam(raw: unknown, def: number, max: number, name: string): number {
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isInteger(n) || n < 0 || n > max)
    throw new BadRequestError(`${name} must be an integer 0-${max}`);
  return n;
}

function gate(ctx: Context): void {
  requireGlobalAdmin(principalOf(ctx));
  if (!queuesReady()) throw new AppError(503, 'unavailable', 'the job queues are not open in this process');
}

function target(ctx: Context): { kind: QueueNameValue; id: string } {
  const kind = ctx.params.kind as string;
  const id = ctx.params.id as string;
  if (!(JOB_KINDS as readonly string[]).includes(kind) || !JOB_ID.test(id))
    throw new NotFoundError('job not found');
  return { kind: kind as QueueNameValue, id };
}

/**
 * `/api/jobs`: background jobs for global administrators. `GET /api/jobs` counts per queue and state;
 * `GET /api/jobs/list?state=&kind=&project=&limit=&offset=` single jobs newest first; `GET /api/jobs/{kind}/{id}`;
 * `POST /api/jobs/{kind}/{id}/retry` (failed jobs); `POST /api/jobs/{kind}/{id}/cancel`. Every call is audited.
 */
export function jobsRouter(services: Services): Router {
  const router = new Router({ prefix: '/api/jobs' });

  router.get('/', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    noteAudit(ctx, { action: 'jobs.status' });
    if (!queuesReady()) throw new AppError(503, 'unavailable', 'the job queues are not open in this process');
    ctx.body = { queues: await queueCounts() };
  });

  router.get('/list', async (ctx) => {
    gate(ctx);
    const q = ctx.query;
    const project = q.project === undefined || q.project === '' ? undefined : String(q.project);
    if (project !== undefined && (!PROJECT_ID.test(project) || project.length > 64))
      throw new BadRequestError('project must be a project id');
    const filter = {
      kinds: listParam(q.kind, JOB_KINDS, 'kind'),
      states: listParam<JobState>(q.state, JOB_STATES, 'state'),
      project,
      limit: intParam(q.limit, 50, services.config.JOBS_LIST_MAX_LIMIT, 'limit'),
      offset: intParam(q.offset, 0, services.config.JOBS_LIST_SCAN, 'offset'),
      scan: services.config.JOBS_LIST_SCAN,
    };
    noteAudit(ctx, {
      action: 'jobs.list',
      projectId: project,
      detail: { kind: filter.kinds.join(','), state: filter.states.join(',') },
    });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await listJobs(services.db, filter);
  });

  router.get('/:kind/:id', async (ctx) => {
    gate(ctx);
    const { kind, id } = target(ctx);
    noteAudit(ctx, { action: 'job.show', detail: { kind, job: id } });
    ctx.set('Cache-Control', 'no-store');
    ctx.body = await showJob(services.db, kind, id);
  });

  router.post('/:kind/:id/retry', async (ctx) => {
    gate(ctx);
    const { kind, id } = target(ctx);
    noteAudit(ctx, { action: 'job.retry', detail: { kind, job: id } });
    ctx.status = 202;
    ctx.body = await retryJob(services.db, kind, id);
  });

  router.post('/:kind/:id/cancel', async (ctx) => {
    gate(ctx);
    const { kind, id } = target(ctx);
    noteAudit(ctx, { action: 'job.cancel', detail: { kind, job: id } });
    ctx.status = 202;
    ctx.body = await cancelJob(services.db, kind, id);
  });

  return router;
}
