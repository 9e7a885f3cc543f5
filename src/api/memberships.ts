import Router from '@koa/router';
import { z } from 'zod';
import { ROLES } from '../auth/access';
import { noteAudit, principalOf, requireExistingProjectRole } from '../http/context';
import { BadRequestError, NotFoundError } from '../errors';
import { deleteMember, listMembers, putMember, type SubjectKind } from '../index-db/memberships';
import type { Services } from '../services';
import { readJsonBody } from './body';

const memberInput = z
  .object({ role: z.enum(ROLES), kind: z.enum(['sub', 'username']).default('sub') })
  .strict();
const SUBJECT = /^[\x21-\x7e]{1,255}$/;

function subjectParam(raw: string): string {
  if (!SUBJECT.test(raw)) throw new BadRequestError('subject: 1 to 255 printable characters');
  return raw;
}

function kindParam(raw: unknown): SubjectKind {
  if (raw === undefined || raw === 'sub') return 'sub';
  if (raw === 'username') return 'username';
  throw new BadRequestError("kind: 'sub' or 'username'");
}

/**
 * `/api/projects/{p}/members[/{subject}]`: memberships kept in Aperture, in addition to Keycloak groups (a
 * subject's roles are the union). A member is named by token subject (`kind: sub`, the default) or Keycloak
 * username (`kind: username`). Needs `admin` on the project; every change is audited and applies at once.
 */
export function membershipsRouter(services: Services): Router {
  const router = new Router({ prefix: '/api/projects/:project/members' });

  router.get('/', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'admin');
    noteAudit(ctx, { action: 'member.list', projectId: project });
    ctx.body = await listMembers(services.db, project);
  });

  router.put('/:subject', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'admin');
    const subject = subjectParam(ctx.params.subject);
    const parsed = memberInput.safeParse(await readJsonBody(ctx));
    if (!parsed.success) {
      throw new BadRequestError(
        parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
      );
    }
    const { row, created } = await putMember(services.db, {
      projectId: project,
      kind: parsed.data.kind,
      subject,
      role: parsed.data.role,
      grantedBy: principalOf(ctx).id,
    });
    noteAudit(ctx, {
      action: 'member.put',
      projectId: project,
      detail: { kind: row.subject_kind, subject: row.subject, role: row.role },
    });
    ctx.status = created ? 201 : 200;
    ctx.body = row;
  });

  router.delete('/:subject', async (ctx) => {
    const project = await requireExistingProjectRole(ctx, services, 'admin');
    const subject = subjectParam(ctx.params.subject);
    const kind = kindParam(ctx.query.kind);
    const removed = await deleteMember(services.db, project, kind, subject);
    noteAudit(ctx, { action: 'member.delete', projectId: project, detail: { kind, subject, removed } });
    if (!removed) throw new NotFoundError('member not found');
    ctx.status = 204;
  });

  return router;
}
