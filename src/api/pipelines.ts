import Router from '@koa/router';
import { randomUUID } from 'node:crypto';
import { z } from 'zod';
import { type Principal, requireGlobalAdmin } from '../auth/access';
import { isUid, UID_RULE } from '../dicom/uid';
import { BadRequestError, ConflictError, NotFoundError, UnauthorizedError } from '../errors';
import { noteAudit, principalOf, requireExistingProjectRole } from '../http/context';
import {
  getArtefact,
  getPipeline,
  getRun,
  insertPipelineVersion,
  insertRun,
  listArtefacts,
  listLatestPipelines,
  listPipelineVersions,
  listRuns,
  projectSeriesOf,
  requestRunCancel,
  requeueRun,
  type RunRow,
} from '../index-db/pipelines';
import { runRecordFiles } from '../index-db/records';
import { enqueuePipelineRun } from '../jobs/queues';
import { DescriptorError, validateDescriptor, validateParams } from '../pipelines/descriptor';
import { getFileStore } from '../records/file-store';
import type { Services } from '../services';
import { readJsonBody } from './body';

const NAME = /^[a-z0-9][a-z0-9._-]{0,63}$/;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

const runInput = z.object({
  pipeline: z.string().regex(NAME, 'a registered pipeline name'),
  version: z.number().int().min(1).optional(),
  params: z.record(z.string(), z.unknown()).optional(),
  series: z.array(z.string().max(64).refine(isUid, UID_RULE)).min(1),
});

function zodProblems(e: z.ZodError): string {
  return e.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ');
}

function pipelineName(descriptorName: unknown): string {
  const n = String(descriptorName ?? '')
    .toLowerCase()
    .replace(/[^a-z0-9._-]+/g, '-')
    .replace(/^[^a-z0-9]+/, '')
    .slice(0, 64);
  if (!NAME.test(n)) throw new BadRequestError('descriptor name: letters or digits needed');
  return n;
}

/** A run as the API shows it (no token, no paths). */
function runView(r: RunRow) {
  return {
    id: r.id,
    projectId: r.project_id,
    pipeline: r.pipeline_name,
    version: r.pipeline_version,
    params: r.params,
    inputSeries: r.input_series,
    state: r.state,
    phase: r.phase,
    progress: r.progress,
    attempts: r.attempts,
    exitCode: r.exit_code,
    error: r.error,
    outputSeries: r.output_series,
    createdBy: r.created_by,
    createdAt: r.created_at,
    startedAt: r.started_at,
    finishedAt: r.finished_at,
  };
}

/** People and services only: share links and run tokens have no business with the registry. */
function requirePerson(p: Principal): void {
  if (p.kind === 'share' || p.kind === 'run')
    throw new UnauthorizedError('this needs a user or service token');
}

/**
 * `/api/pipelines`: the registry of Boutiques descriptors (global administrators register, every user lists), and
 * `/api/projects/{project}/runs`: runs of them on the project's series (contributors start, cancel and retry;
 * readers watch and download artefacts). Runs execute in the worker (src/jobs/pipeline-run.ts).
 */
export function pipelinesRouter(services: Services): Router {
  const router = new Router();
  const { config, db } = services;

  router.get('/api/pipelines', async (ctx) => {
    requirePerson(principalOf(ctx));
    noteAudit(ctx, { action: 'pipeline.list' });
    ctx.body = (await listLatestPipelines(db)).map((p) => ({
      name: p.name,
      version: p.version,
      createdAt: p.created_at,
      descriptor: p.descriptor,
    }));
  });

  router.post('/api/pipelines', async (ctx) => {
    const p = principalOf(ctx);
    requireGlobalAdmin(p);
    const body = await readJsonBody(ctx, config.PIPELINE_MAX_DESCRIPTOR_BYTES);
    let descriptor;
    try {
      descriptor = validateDescriptor(body);
    } catch (err) {
      if (err instanceof DescriptorError)
        throw new BadRequestError(`invalid Boutiques descriptor: ${err.message}`);
      throw err;
    }
    const name = pipelineName(descriptor.name);
    const row = await insertPipelineVersion(db, name, descriptor, p.id);
    noteAudit(ctx, { action: 'pipeline.register', detail: { pipeline: name, version: row.version } });
    ctx.status = 201;
    ctx.set('Location', `/api/pipelines/${name}/versions/${row.version}`);
    ctx.body = { name: row.name, version: row.version, createdAt: row.created_at };
  });

  router.get('/api/pipelines/:name', async (ctx) => {
    requirePerson(principalOf(ctx));
    noteAudit(ctx, { action: 'pipeline.read', detail: { pipeline: ctx.params.name } });
    const rows = NAME.test(ctx.params.name) ? await listPipelineVersions(db, ctx.params.name) : [];
    if (!rows.length) throw new NotFoundError('pipeline not found');
    ctx.body = {
      name: rows[0].name,
      versions: rows.map((r) => ({ version: r.version, createdAt: r.created_at })),
    };
  });

  router.get('/api/pipelines/:name/versions/:version', async (ctx) => {
    requirePerson(principalOf(ctx));
    const version = Number(ctx.params.version);
    noteAudit(ctx, { action: 'pipeline.read', detail: { pipeline: ctx.params.name, version } });
    const row =
      NAME.test(ctx.params.name) && Number.isInteger(version) && version > 0
        ? await getPipeline(db, ctx.params.name, version)
        : undefined;
    if (!row) throw new NotFoundError('pipeline version not found');
    ctx.body = {
      name: row.name,
      version: row.version,
      createdAt: row.created_at,
      descriptor: row.descriptor,
    };
  });

  const runs = '/api/projects/:project/runs';

  router.post(runs, async (ctx) => {
    const p = principalOf(ctx);
    requirePerson(p);
    const projectId = await requireExistingProjectRole(ctx, services, 'contributor');
    const parsed = runInput.safeParse(await readJsonBody(ctx, 256 * 1024));
    if (!parsed.success) throw new BadRequestError(zodProblems(parsed.error));
    const input = parsed.data;
    noteAudit(ctx, { action: 'run.create', projectId, detail: { pipeline: input.pipeline } });
    const series = [...new Set(input.series)];
    if (series.length > config.PIPELINE_MAX_INPUT_SERIES)
      throw new BadRequestError(`series: at most ${config.PIPELINE_MAX_INPUT_SERIES}`);
    const pipeline = await getPipeline(db, input.pipeline, input.version);
    if (!pipeline) throw new NotFoundError('pipeline not found');
    const held = await projectSeriesOf(db, projectId, series);
    // A series outside the project answers 404, as any UID the caller cannot see.
    if (held.length !== series.length) throw new NotFoundError('series not found');
    const instances = held.reduce((n, s) => n + s.num_instances, 0);
    if (instances > config.PIPELINE_MAX_INPUT_INSTANCES)
      throw new BadRequestError(
        `the series hold ${instances} instances, at most ${config.PIPELINE_MAX_INPUT_INSTANCES}`,
      );
    let params;
    try {
      params = validateParams(validateDescriptor(pipeline.descriptor), input.params);
    } catch (err) {
      if (err instanceof DescriptorError) throw new BadRequestError(err.message);
      throw err;
    }
    const run = await insertRun(db, {
      id: randomUUID(),
      projectId,
      pipelineName: pipeline.name,
      pipelineVersion: pipeline.version,
      params,
      inputSeries: series,
      createdBy: p.id,
    });
    await enqueuePipelineRun(run.id);
    noteAudit(ctx, {
      action: 'run.create',
      seriesUid: series.length === 1 ? series[0] : undefined,
      detail: { run: run.id, pipeline: pipeline.name, version: pipeline.version, series: series.length },
    });
    ctx.status = 201;
    ctx.set('Location', `/api/projects/${encodeURIComponent(projectId)}/runs/${run.id}`);
    ctx.body = runView(run);
  });

  router.get(runs, async (ctx) => {
    requirePerson(principalOf(ctx));
    const projectId = await requireExistingProjectRole(ctx, services, 'reader');
    noteAudit(ctx, { action: 'run.list', projectId });
    ctx.body = (await listRuns(db, projectId)).map(runView);
  });

  const runOf = async (projectId: string, id: string): Promise<RunRow> => {
    const run = UUID.test(id) ? await getRun(db, id, projectId) : undefined;
    if (!run) throw new NotFoundError('run not found');
    return run;
  };

  router.get(`${runs}/:id`, async (ctx) => {
    requirePerson(principalOf(ctx));
    const projectId = await requireExistingProjectRole(ctx, services, 'reader');
    noteAudit(ctx, { action: 'run.read', projectId, detail: { run: ctx.params.id } });
    const run = await runOf(projectId, ctx.params.id);
    ctx.body = {
      ...runView(run),
      artefacts: (await listArtefacts(db, run.id)).map(({ run_id: _r, ...a }) => a),
      // Where a succeeded run's outputs and logs live as research-record files (one set per input subject).
      files: (await runRecordFiles(db, run.id)).map((f) => ({
        subject: f.subject_id,
        id: f.id,
        path: f.path,
        sha256: f.sha256,
        size: f.size,
        mediaType: f.media_type,
      })),
    };
  });

  router.post(`${runs}/:id/cancel`, async (ctx) => {
    requirePerson(principalOf(ctx));
    const projectId = await requireExistingProjectRole(ctx, services, 'contributor');
    noteAudit(ctx, { action: 'run.cancel', projectId, detail: { run: ctx.params.id } });
    await runOf(projectId, ctx.params.id);
    const run = await requestRunCancel(db, ctx.params.id, projectId);
    ctx.status = 202;
    ctx.body = runView(run!);
  });

  router.post(`${runs}/:id/retry`, async (ctx) => {
    requirePerson(principalOf(ctx));
    const projectId = await requireExistingProjectRole(ctx, services, 'contributor');
    noteAudit(ctx, { action: 'run.retry', projectId, detail: { run: ctx.params.id } });
    await runOf(projectId, ctx.params.id);
    const run = await requeueRun(db, ctx.params.id, projectId);
    if (!run) throw new ConflictError('only a failed or cancelled run can be retried');
    await enqueuePipelineRun(run.id);
    ctx.status = 202;
    ctx.body = runView(run);
  });

  router.get(`${runs}/:id/artefacts/:name`, async (ctx) => {
    requirePerson(principalOf(ctx));
    const projectId = await requireExistingProjectRole(ctx, services, 'reader');
    noteAudit(ctx, {
      action: 'run.artefact',
      projectId,
      detail: { run: ctx.params.id, artefact: ctx.params.name },
    });
    const run = await runOf(projectId, ctx.params.id);
    const row = await getArtefact(db, run.id, ctx.params.name);
    if (!row) throw new NotFoundError('artefact not found');
    const body = await getFileStore().open(row.sha256);
    ctx.set('Content-Type', row.kind === 'log' ? 'text/plain; charset=utf-8' : 'application/octet-stream');
    ctx.set('Content-Length', String(row.bytes));
    ctx.set('Content-Disposition', `attachment; filename="${row.name.replace(/"/g, '')}"`);
    ctx.set('ETag', `"${row.sha256}"`);
    noteAudit(ctx, { action: 'run.artefact', bytes: row.bytes });
    ctx.body = body;
  });

  return router;
}
