/**
 * One attempt of a pipeline run, in the worker: token → private folder → inputs by WADO-RS → sandboxed tool →
 * DICOM outputs by STOW-RS, other outputs and the logs into the research records' FileStore → folder removed.
 * Results are only stored once the tool has exited 0 and every output passed its checks, so a run killed or failed
 * before that point leaves nothing in the project; each attempt starts from an empty folder and drops the artefacts
 * of the last one. A succeeded run's non-DICOM outputs and logs become files of the subject(s) of its input series
 * (path `runs/<run id>/…`), in the same transaction that marks the run succeeded: browsable and downloadable with
 * their checksums like any uploaded file. The logs of a failed run stay run artefacts only.
 */
import { createReadStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { extname, join, relative } from 'node:path';
import { Readable } from 'node:stream';
import type { Pool } from 'pg';
import { mintRunToken } from '../auth/run-tokens';
import type { Config } from '../config';
import { parsePart10 } from '../dicom/parse';
import { insertAuditEvents } from '../index-db/audit';
import { withTransaction } from '../index-db/pool';
import { insertFileVersion, subjectsOfSeries } from '../index-db/records';
import {
  deleteArtefacts,
  finishRun,
  getPipeline,
  projectSeriesOf,
  runCancelRequested,
  setRunProgress,
  startRunAttempt,
  upsertArtefact,
} from '../index-db/pipelines';
import type { Logger } from '../logger';
import type { FileStore } from '../records/file-store';
import { createRunCgroup, type CgroupSupport, detectCgroups, type RunCgroup } from './cgroups';
import { type BoutiquesDescriptor, buildCommandLine, type RunParams, validateDescriptor } from './descriptor';
import { fetchSeries, GatewayCallError, type GatewayTarget, storeFiles } from './gateway-client';
import { kubernetesRunManifests, type RunSpec } from './k8s';
import { followRunJob, kubeClients, submitRunJob } from './k8s-executor';
import { runSandboxed } from './sandbox';

/** What a run needs. */
export interface RunnerDeps {
  db: Pool;
  logger?: Logger;
  config: Pick<
    Config,
    | 'PIPELINE_RUN_TOKEN_SECRET'
    | 'PIPELINE_RUN_TOKEN_TTL_S'
    | 'PIPELINE_GATEWAY_URL'
    | 'PIPELINE_WORK_DIR'
    | 'PIPELINE_TIMEOUT_S'
    | 'PIPELINE_CPU_S'
    | 'PIPELINE_MEMORY_BYTES'
    | 'PIPELINE_CPU_CORES'
    | 'PIPELINE_CGROUP_DIR'
    | 'PIPELINE_CGROUP'
    | 'PIPELINE_PIDS_MAX'
    | 'PIPELINE_EXECUTOR'
    | 'PIPELINE_LOG_MAX_BYTES'
    | 'PIPELINE_MAX_INPUT_INSTANCES'
    | 'PIPELINE_MAX_OUTPUT_BYTES'
    | 'STOW_MAX_PART_BYTES'
  >;
  /** The research records' FileStore: the bytes of logs and non-DICOM outputs. */
  files: FileStore;
  /** Folder of the tools shipped with Aperture, shown read-only in the sandbox. */
  toolsDir?: string;
  /** Reports progress to the job queue too (BullMQ updateProgress). */
  onProgress?: (phase: string, progress: number) => Promise<void> | void;
}

/** How an attempt ended. */
export type RunOutcome = 'succeeded' | 'failed' | 'cancelled' | 'skipped';

/** The default place of run folders. */
export function workRoot(config: Pick<Config, 'PIPELINE_WORK_DIR'>): string {
  return config.PIPELINE_WORK_DIR ?? join(tmpdir(), 'aperture-runs');
}

const cgroupChecks = new Map<string, Promise<CgroupSupport>>();

/** Whether runs get cgroups here (checked once per folder and process; the answer is logged once). */
export function cgroupSupport(
  config: Pick<Config, 'PIPELINE_CGROUP_DIR' | 'PIPELINE_CGROUP'>,
  logger?: Logger,
): Promise<CgroupSupport> {
  const key = `${config.PIPELINE_CGROUP ?? 'auto'}:${config.PIPELINE_CGROUP_DIR ?? ''}`;
  let p = cgroupChecks.get(key);
  if (!p) {
    p = detectCgroups(config).then((s) => {
      if (s.available && s.version === 2)
        logger?.info({ cgroup: s.dir }, 'pipeline runs get cgroup v2 memory, cpu and pids limits');
      else if (s.available)
        logger?.info(
          { cgroups: s.dirs },
          `pipeline runs get cgroup v1 limits: ${['memory', ...(s.dirs.pids ? ['pids'] : []), ...(s.dirs.cpu ? ['cpu'] : [])].join(', ')}`,
        );
      else logger?.warn({ reason: s.reason }, 'pipeline runs get rlimits only (no cgroup limits)');
      return s;
    });
    cgroupChecks.set(key, p);
  }
  return p;
}

/** The limits of a run: the site's, lowered by the descriptor's suggested resources (Boutiques gives RAM in GB). */
export function runLimits(
  config: Pick<Config, 'PIPELINE_MEMORY_BYTES' | 'PIPELINE_CPU_CORES'>,
  d: BoutiquesDescriptor,
): { memoryBytes: number; cpuCores: number } {
  const res = d['suggested-resources'] ?? {};
  const ram = res.ram !== undefined ? Math.floor(res.ram * 1024 ** 3) : Infinity;
  const cores = res['cpu-cores'] ?? Infinity;
  return {
    memoryBytes: Math.max(16 * 1024 ** 2, Math.min(config.PIPELINE_MEMORY_BYTES, ram)),
    cpuCores: Math.min(config.PIPELINE_CPU_CORES, cores),
  };
}

const mib = (n: number) => `${Math.round(n / 1024 ** 2)} MiB`;
/** What a tool prints when an allocation fails under RLIMIT_AS (Python, C, C++, glibc, Java, R). */
const ALLOCATION_FAILED =
  /MemoryError|Cannot allocate memory|std::bad_alloc|out of memory|OutOfMemoryError|cannot allocate vector/i;

/** A failure of the run itself (the tool, its outputs): final, not retried by the queue. */
export class RunFailure extends Error {}

async function walk(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await walk(p)));
    else if (e.isFile()) out.push(p);
    // Symbolic links and other special files a tool leaves are ignored: they could point outside the folder.
  }
  return out;
}

async function isPart10(path: string): Promise<boolean> {
  const fh = await open(path, 'r');
  try {
    const b = Buffer.alloc(132);
    const { bytesRead } = await fh.read(b, 0, 132, 0);
    return bytesRead === 132 && b.toString('latin1', 128, 132) === 'DICM';
  } finally {
    await fh.close();
  }
}

type Json = Record<string, { Value?: unknown[] } | undefined>;

/** True when a DICOM output names one of the input series (Referenced Series or Source Image Sequence). */
function referencesSources(json: Json, inputSeries: ReadonlySet<string>): boolean {
  for (const item of (json['00081115']?.Value ?? []) as Json[]) {
    const uid = item['0020000E']?.Value?.[0];
    if (typeof uid === 'string' && inputSeries.has(uid)) return true;
  }
  return ((json['00082112']?.Value ?? []) as unknown[]).length > 0;
}

/**
 * Runs one attempt of a run. Returns how it ended; throws only for failures worth a retry by the queue (gateway,
 * database), after recording nothing final.
 */
export async function executeRun(deps: RunnerDeps, runId: string): Promise<RunOutcome> {
  const { db, config } = deps;
  const run = await startRunAttempt(db, runId);
  if (!run) return 'skipped';
  const progress = async (phase: string, pct: number) => {
    await setRunProgress(db, runId, phase, pct);
    await deps.onProgress?.(phase, pct);
  };
  const dir = join(workRoot(config), runId);
  let cgroup: RunCgroup | undefined;
  // Whatever an earlier attempt left (a killed worker): neither its folder nor its artefacts count.
  await rm(dir, { recursive: true, force: true });
  // (Blobs stay in the content-addressed store: another file may share them.)
  await deleteArtefacts(db, runId);
  try {
    if (!config.PIPELINE_RUN_TOKEN_SECRET) throw new RunFailure('PIPELINE_RUN_TOKEN_SECRET is not set');
    const pipelineRow = await getPipeline(db, run.pipeline_name, run.pipeline_version);
    if (!pipelineRow) throw new RunFailure('the pipeline version of this run no longer exists');
    const descriptor = validateDescriptor(pipelineRow.descriptor);
    const series = await projectSeriesOf(db, run.project_id, run.input_series);
    if (series.length !== run.input_series.length)
      throw new RunFailure('an input series is no longer in the project');
    const total = series.reduce((n, s) => n + s.num_instances, 0);
    if (total > config.PIPELINE_MAX_INPUT_INSTANCES)
      throw new RunFailure(
        `the inputs hold ${total} instances, more than ${config.PIPELINE_MAX_INPUT_INSTANCES}`,
      );

    const token = await mintRunToken(
      config.PIPELINE_RUN_TOKEN_SECRET,
      {
        runId,
        projectId: run.project_id,
        series: series.map((s) => ({ studyUid: s.study_uid, seriesUid: s.series_uid })),
      },
      config.PIPELINE_RUN_TOKEN_TTL_S,
    );
    const target: GatewayTarget = {
      baseUrl: config.PIPELINE_GATEWAY_URL,
      projectId: run.project_id,
      token,
      timeoutMs: 300_000,
    };

    if (config.PIPELINE_EXECUTOR === 'kubernetes') {
      const spec: RunSpec = {
        runId,
        projectId: run.project_id,
        gatewayUrl: config.PIPELINE_GATEWAY_URL,
        series: series.map((s) => ({ studyUid: s.study_uid, seriesUid: s.series_uid })),
        inputSeries: run.input_series,
        maxOutputBytes: config.PIPELINE_MAX_OUTPUT_BYTES,
      };
      return await runAsKubernetesJob(deps, run, descriptor, spec, token, progress);
    }

    const inDir = join(dir, 'in');
    const outDir = join(dir, 'out');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    await mkdir(inDir, { mode: 0o755 });
    await mkdir(outDir, { mode: 0o777 });
    await progress('materialising', 0);
    let fetched = 0;
    for (const [n, s] of series.entries()) {
      const seriesDir = join(inDir, String(n + 1).padStart(2, '0'));
      // One more try for a transfer cut short (a keep-alive connection closed under it); refusals are final.
      for (let attempt = 1; ; attempt++) {
        let got = 0;
        try {
          await fetchSeries(
            target,
            { studyUid: s.study_uid, seriesUid: s.series_uid },
            seriesDir,
            { maxInstances: config.PIPELINE_MAX_INPUT_INSTANCES, maxPartBytes: config.STOW_MAX_PART_BYTES },
            () => {
              got += 1;
            },
          );
          fetched += got;
          break;
        } catch (err) {
          if (attempt >= 2 || (err instanceof GatewayCallError && err.status >= 400 && err.status < 500))
            throw err;
          deps.logger?.warn(
            { run: runId, series: s.series_uid, err: (err as Error).message },
            'input fetch retried',
          );
          await rm(seriesDir, { recursive: true, force: true });
        }
      }
      await progress('materialising', Math.round((30 * fetched) / Math.max(1, total)));
    }

    await progress('running', 30);
    const command = buildCommandLine(descriptor, run.params as RunParams);
    const env = Object.fromEntries((descriptor['environment-variables'] ?? []).map((e) => [e.name, e.value]));
    const limits = runLimits(config, descriptor);
    const cg = await cgroupSupport(config, deps.logger);
    if (cg.available)
      cgroup = await createRunCgroup(cg, runId, { ...limits, pids: config.PIPELINE_PIDS_MAX });
    const result = await runSandboxed({
      command,
      inDir,
      outDir,
      toolsDir: deps.toolsDir,
      env,
      limits: {
        timeoutMs: config.PIPELINE_TIMEOUT_S * 1000,
        cpuS: config.PIPELINE_CPU_S,
        memoryBytes: limits.memoryBytes,
        fileBytes: config.PIPELINE_MAX_OUTPUT_BYTES,
        logMaxBytes: config.PIPELINE_LOG_MAX_BYTES,
      },
      cgroupProcs: cgroup?.procsFiles,
      shouldCancel: () => runCancelRequested(db, runId),
    });
    const logs = [
      await saveLog(deps, runId, 'stdout.txt', result.stdout),
      await saveLog(deps, runId, 'stderr.txt', result.stderr),
    ];
    if (result.cancelled) {
      await finishRun(db, runId, { state: 'cancelled', error: 'cancelled on request' });
      return 'cancelled';
    }
    if (result.timedOut) throw new RunFailure(`the tool ran longer than ${config.PIPELINE_TIMEOUT_S} s`);
    if (result.exitCode !== 0) {
      // The reason in words: the run's error is what the Runs page shows.
      let how: string;
      const exited = result.exitCode ?? result.signal;
      if (cgroup && (await cgroup.oomKilled()))
        how = `exceeded its memory limit of ${mib(limits.memoryBytes)} and was killed by the kernel's OOM killer (cgroup ${cgroup.memoryFile}); exited ${exited}`;
      else if (cgroup && (await cgroup.pidsLimited()))
        how = `reached its limit of ${config.PIPELINE_PIDS_MAX} processes: the kernel refused its forks (cgroup pids.max); exited ${exited}`;
      else if (result.signal === 'SIGXCPU')
        how = `exceeded its CPU time limit of ${config.PIPELINE_CPU_S} s and was killed`;
      else if (!cgroup && ALLOCATION_FAILED.test(result.stderr.toString('latin1')))
        how = `ran out of memory: its limit is ${mib(limits.memoryBytes)} (address space, RLIMIT_AS); exited ${
          result.exitCode ?? result.signal
        }`;
      else if (result.signal) how = `was killed by ${result.signal} (limits: CPU, memory)`;
      else how = `exited ${result.exitCode}`;
      const err = new RunFailure(`the tool ${how}`);
      (err as RunFailure & { exitCode?: number | null }).exitCode = result.exitCode;
      throw err;
    }

    await progress('collecting', 80);
    const { dicom, other } = await collectOutputs(outDir, run.input_series, config.PIPELINE_MAX_OUTPUT_BYTES);

    let outputSeries: string[] = [];
    if (dicom.length) {
      await progress('storing', 85);
      const stored = await storeFiles(target, dicom);
      outputSeries = stored.seriesUids;
    }
    // Bytes first (durable, content-addressed), then every row in one transaction with the run's success.
    const outputs: StoredOutput[] = [...logs];
    for (const f of other) {
      const path = relative(outDir, f);
      const blob = await deps.files.put(createReadStream(f), config.PIPELINE_MAX_OUTPUT_BYTES);
      outputs.push({ name: path.split('/').join('__'), path, kind: 'output', ...blob });
    }
    const subjects = await subjectsOfSeries(db, run.project_id, run.input_series);
    await withTransaction(db, async (client) => {
      for (const o of outputs) {
        if (o.kind === 'output')
          await upsertArtefact(client, {
            runId,
            name: o.name,
            kind: o.kind,
            bytes: o.size,
            sha256: o.sha256,
          });
        for (const s of subjects)
          await insertFileVersion(client, {
            project_id: run.project_id,
            subject_id: s.id,
            record_id: null,
            path: `runs/${runId}/${o.path}`,
            sha256: o.sha256,
            size: o.size,
            media_type: mediaTypeOf(o.path),
            created_by: run.created_by,
            run_id: runId,
          });
      }
      await auditRunResults(
        client,
        run,
        outputs.reduce((n, o) => n + o.size, 0),
        {
          run: runId,
          pipeline: run.pipeline_name,
          dicom: dicom.length,
          series: outputSeries.length,
          files: outputs.length,
          subjects: subjects.map((s) => s.id),
        },
      );
      await finishRun(client, runId, { state: 'succeeded', exitCode: 0, outputSeries });
    });
    deps.logger?.info(
      { run: runId, dicom: dicom.length, files: outputs.length, subjects: subjects.length },
      'pipeline run succeeded',
    );
    return 'succeeded';
  } catch (err) {
    if (err instanceof RunFailure) {
      await finishRun(db, runId, {
        state: 'failed',
        error: err.message,
        exitCode: (err as RunFailure & { exitCode?: number | null }).exitCode ?? null,
      });
      deps.logger?.warn({ run: runId, err: err.message }, 'pipeline run failed');
      return 'failed';
    }
    // A 401/403/404 from our own gateway will not pass with a retry: the token or the inputs are wrong.
    if (err instanceof GatewayCallError && err.status >= 400 && err.status < 500) {
      await finishRun(db, runId, { state: 'failed', error: err.message });
      return 'failed';
    }
    throw err;
  } finally {
    await cgroup?.remove();
    await rm(dir, { recursive: true, force: true });
  }
}

/** A run as a Kubernetes Job (PIPELINE_EXECUTOR=kubernetes): the Job fetches, runs and stores; this follows it. */
async function runAsKubernetesJob(
  deps: RunnerDeps,
  run: NonNullable<Awaited<ReturnType<typeof startRunAttempt>>>,
  descriptor: BoutiquesDescriptor,
  spec: RunSpec,
  token: string,
  progress: (phase: string, pct: number) => Promise<void>,
): Promise<RunOutcome> {
  const { db } = deps;
  let manifests;
  try {
    manifests = kubernetesRunManifests(descriptor, run.params as RunParams, spec, token);
  } catch (err) {
    throw new RunFailure((err as Error).message);
  }
  const tool = (
    manifests.job as {
      spec: { template: { spec: { initContainers: Array<{ resources: { limits: { memory: string } } }> } } };
    }
  ).spec.template.spec.initContainers[1];
  const api = await kubeClients();
  const ref = await submitRunJob(api, manifests);
  deps.logger?.info(
    { run: run.id, job: ref.name, adopted: ref.adopted },
    'pipeline run submitted as a Kubernetes Job',
  );
  await progress('running', 30);
  const { outcome, outputSeries } = await followRunJob(api, ref, {
    memory: tool.resources.limits.memory,
    shouldCancel: () => runCancelRequested(db, run.id),
  });
  if (outcome.state === 'cancelled') {
    await finishRun(db, run.id, { state: 'cancelled', error: 'cancelled on request' });
    return 'cancelled';
  }
  if (outcome.state !== 'succeeded')
    throw new RunFailure(outcome.state === 'failed' ? outcome.error : 'the Job did not end');
  await withTransaction(db, async (client) => {
    await auditRunResults(client, run, 0, {
      run: run.id,
      pipeline: run.pipeline_name,
      series: outputSeries.length,
      job: ref.name,
    });
    await finishRun(client, run.id, { state: 'succeeded', exitCode: 0, outputSeries });
  });
  return 'succeeded';
}

/** The audit row of a run's stored results (in the transaction that marks the run succeeded). */
async function auditRunResults(
  client: Parameters<typeof insertAuditEvents>[0],
  run: { created_by: string; project_id: string },
  bytes: number,
  detail: Record<string, unknown>,
): Promise<void> {
  await insertAuditEvents(client, [
    {
      at: new Date(),
      principal: run.created_by,
      principalKind: 'user',
      action: 'run.results',
      projectId: run.project_id,
      studyUid: null,
      seriesUid: null,
      sopInstanceUid: null,
      outcome: 200,
      bytes,
      clientIp: null,
      method: null,
      route: 'worker:pipelines',
      detail,
    },
  ]);
}

/**
 * Sorts what a tool left in its working folder: DICOM objects (checked: valid, in a new series, referencing an
 * input series) to store back, and other files to keep as artefacts. Throws RunFailure for outputs that must not
 * be stored, before anything is.
 */
export async function collectOutputs(
  outDir: string,
  inputSeries: readonly string[],
  maxBytes: number,
): Promise<{ dicom: string[]; other: string[] }> {
  const files = await walk(outDir);
  let bytes = 0;
  for (const f of files) bytes += (await stat(f)).size;
  if (bytes > maxBytes) throw new RunFailure(`the outputs hold ${bytes} bytes, more than ${maxBytes}`);
  const inputs = new Set(inputSeries);
  const dicom: string[] = [];
  const other: string[] = [];
  for (const f of files) {
    if (!(await isPart10(f))) {
      other.push(f);
      continue;
    }
    let parsed;
    try {
      parsed = parsePart10(await readFile(f));
    } catch {
      throw new RunFailure(`output ${relative(outDir, f)} is not a valid DICOM object`);
    }
    if (inputs.has(parsed.seriesInstanceUid))
      throw new RunFailure(
        `output ${relative(outDir, f)} is in an input series: results must be a new series`,
      );
    if (!referencesSources(parsed.json as Json, inputs))
      throw new RunFailure(
        `output ${relative(outDir, f)} references none of its sources (Referenced Series or Source Image Sequence)`,
      );
    dicom.push(f);
  }
  return { dicom, other };
}

/** A non-DICOM output or log in the FileStore: its artefact name (flat), its path under the run, its blob. */
interface StoredOutput {
  name: string;
  path: string;
  kind: 'output' | 'log';
  sha256: string;
  size: number;
}

const MEDIA_TYPES: Record<string, string> = {
  '.nii': 'application/x-nifti', // no registered type; the one NIfTI tools and XNAT use
  '.gz': 'application/gzip',
  '.json': 'application/json',
  '.txt': 'text/plain',
  '.log': 'text/plain',
  '.csv': 'text/csv',
  '.tsv': 'text/tab-separated-values',
  '.html': 'text/html',
  '.pdf': 'application/pdf',
  '.png': 'image/png',
};

/** The media type of an output file by its extension (application/octet-stream when unknown). */
export function mediaTypeOf(path: string): string {
  return MEDIA_TYPES[extname(path).toLowerCase()] ?? 'application/octet-stream';
}

/** Stores a log in the FileStore and records it as a run artefact at once (failed runs keep their logs too). */
async function saveLog(deps: RunnerDeps, runId: string, name: string, body: Buffer): Promise<StoredOutput> {
  const blob = await deps.files.put(Readable.from([body]), body.length);
  await upsertArtefact(deps.db, { runId, name, kind: 'log', bytes: blob.size, sha256: blob.sha256 });
  return { name, path: `logs/${name}`, kind: 'log', ...blob };
}
