import Router from '@koa/router';
import { isUid, UID_RULE } from '../dicom/uid';
import type { Context } from 'koa';
import { z } from 'zod';
import { requireGlobalAdmin } from '../auth/access';
import { noteAudit, principalOf, requireExistingProjectRole } from '../http/context';
import { BadRequestError } from '../errors';
import {
  assignQuarantined,
  deleteRule,
  getRule,
  listFailures,
  listQuarantine,
  listRules,
  type QuarantineSelector,
  saveRule,
} from '../index-db/routing';
import { resolveAttributeTag, ruleInputSchema, ruleMatches } from '../ingest/routing';
import { lookupAttribute } from '../dicom/matching';
import type { DicomJson } from '../dicom/json';
import { refuseIntoResearchProject } from '../cohorts/guard';
import type { Services } from '../services';
import { readJsonBody } from './body';

const uid = z.string().max(64).refine(isUid, UID_RULE);

const assignInput = z
  .object({
    project: z.string().min(1).max(64),
    studyUid: uid.optional(),
    seriesUid: uid.optional(),
    sopInstanceUids: z.array(uid).min(1).max(10_000).optional(),
  })
  .refine((a) => [a.studyUid, a.seriesUid, a.sopInstanceUids].filter((x) => x !== undefined).length === 1, {
    message: 'give exactly one of studyUid, seriesUid, sopInstanceUids',
  });

const aet = z.string().max(16);
const sampleSchema = z
  .object({
    calledAet: aet.optional(),
    callingAet: aet.optional(),
    remoteIp: z.string().max(45).optional(),
    attributes: z.record(z.string().max(64), z.string().max(1024)).optional(),
  })
  .strict()
  .refine((o) => Object.keys(o.attributes ?? {}).length <= 50, 'attributes: at most 50');

function parseBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const parsed = schema.safeParse(body);
  if (!parsed.success) {
    throw new BadRequestError(
      parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
    );
  }
  return parsed.data;
}

function page(ctx: Context): { limit: number; offset: number } {
  const limit = Number(ctx.query.limit ?? 100);
  const offset = Number(ctx.query.offset ?? 0);
  if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new BadRequestError('limit: 1 to 1000');
  if (!Number.isInteger(offset) || offset < 0) throw new BadRequestError('offset: a non-negative integer');
  return { limit, offset };
}

/**
 * Routing rules per project (`/api/projects/{project}/routing`, project administrators) and the quarantine of
 * arrivals no rule claimed (`/api/quarantine`, global administrators). A project's `position` orders its own rules;
 * across projects the rule that claimed first wins unless a global administrator set `priority` (ingest/routing.ts).
 * Saving a rule answers with its ClaimReport (shadowed_by, shadows, possibly_shadowed_by: rule ids only).
 */
export function routingRouter(services: Services): Router {
  const router = new Router();
  const { db } = services;

  const projectAdmin = (ctx: Context): Promise<string> => requireExistingProjectRole(ctx, services, 'admin');

  router.get('/api/projects/:project/routing', async (ctx) => {
    const projectId = await projectAdmin(ctx);
    noteAudit(ctx, { action: 'routing.list', projectId });
    ctx.body = await listRules(db, projectId);
  });

  router.get('/api/projects/:project/routing/:id', async (ctx) => {
    const projectId = await projectAdmin(ctx);
    noteAudit(ctx, { action: 'routing.show', projectId });
    ctx.body = await getRule(db, projectId, ctx.params.id);
  });

  router.post('/api/projects/:project/routing', async (ctx) => {
    const projectId = await projectAdmin(ctx);
    const input = parseBody(ruleInputSchema, await readJsonBody(ctx));
    await refuseIntoResearchProject(db, projectId);
    const row = await saveRule(db, projectId, input, { globalAdmin: principalOf(ctx).globalAdmin });
    noteAudit(ctx, { action: 'routing.create', projectId, detail: { ruleId: row.id, kind: row.kind } });
    ctx.status = 201;
    ctx.set('Location', `/api/projects/${projectId}/routing/${row.id}`);
    ctx.body = row;
  });

  // Tests the project's rules against a sample arrival (its AE titles, source address and attribute values): which
  // rules match it and which of them claims it first within this project. Nothing is stored; other projects' rules
  // are not consulted (their claims are theirs to see). Values are never audited: attribute values can be PHI.
  router.post('/api/projects/:project/routing/test', async (ctx) => {
    const projectId = await projectAdmin(ctx);
    const sample = parseBody(sampleSchema, await readJsonBody(ctx));
    const ds: DicomJson = {};
    for (const [name, value] of Object.entries(sample.attributes ?? {})) {
      const tag = resolveAttributeTag(name);
      if (!tag)
        throw new BadRequestError(`attributes: ${name.slice(0, 64)} is not a DICOM attribute keyword or tag`);
      const vr = lookupAttribute(tag)?.vr ?? 'LO';
      ds[tag] = { vr, Value: [vr === 'PN' ? { Alphabetic: value } : value] };
    }
    const route = {
      calledAet: sample.calledAet ?? '',
      callingAet: sample.callingAet ?? '',
      remoteIp: sample.remoteIp ?? '',
    };
    const rules = await listRules(db, projectId);
    const matching = rules.filter((r) => ruleMatches(r, route, ds)).map((r) => r.id);
    noteAudit(ctx, {
      action: 'routing.test',
      projectId,
      detail: { attributes: Object.keys(sample.attributes ?? {}).length, matching: matching.length },
    });
    // listRules answers in the project's order: the first match is the rule that claims it here.
    ctx.body = { matching, first: matching[0] ?? null };
  });

  router.put('/api/projects/:project/routing/:id', async (ctx) => {
    const projectId = await projectAdmin(ctx);
    const input = parseBody(ruleInputSchema, await readJsonBody(ctx));
    const row = await saveRule(
      db,
      projectId,
      input,
      { globalAdmin: principalOf(ctx).globalAdmin },
      ctx.params.id,
    );
    noteAudit(ctx, { action: 'routing.update', projectId, detail: { ruleId: row.id } });
    ctx.body = row;
  });

  router.delete('/api/projects/:project/routing/:id', async (ctx) => {
    const projectId = await projectAdmin(ctx);
    await deleteRule(db, projectId, ctx.params.id);
    noteAudit(ctx, { action: 'routing.delete', projectId, detail: { ruleId: ctx.params.id } });
    ctx.status = 204;
  });

  // Study descriptions and patient names are PHI: the quarantine lists identifiers, routes, counts and dates only.
  router.get('/api/quarantine', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    noteAudit(ctx, { action: 'quarantine.list' });
    ctx.body = await listQuarantine(db, page(ctx));
  });

  router.get('/api/quarantine/failures', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    noteAudit(ctx, { action: 'quarantine.failures' });
    ctx.body = await listFailures(db, page(ctx));
  });

  router.post('/api/quarantine/assign', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    const input = parseBody(assignInput, await readJsonBody(ctx));
    const selector: QuarantineSelector = input.studyUid
      ? { studyUid: input.studyUid }
      : input.seriesUid
        ? { seriesUid: input.seriesUid }
        : { sopInstanceUids: input.sopInstanceUids! };
    await refuseIntoResearchProject(db, input.project);
    const result = await assignQuarantined(db, selector, input.project);
    noteAudit(ctx, {
      action: 'quarantine.assign',
      projectId: input.project,
      studyUid: input.studyUid,
      seriesUid: input.seriesUid,
      detail: { assigned: result.assigned },
    });
    ctx.body = { project: input.project, ...result };
  });

  return router;
}
