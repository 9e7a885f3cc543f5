import type { Queryable } from './pool';

/** One registered version of a pipeline. */
export interface PipelineRow {
  name: string;
  version: number;
  descriptor: Record<string, unknown>;
  created_by: string;
  created_at: Date;
}

/** States of a run. */
export type RunState = 'queued' | 'running' | 'succeeded' | 'failed' | 'cancelled';

/** A run of a pipeline on a project's series. */
export interface RunRow {
  id: string;
  project_id: string;
  pipeline_name: string;
  pipeline_version: number;
  params: Record<string, unknown>;
  input_series: string[];
  state: RunState;
  cancel_requested: boolean;
  phase: string;
  progress: number;
  attempts: number;
  exit_code: number | null;
  error: string | null;
  output_series: string[];
  created_by: string;
  created_at: Date;
  started_at: Date | null;
  finished_at: Date | null;
}

/** A stored artefact of a run (its bytes live in the artefact store). */
export interface ArtefactRow {
  run_id: string;
  name: string;
  kind: 'output' | 'log';
  bytes: number;
  sha256: string;
  created_at: Date;
}

/** Registers the next version of a pipeline (1 for a new name); concurrent registrations get distinct versions. */
export async function insertPipelineVersion(
  db: Queryable,
  name: string,
  descriptor: unknown,
  createdBy: string,
): Promise<PipelineRow> {
  const r = await db.query<PipelineRow>(
    `INSERT INTO pipelines (name, version, descriptor, created_by)
     SELECT $1, coalesce(max(version), 0) + 1, $2, $3 FROM pipelines WHERE name = $1
     RETURNING name, version, descriptor, created_by, created_at`,
    [name, JSON.stringify(descriptor), createdBy],
  );
  return r.rows[0];
}

/** The latest version of every pipeline. */
export async function listLatestPipelines(db: Queryable): Promise<PipelineRow[]> {
  const r = await db.query<PipelineRow>(
    `SELECT DISTINCT ON (name) name, version, descriptor, created_by, created_at
     FROM pipelines ORDER BY name, version DESC`,
  );
  return r.rows;
}

/** Every version of one pipeline, newest first. */
export async function listPipelineVersions(db: Queryable, name: string): Promise<PipelineRow[]> {
  const r = await db.query<PipelineRow>(
    `SELECT name, version, descriptor, created_by, created_at FROM pipelines WHERE name = $1 ORDER BY version DESC`,
    [name],
  );
  return r.rows;
}

/** One version of a pipeline, or the latest when `version` is undefined. */
export async function getPipeline(
  db: Queryable,
  name: string,
  version?: number,
): Promise<PipelineRow | undefined> {
  const r = await db.query<PipelineRow>(
    `SELECT name, version, descriptor, created_by, created_at FROM pipelines
     WHERE name = $1 AND ($2::int IS NULL OR version = $2) ORDER BY version DESC LIMIT 1`,
    [name, version ?? null],
  );
  return r.rows[0];
}

/** Series of the project among `seriesUids`, with their study (those the project does not hold are absent). */
export async function projectSeriesOf(
  db: Queryable,
  projectId: string,
  seriesUids: readonly string[],
): Promise<Array<{ series_uid: string; study_uid: string; num_instances: number }>> {
  const r = await db.query<{ series_uid: string; study_uid: string; num_instances: number }>(
    `SELECT series_uid, study_uid, num_instances FROM project_series
     WHERE project_id = $1 AND series_uid = ANY($2::text[])`,
    [projectId, seriesUids],
  );
  return r.rows;
}

const RUN_COLUMNS = `id, project_id, pipeline_name, pipeline_version, params, input_series, state, cancel_requested,
  phase, progress, attempts, exit_code, error, output_series, created_by, created_at, started_at, finished_at`;

/** Creates a queued run. */
export async function insertRun(
  db: Queryable,
  r: {
    id: string;
    projectId: string;
    pipelineName: string;
    pipelineVersion: number;
    params: unknown;
    inputSeries: readonly string[];
    createdBy: string;
  },
): Promise<RunRow> {
  const res = await db.query<RunRow>(
    `INSERT INTO pipeline_runs (id, project_id, pipeline_name, pipeline_version, params, input_series, state, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, 'queued', $7) RETURNING ${RUN_COLUMNS}`,
    [
      r.id,
      r.projectId,
      r.pipelineName,
      r.pipelineVersion,
      JSON.stringify(r.params),
      r.inputSeries,
      r.createdBy,
    ],
  );
  return res.rows[0];
}

/** One run; with `projectId`, only when it belongs to that project. */
export async function getRun(db: Queryable, id: string, projectId?: string): Promise<RunRow | undefined> {
  const r = await db.query<RunRow>(
    `SELECT ${RUN_COLUMNS} FROM pipeline_runs WHERE id = $1 AND ($2::text IS NULL OR project_id = $2)`,
    [id, projectId ?? null],
  );
  return r.rows[0];
}

/** The project's runs, newest first. */
export async function listRuns(db: Queryable, projectId: string, limit = 200): Promise<RunRow[]> {
  const r = await db.query<RunRow>(
    `SELECT ${RUN_COLUMNS} FROM pipeline_runs WHERE project_id = $1 ORDER BY created_at DESC LIMIT $2`,
    [projectId, limit],
  );
  return r.rows;
}

/**
 * Marks an attempt as started, unless the run is finished or its cancellation was asked for: returns the run, or
 * undefined when it must not run. Each attempt counts, so a run taken over after a killed worker shows 2.
 */
export async function startRunAttempt(db: Queryable, id: string): Promise<RunRow | undefined> {
  const r = await db.query<RunRow>(
    `UPDATE pipeline_runs SET state = 'running', attempts = attempts + 1, started_at = now(), phase = 'starting',
       progress = 0, error = NULL, exit_code = NULL, output_series = '{}', finished_at = NULL
     WHERE id = $1 AND state IN ('queued', 'running') AND NOT cancel_requested RETURNING ${RUN_COLUMNS}`,
    [id],
  );
  return r.rows[0];
}

/** Records the phase and progress (0-100) of a running run. */
export async function setRunProgress(
  db: Queryable,
  id: string,
  phase: string,
  progress: number,
): Promise<void> {
  await db.query(`UPDATE pipeline_runs SET phase = $2, progress = $3 WHERE id = $1 AND state = 'running'`, [
    id,
    phase,
    Math.max(0, Math.min(100, Math.round(progress))),
  ]);
}

/** True when someone asked to cancel the run. */
export async function runCancelRequested(db: Queryable, id: string): Promise<boolean> {
  const r = await db.query<{ cancel_requested: boolean }>(
    'SELECT cancel_requested FROM pipeline_runs WHERE id = $1',
    [id],
  );
  return r.rows[0]?.cancel_requested ?? true;
}

/** Finishes a run (succeeded, failed or cancelled). */
export async function finishRun(
  db: Queryable,
  id: string,
  f: {
    state: 'succeeded' | 'failed' | 'cancelled';
    error?: string;
    exitCode?: number | null;
    outputSeries?: string[];
  },
): Promise<void> {
  await db.query(
    `UPDATE pipeline_runs SET state = $2, error = $3, exit_code = $4, output_series = $5, finished_at = now(),
       phase = $2, progress = CASE WHEN $2 = 'succeeded' THEN 100 ELSE progress END
     WHERE id = $1`,
    [id, f.state, f.error ?? null, f.exitCode ?? null, f.outputSeries ?? []],
  );
}

/**
 * Asks a run to stop: a queued run is cancelled at once, a running one when its worker next looks (within a
 * second). Returns the run afterwards, or undefined when it is not the project's.
 */
export async function requestRunCancel(
  db: Queryable,
  id: string,
  projectId: string,
): Promise<RunRow | undefined> {
  const r = await db.query<RunRow>(
    `UPDATE pipeline_runs SET cancel_requested = true,
       state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
       finished_at = CASE WHEN state = 'queued' THEN now() ELSE finished_at END,
       phase = CASE WHEN state = 'queued' THEN 'cancelled' ELSE phase END
     WHERE id = $1 AND project_id = $2 RETURNING ${RUN_COLUMNS}`,
    [id, projectId],
  );
  return r.rows[0];
}

/** Puts a failed or cancelled run back in the queue; undefined when it is not in such a state. */
export async function requeueRun(db: Queryable, id: string, projectId: string): Promise<RunRow | undefined> {
  const r = await db.query<RunRow>(
    `UPDATE pipeline_runs SET state = 'queued', cancel_requested = false, phase = 'queued', progress = 0,
       error = NULL, exit_code = NULL, finished_at = NULL
     WHERE id = $1 AND project_id = $2 AND state IN ('failed', 'cancelled') RETURNING ${RUN_COLUMNS}`,
    [id, projectId],
  );
  return r.rows[0];
}

/** Records an artefact (replacing one of the same name from an earlier attempt). */
export async function upsertArtefact(
  db: Queryable,
  a: { runId: string; name: string; kind: 'output' | 'log'; bytes: number; sha256: string },
): Promise<void> {
  await db.query(
    `INSERT INTO pipeline_artefacts (run_id, name, kind, bytes, sha256) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (run_id, name) DO UPDATE SET kind = EXCLUDED.kind, bytes = EXCLUDED.bytes,
       sha256 = EXCLUDED.sha256, created_at = now()`,
    [a.runId, a.name, a.kind, a.bytes, a.sha256],
  );
}

/** Forgets the output artefacts of earlier attempts (their bytes are removed by the caller). */
export async function deleteArtefacts(db: Queryable, runId: string): Promise<void> {
  await db.query('DELETE FROM pipeline_artefacts WHERE run_id = $1', [runId]);
}

/** The artefacts of a run. */
export async function listArtefacts(db: Queryable, runId: string): Promise<ArtefactRow[]> {
  const r = await db.query<ArtefactRow>(
    'SELECT run_id, name, kind, bytes, sha256, created_at FROM pipeline_artefacts WHERE run_id = $1 ORDER BY name',
    [runId],
  );
  return r.rows.map((row) => ({ ...row, bytes: Number(row.bytes) }));
}

/** One artefact of a run. */
export async function getArtefact(
  db: Queryable,
  runId: string,
  name: string,
): Promise<ArtefactRow | undefined> {
  return (await listArtefacts(db, runId)).find((a) => a.name === name);
}
