import Router from '@koa/router';
import type { Context } from 'koa';
import { z } from 'zod';
import { hasRole, requireGlobalAdmin } from '../auth/access';
import { answerInstanceCount, answerStudyUid, answerToDicomJson, findKeys } from '../bridge/query';
import { type BridgeDeps, createRetrieve, failureOf, nodeSpec } from '../bridge/retrieve';
import { refuseIntoResearchProject } from '../cohorts/guard';
import { DEID_OPTION_NAMES } from '../cohorts/deid-port';
import { isUid, UID_MAX_LENGTH, UID_RULE } from '../dicom/uid';
import { AppError, BadRequestError, NotFoundError, warning299 } from '../errors';
import { noteAudit, principalOf, requireExistingProjectRole } from '../http/context';
import {
  deleteNode,
  deleteWatcher,
  getNode,
  getRetrieve,
  getWatcher,
  insertWatcher,
  listNodes,
  listRetrieves,
  listWatchers,
  type NodeRow,
  putNode,
  resetFailedStudies,
  retrieveProgress,
  type RetrieveRow,
  retrieveStudies,
  setRetrieveState,
  watcherRuns,
} from '../index-db/bridge';
import { isResearchProject } from '../index-db/cohorts';
import { getProject } from '../index-db/projects';
import {
  enqueueCohort,
  enqueueRetrieve,
  enqueueWatcherRun,
  scheduleWatcher,
  unscheduleWatcher,
} from '../jobs/queues';
import { DimseFailure, getRemoteNodes } from '../orthanc/remote-nodes';
import type { Services } from '../services';
import { readJsonBody } from './body';
import { randomUUID } from 'node:crypto';

export const NODE_ID = /^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$/;
const PROJECT_ID = z
  .string()
  .min(1)
  .max(64)
  .regex(/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/, 'lowercase letters, digits and dashes');
const UID = z.string().max(UID_MAX_LENGTH).refine(isUid, UID_RULE);
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export const nodeInput = z
  .object({
    aet: z
      .string()
      .regex(/^[A-Za-z0-9_.\- ]{1,16}$/, 'an AE title: 1 to 16 characters, no backslash or control'),
    host: z.string().regex(/^[A-Za-z0-9.:-]{1,253}$/, 'a host name or address'),
    port: z.number().int().min(1).max(65535),
    allow_find: z.boolean().default(true),
    allow_move: z.boolean().default(true),
    allow_get: z.boolean().default(false),
    allow_store: z.boolean().default(true),
    retrieve_method: z.enum(['move', 'get']).default('move'),
    max_associations: z.number().int().min(1).max(64).default(2),
  })
  .strict();

const keys = z.record(z.string().max(64), z.string().max(256));
const deidentify = z
  .object({
    project: PROJECT_ID,
    options: z
      .object(Object.fromEntries(DEID_OPTION_NAMES.map((n) => [n, z.boolean().optional()])))
      .strict()
      .default({}),
  })
  .strict();

const queryInput = z
  .object({
    project: PROJECT_ID,
    level: z.enum(['study', 'series']).default('study'),
    query: keys.default({}),
  })
  .strict();

const retrieveInput = z
  .object({
    project: PROJECT_ID,
    studies: z.array(UID).min(1),
    method: z.enum(['move', 'get']).optional(),
    deidentify: deidentify.optional(),
  })
  .strict();

const watcherInput = z
  .object({
    name: z.string().min(1).max(200),
    node: z.string().regex(NODE_ID),
    query: keys,
    interval_s: z
      .number()
      .int()
      .min(1)
      .max(7 * 24 * 3600),
    deidentify: deidentify.optional(),
  })
  .strict();

function parse<S extends z.ZodType>(schema: S, body: unknown): z.output<S> {
  const r = schema.safeParse(body);
  if (!r.success)
    throw new BadRequestError(
      r.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '),
    );
  return r.data;
}

function page(ctx: Context, max: number): { limit: number; offset: number } {
  const limit = Number(ctx.query.limit ?? 100);
  const offset = Number(ctx.query.offset ?? 0);
  if (!Number.isInteger(limit) || limit < 1 || limit > max) throw new BadRequestError(`limit: 1 to ${max}`);
  if (!Number.isInteger(offset) || offset < 0) throw new BadRequestError('offset: a non-negative integer');
  return { limit, offset };
}

/**
 * `/api/nodes`: the PACS bridge (issue 14). Global administrators register remote DICOM nodes (pushed to the
 * archive's DICOM peers) and check them with C-ECHO. Curators of a project query a node (C-FIND), retrieve studies
 * from it into their project (C-MOVE or C-GET, a job), optionally de-identified into a research project they
 * administer, and keep watchers (saved queries on a schedule). Queries are audited with the keys asked and the
 * number of answers, never their values.
 */
export function nodesRouter(services: Services): Router {
  const router = new Router();
  const { db } = services;
  const deps = (): BridgeDeps => ({
    db,
    archive: services.archive,
    nodes: getRemoteNodes(),
    logger: services.logger,
    config: services.config,
    enqueueRetrieve,
    enqueueCohort,
  });

  /** A node by the URL's :node; 404 when unknown (node ids are configuration, not patient data). */
  const nodeOf = async (ctx: Context): Promise<NodeRow> => {
    const id = String(ctx.params.node);
    const n = NODE_ID.test(id) ? await getNode(db, id) : undefined;
    if (!n) throw new NotFoundError('node not found');
    return n;
  };

  /** Requires curator of a project named in a body (404 otherwise) that is not a research project. */
  const curatorOf = async (ctx: Context, projectId: string): Promise<void> => {
    if (!hasRole(principalOf(ctx), projectId, 'curator') || !(await getProject(db, projectId)))
      throw new NotFoundError('project not found');
    await refuseIntoResearchProject(db, projectId);
  };

  /** The research target of anonymise-on-import: a research project the caller administers. */
  const researchTarget = async (ctx: Context, d?: z.infer<typeof deidentify>) => {
    if (!d) return { researchProjectId: null, deidOptions: null };
    if (!hasRole(principalOf(ctx), d.project, 'admin') || !(await getProject(db, d.project)))
      throw new NotFoundError('research project not found');
    if (!(await isResearchProject(db, d.project)))
      throw new BadRequestError('deidentify.project is not a research project');
    return { researchProjectId: d.project, deidOptions: d.options as Record<string, boolean> };
  };

  router.get('/api/nodes', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    noteAudit(ctx, { action: 'node.list' });
    ctx.body = await listNodes(db);
  });

  router.put('/api/nodes/:node', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    const id = String(ctx.params.node);
    if (!NODE_ID.test(id)) throw new BadRequestError('node id: lowercase letters, digits and dashes');
    const input = parse(nodeInput, await readJsonBody(ctx));
    const { row, created } = await putNode(db, id, input);
    await getRemoteNodes().ensure(nodeSpec(row));
    noteAudit(ctx, { action: created ? 'node.create' : 'node.update', detail: { node: id } });
    ctx.status = created ? 201 : 200;
    ctx.body = row;
  });

  router.get('/api/nodes/:node', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    const n = await nodeOf(ctx);
    noteAudit(ctx, { action: 'node.show', detail: { node: n.id } });
    ctx.body = n;
  });

  router.delete('/api/nodes/:node', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    const n = await nodeOf(ctx);
    for (const w of (await listWatchers(db)).filter((x) => x.node_id === n.id)) await unscheduleWatcher(w.id);
    await deleteNode(db, n.id);
    await getRemoteNodes().remove(n.id);
    noteAudit(ctx, { action: 'node.delete', detail: { node: n.id } });
    ctx.status = 204;
  });

  router.post('/api/nodes/:node/echo', async (ctx) => {
    requireGlobalAdmin(principalOf(ctx));
    const n = await nodeOf(ctx);
    const nodes = getRemoteNodes();
    await nodes.ensure(nodeSpec(n));
    const t0 = Date.now();
    try {
      await nodes.echo(n.id, Math.min(services.config.BRIDGE_DIMSE_TIMEOUT_S, 30));
      ctx.body = { node: n.id, ok: true, ms: Date.now() - t0 };
    } catch (err) {
      if (!(err instanceof DimseFailure)) throw err;
      const f = failureOf(err, n.id);
      ctx.body = { node: n.id, ok: false, failure: f.kind, message: f.message };
    }
    noteAudit(ctx, { action: 'node.echo', detail: { node: n.id, ok: (ctx.body as { ok: boolean }).ok } });
  });

  router.post('/api/nodes/:node/query', async (ctx) => {
    const n = await nodeOf(ctx);
    const input = parse(queryInput, await readJsonBody(ctx));
    await curatorOf(ctx, input.project);
    if (!n.allow_find) throw new AppError(409, 'conflict', `node ${n.id} does not allow C-FIND`);
    const { limit, offset } = page(ctx, services.config.QIDO_MAX_LIMIT);
    const identifier = findKeys(input.level, input.query);
    const nodes = getRemoteNodes();
    await nodes.ensure(nodeSpec(n));
    const audit = { action: 'node.query', projectId: input.project };
    const asked = Object.keys(input.query).sort();
    try {
      const { answers, truncated } = await nodes.find(
        n.id,
        input.level === 'study' ? 'Study' : 'Series',
        identifier,
        services.config.BRIDGE_DIMSE_TIMEOUT_S,
        services.config.BRIDGE_QUERY_MAX_ANSWERS,
      );
      noteAudit(ctx, {
        ...audit,
        detail: { node: n.id, level: input.level, keys: asked, answers: answers.length },
      });
      ctx.set('X-Total-Count', String(answers.length));
      if (truncated)
        ctx.append(
          'Warning',
          warning299(
            `the node answered more than ${services.config.BRIDGE_QUERY_MAX_ANSWERS} matches; refine the query`,
          ),
        );
      if (offset + limit < answers.length)
        ctx.append('Warning', warning299('there are more results: page with offset'));
      ctx.type = 'application/dicom+json';
      ctx.body = answers.slice(offset, offset + limit).map(answerToDicomJson);
    } catch (err) {
      if (!(err instanceof DimseFailure)) throw err;
      const f = failureOf(err, n.id);
      noteAudit(ctx, { ...audit, detail: { node: n.id, level: input.level, keys: asked, failure: f.kind } });
      throw new AppError(502, `node_${f.kind}`, f.message);
    }
  });

  router.post('/api/nodes/:node/retrieve', async (ctx) => {
    const n = await nodeOf(ctx);
    const input = parse(retrieveInput, await readJsonBody(ctx));
    await curatorOf(ctx, input.project);
    if (input.studies.length > services.config.BRIDGE_MAX_STUDIES)
      throw new BadRequestError(`studies: at most ${services.config.BRIDGE_MAX_STUDIES}`);
    const target = await researchTarget(ctx, input.deidentify);
    const studies = [...new Set(input.studies)].map((uid) => ({ uid }));
    const id = await createRetrieve(deps(), {
      node: n,
      projectId: input.project,
      studies,
      method: input.method,
      ...target,
      createdBy: principalOf(ctx).id,
    });
    noteAudit(ctx, {
      action: 'retrieve.create',
      projectId: input.project,
      detail: {
        node: n.id,
        retrieve: id,
        studies: studies.length,
        research_project: target.researchProjectId,
      },
    });
    ctx.status = 202;
    ctx.set('Location', `/api/retrieves/${id}`);
    ctx.body = { id, state: 'queued', studies: studies.length };
  });

  /** A retrieve the caller curates the project of; 404 otherwise. */
  const retrieveOf = async (ctx: Context): Promise<RetrieveRow> => {
    const id = String(ctx.params.retrieve);
    const r = UUID.test(id) ? await getRetrieve(db, id) : undefined;
    if (!r || !hasRole(principalOf(ctx), r.project_id, 'curator'))
      throw new NotFoundError('retrieve not found');
    return r;
  };
  const present = async (r: RetrieveRow) => ({
    ...r,
    progress: await retrieveProgress(db, r.id),
    studies: await retrieveStudies(db, r.id),
  });

  router.get('/api/projects/:project/retrieves', async (ctx) => {
    const projectId = await requireExistingProjectRole(ctx, services, 'curator');
    noteAudit(ctx, { action: 'retrieve.list', projectId });
    ctx.body = await listRetrieves(db, projectId);
  });

  router.get('/api/retrieves/:retrieve', async (ctx) => {
    const r = await retrieveOf(ctx);
    noteAudit(ctx, { action: 'retrieve.show', projectId: r.project_id, detail: { retrieve: r.id } });
    ctx.body = await present(r);
  });

  router.post('/api/retrieves/:retrieve/cancel', async (ctx) => {
    const r = await retrieveOf(ctx);
    if (r.state !== 'queued' && r.state !== 'running')
      throw new AppError(409, 'conflict', `the retrieve has finished (${r.state})`);
    await setRetrieveState(db, r.id, 'cancelled', { error: 'cancelled by a curator' });
    noteAudit(ctx, { action: 'retrieve.cancel', projectId: r.project_id, detail: { retrieve: r.id } });
    ctx.status = 202;
    ctx.body = { id: r.id, state: 'cancelled' };
  });

  router.post('/api/retrieves/:retrieve/retry', async (ctx) => {
    const r = await retrieveOf(ctx);
    if (r.state === 'queued' || r.state === 'running')
      throw new AppError(409, 'conflict', 'the retrieve is still running');
    const reset = await resetFailedStudies(db, r.id);
    await setRetrieveState(db, r.id, 'queued');
    await enqueueRetrieve(r.id);
    noteAudit(ctx, {
      action: 'retrieve.retry',
      projectId: r.project_id,
      detail: { retrieve: r.id, studies: reset },
    });
    ctx.status = 202;
    ctx.set('Location', `/api/retrieves/${r.id}`);
    ctx.body = { id: r.id, state: 'queued', retried: reset };
  });

  router.post('/api/projects/:project/watchers', async (ctx) => {
    const projectId = await requireExistingProjectRole(ctx, services, 'curator');
    await refuseIntoResearchProject(db, projectId);
    const input = parse(watcherInput, await readJsonBody(ctx));
    if (input.interval_s < services.config.BRIDGE_WATCHER_MIN_INTERVAL_S)
      throw new BadRequestError(`interval_s: at least ${services.config.BRIDGE_WATCHER_MIN_INTERVAL_S}`);
    const node = await getNode(db, input.node);
    if (!node) throw new NotFoundError('node not found');
    findKeys('study', input.query); // refuses bad keys now rather than at the first run
    const target = await researchTarget(ctx, input.deidentify);
    const row = await insertWatcher(db, {
      id: randomUUID(),
      name: input.name,
      node_id: node.id,
      project_id: projectId,
      research_project_id: target.researchProjectId,
      deid_options: target.deidOptions,
      query: input.query,
      interval_s: input.interval_s,
      created_by: principalOf(ctx).id,
    });
    await scheduleWatcher(row.id, row.interval_s);
    noteAudit(ctx, { action: 'watcher.create', projectId, detail: { watcher: row.id, node: node.id } });
    ctx.status = 201;
    ctx.set('Location', `/api/watchers/${row.id}`);
    ctx.body = row;
  });

  router.get('/api/projects/:project/watchers', async (ctx) => {
    const projectId = await requireExistingProjectRole(ctx, services, 'curator');
    noteAudit(ctx, { action: 'watcher.list', projectId });
    ctx.body = await listWatchers(db, projectId);
  });

  const watcherOf = async (ctx: Context) => {
    const id = String(ctx.params.watcher);
    const w = UUID.test(id) ? await getWatcher(db, id) : undefined;
    if (!w || !hasRole(principalOf(ctx), w.project_id, 'curator'))
      throw new NotFoundError('watcher not found');
    return w;
  };

  router.get('/api/watchers/:watcher', async (ctx) => {
    const w = await watcherOf(ctx);
    noteAudit(ctx, { action: 'watcher.show', projectId: w.project_id, detail: { watcher: w.id } });
    ctx.body = { ...w, history: await watcherRuns(db, w.id) };
  });

  router.post('/api/watchers/:watcher/run', async (ctx) => {
    const w = await watcherOf(ctx);
    await enqueueWatcherRun(w.id);
    noteAudit(ctx, { action: 'watcher.run', projectId: w.project_id, detail: { watcher: w.id } });
    ctx.status = 202;
    ctx.body = { id: w.id, state: 'queued' };
  });

  router.delete('/api/watchers/:watcher', async (ctx) => {
    const w = await watcherOf(ctx);
    await unscheduleWatcher(w.id);
    await deleteWatcher(db, w.id);
    noteAudit(ctx, { action: 'watcher.delete', projectId: w.project_id, detail: { watcher: w.id } });
    ctx.status = 204;
  });

  return router;
}

/** Exported for tests of the query path: the study UIDs and announced sizes of answers. */
export const answerSummary = (a: Record<string, string>) => ({
  studyUid: answerStudyUid(a),
  instances: answerInstanceCount(a),
});
