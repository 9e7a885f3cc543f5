import Router from '@koa/router';
import { z } from 'zod';
import { hasRole, requireGlobalAdmin, requireRole } from '../auth/access';
import { principalOf, noteAudit } from '../http/context';
import { BadRequestError, NotFoundError } from '../errors';
import { createProject, getProject, listProjects } from '../index-db/projects';
import type { Services } from '../services';
import { readJsonBody } from './body';

const projectInput = z.object({
  id: z
    .string()
    .min(1)
    .max(64)
    .regex(
      /^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/,
      'lowercase letters, digits and dashes, not starting or ending with a dash',
    ),
  name: z.string().min(1).max(200),
  description: z.string().max(2000).optional(),
});

/** `/api/projects`: create (global administrators), list and show the projects the caller can see. */
export function projectsRouter(services: Services): Router {
  const router = new Router({ prefix: '/api/projects' });

  router.post('/', async (ctx) => {
    const p = principalOf(ctx);
    requireGlobalAdmin(p);
    const parsed = projectInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) {
      throw new BadRequestError(
        parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
      );
    }
    const row = await createProject(services.db, parsed.data);
    noteAudit(ctx, { action: 'project.create', projectId: row.id });
    ctx.status = 201;
    ctx.set('Location', `/api/projects/${row.id}`);
    ctx.body = row;
  });

  router.get('/', async (ctx) => {
    const p = principalOf(ctx);
    const rows = p.globalAdmin
      ? await listProjects(services.db)
      : await listProjects(
          services.db,
          [...p.projects.keys()].filter((id) => hasRole(p, id, 'reader')),
        );
    noteAudit(ctx, { action: 'project.list' });
    ctx.body = rows.map((r) => ({
      ...r,
      roles: p.globalAdmin ? ['admin'] : [...(p.projects.get(r.id) ?? [])],
    }));
  });

  router.get('/:project', async (ctx) => {
    requireRole(principalOf(ctx), ctx.params.project, 'reader');
    const row = await getProject(services.db, ctx.params.project);
    if (!row) throw new NotFoundError('project not found');
    noteAudit(ctx, { action: 'project.show', projectId: row.id });
    ctx.body = row;
  });

  return router;
}
