import Router from '@koa/router';
import { isUid, UID_RULE } from '../dicom/uid';
import { z } from 'zod';
import { createShareLink, listShareLinks, revokeShareLink } from '../auth/share-links';
import { noteAudit, principalOf, publicBaseUrl, requireExistingProjectRole } from '../http/context';
import { BadRequestError, NotFoundError } from '../errors';
import { getProject } from '../index-db/projects';
import type { Services } from '../services';
import { readJsonBody } from './body';

const uid = z.string().max(64).refine(isUid, UID_RULE);

/** `3600`, `"3600"`, `"90s"`, `"30m"`, `"12h"`, `"7d"` → seconds. */
const duration = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = /^(\d+)\s*([smhd]?)$/.exec(String(v).trim());
  const n = m
    ? Number(m[1]) * { '': 1, s: 1, m: 60, h: 3600, d: 86400 }[m[2] as '' | 's' | 'm' | 'h' | 'd']
    : NaN;
  if (!Number.isSafeInteger(n) || n <= 0) {
    ctx.addIssue({
      code: 'custom',
      message: 'a positive number of seconds, or a duration like 30m, 12h, 7d',
    });
    return z.NEVER;
  }
  return n;
});

const shareInput = z.object({
  studyUid: uid.optional(),
  seriesUid: uid.optional(),
  expiresIn: duration,
  description: z.string().max(500).optional(),
});

/**
 * `/api/projects/{project}/shares`: curators create read-only, expiring, revocable links to a study, a series or
 * the whole project, list them (never with tokens) and revoke them.
 */
export function sharesRouter(services: Services): Router {
  const router = new Router({ prefix: '/api/projects/:project/shares' });
  const maxTtl = services.config.SHARE_MAX_TTL_S;

  router.post('/', async (ctx) => {
    const projectId = ctx.params.project;
    const p = principalOf(ctx);
    await requireExistingProjectRole(ctx, services, 'curator');
    const parsed = shareInput.safeParse(await readJsonBody(ctx, 64 * 1024));
    if (!parsed.success) {
      throw new BadRequestError(
        parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
      );
    }
    const input = parsed.data;
    if (input.expiresIn > maxTtl) throw new BadRequestError(`expiresIn: at most ${maxTtl} seconds`);
    if (!(await getProject(services.db, projectId))) throw new NotFoundError('project not found');
    noteAudit(ctx, {
      action: 'share.create',
      projectId,
      studyUid: input.studyUid,
      seriesUid: input.seriesUid,
    });
    const { link, token } = await createShareLink(services.db, {
      projectId,
      studyUid: input.studyUid,
      seriesUid: input.seriesUid,
      createdBy: p.id,
      expiresInS: input.expiresIn,
      description: input.description,
    });
    noteAudit(ctx, {
      action: 'share.create',
      studyUid: link.studyUid ?? undefined,
      detail: { shareId: link.id },
    });
    ctx.status = 201;
    ctx.set('Location', `/api/projects/${encodeURIComponent(projectId)}/shares/${link.id}`);
    ctx.set('Cache-Control', 'no-store');
    ctx.body = {
      ...link,
      // Shown once: only its hash is stored.
      token,
      dicomwebUrl: `${publicBaseUrl(ctx, services.config)}/share/${token}/dicom-web`,
    };
  });

  router.get('/', async (ctx) => {
    const projectId = ctx.params.project;
    await requireExistingProjectRole(ctx, services, 'curator');
    noteAudit(ctx, { action: 'share.list', projectId });
    ctx.body = await listShareLinks(services.db, projectId);
  });

  router.delete('/:id', async (ctx) => {
    const projectId = ctx.params.project;
    await requireExistingProjectRole(ctx, services, 'curator');
    noteAudit(ctx, { action: 'share.revoke', projectId, detail: { shareId: ctx.params.id } });
    const link = await revokeShareLink(services.db, projectId, ctx.params.id);
    noteAudit(ctx, {
      action: 'share.revoke',
      studyUid: link.studyUid ?? undefined,
      seriesUid: link.seriesUid ?? undefined,
    });
    ctx.status = 204;
  });

  return router;
}
