/**
 * Pipelines (issue 19): what the machinery costs around a tool. A 100-instance MR series (256x256) is converted by
 * dcm2niix (a) by hand on files already on disk and (b) as a pipeline run (token, WADO-RS materialisation through the
 * gateway, bubblewrap + prlimit, FileStore and record files, folder removal); the parts are timed against their Orthanc
 * counterparts in the same run: materialisation vs Orthanc's DICOMweb plugin, store-back of 100 derived instances by
 * STOW-RS through the gateway vs the plugin's STOW-RS, and the sandbox start vs a plain shell.
 */
import { execFileSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { closeServices, initServices } from '../../src/bootstrap';
import { loadConfig } from '../../src/config';
import { insertPipelineVersion, insertRun, getRun } from '../../src/index-db/pipelines';
import { createLogger } from '../../src/logger';
import { FsFileStore } from '../../src/records/file-store';
import { validateDescriptor } from '../../src/pipelines/descriptor';
import { fetchSeries } from '../../src/pipelines/gateway-client';
import { createRunCgroup } from '../../src/pipelines/cgroups';
import { cgroupSupport, executeRun } from '../../src/pipelines/runner';
import { runSandboxed } from '../../src/pipelines/sandbox';
import { generateInstances } from '../../tools/synth';
import { storeBatch, stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, orthancAuth, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, round } from '../lib/stats';

const INSTANCES = Number(process.env.BENCH_PIPELINE_INSTANCES ?? 100);
const REPS = Number(process.env.BENCH_PIPELINE_REPS ?? 5);
const SECRET = 'bench-run-token-secret-0123456789abcdef';
const ROOT = join(__dirname, '../..');

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function timed(fn: () => Promise<unknown> | unknown): Promise<number> {
  const t = process.hrtime.bigint();
  await fn();
  return msSince(t);
}

export async function run(stack: StackEnv): Promise<SuiteResult> {
  const port = 18000 + Math.floor(Math.random() * 1000);
  const env = {
    AUTH_ENABLED: 'true',
    OIDC_ISSUER: 'http://127.0.0.1:1/unused',
    PIPELINE_RUN_TOKEN_SECRET: SECRET,
  };
  const gw = await startGatewayProcess(stack, port, env);
  const config = loadConfig({ ...process.env, ...stack, ...env, PIPELINE_GATEWAY_URL: gw.url });
  const services = await initServices(config, createLogger('silent'), { http: false, queues: false });
  const scratch = mkdtempSync(join(tmpdir(), 'bench-pipelines-'));
  try {
    // Seeding needs a caller with rights: a gateway without authentication, briefly, on another port.
    const seeder = await startGatewayProcess(stack, port + 1, { AUTH_ENABLED: 'false' });
    const series = [
      ...generateInstances({
        patients: 1,
        instancesPerSeries: INSTANCES,
        modalities: ['MR'],
        rows: 256,
        cols: 256,
        seed: 'bench-pipelines',
      }),
    ];
    try {
      await createProject(seeder.url, 'bench', 'Bench');
      const stored = await stowInstances(
        series.map((s) => s.buffer),
        { baseUrl: `${seeder.url}/projects/bench/dicom-web`, batch: 20 },
      );
      if (stored.failed) throw new Error('could not store the benchmark series');
    } finally {
      await seeder.stop();
    }
    const study = series[0].studyInstanceUid;
    const seriesUid = series[0].seriesInstanceUid;
    const local = join(scratch, 'local');
    mkdirSync(local);
    series.forEach((s, i) => writeFileSync(join(local, `${i}.dcm`), s.buffer));

    const descriptor = validateDescriptor(
      JSON.parse(readFileSync(join(ROOT, 'pipelines/descriptors/dcm2niix.json'), 'utf8')) as unknown,
    );
    const pipeline = await insertPipelineVersion(services.db, 'dcm2niix', descriptor, 'bench');
    const files = new FsFileStore(join(scratch, 'files'));
    const runnerConfig = { ...config, PIPELINE_WORK_DIR: join(scratch, 'runs') };

    // (a) by hand: the same command on the same files.
    const byHand: number[] = [];
    const pipelineMs: number[] = [];
    for (let r = 0; r < REPS; r++) {
      const out = join(scratch, `hand-${r}`);
      mkdirSync(out);
      byHand.push(
        await timed(() =>
          execFileSync('dcm2niix', ['-b', 'y', '-z', 'n', '-f', 'volume_%s', '-o', out, local], {
            stdio: 'ignore',
          }),
        ),
      );
      const id = randomUUID();
      await insertRun(services.db, {
        id,
        projectId: 'bench',
        pipelineName: pipeline.name,
        pipelineVersion: pipeline.version,
        params: { filename: 'volume_%s', compress: 'n' },
        inputSeries: [seriesUid],
        createdBy: 'bench',
      });
      const ms = await timed(() => executeRun({ db: services.db, config: runnerConfig, files }, id));
      const row = await getRun(services.db, id);
      if (row?.state !== 'succeeded') throw new Error(`pipeline run ${row?.state}: ${row?.error}`);
      pipelineMs.push(ms);
    }

    // Materialisation: the gateway's WADO-RS with a run token vs Orthanc's DICOMweb plugin, same series to files.
    const { mintRunToken } = await import('../../src/auth/run-tokens');
    const token = await mintRunToken(
      SECRET,
      { runId: randomUUID(), projectId: 'bench', series: [{ studyUid: study, seriesUid }] },
      600,
    );
    const target = { baseUrl: gw.url, projectId: 'bench', token, timeoutMs: 300_000 };
    const gwFetch: number[] = [];
    const pluginFetch: number[] = [];
    const auth = orthancAuth(stack);
    for (let r = 0; r < REPS; r++) {
      const d1 = join(scratch, `gw-${r}`);
      gwFetch.push(
        await timed(() =>
          fetchSeries(target, { studyUid: study, seriesUid }, d1, {
            maxInstances: 10_000,
            maxPartBytes: 1e9,
          }),
        ),
      );
      const d2 = join(scratch, `plugin-${r}`);
      pluginFetch.push(await timed(() => pluginSeries(stack.ORTHANC_URL, auth, study, seriesUid, d2)));
      rmSync(d1, { recursive: true });
      rmSync(d2, { recursive: true, force: true });
    }

    // Sandbox start: bubblewrap + prlimit running `true` vs a plain shell running `true`.
    const empty = join(scratch, 'empty');
    mkdirSync(empty);
    const limits = {
      timeoutMs: 60_000,
      cpuS: 60,
      memoryBytes: 2 ** 31,
      fileBytes: 2 ** 30,
      logMaxBytes: 4096,
    };
    const sandboxMs: number[] = [];
    const shellMs: number[] = [];
    for (let r = 0; r < REPS * 2; r++) {
      sandboxMs.push(
        await timed(() => runSandboxed({ command: 'true', inDir: empty, outDir: empty, limits })),
      );
      shellMs.push(await timed(() => execFileSync('/bin/sh', ['-c', 'true'])));
    }
    // The same in a run cgroup (what executeRun does where the host gives cgroups): make it with its limits, hand
    // the sandbox's pid over, remove it afterwards.
    const cg = await cgroupSupport(config);
    const cgroupMs: number[] = [];
    if (cg.available)
      for (let r = 0; r < REPS * 2; r++)
        cgroupMs.push(
          await timed(async () => {
            const run = await createRunCgroup(cg, `bench-${r}`, {
              memoryBytes: 2 ** 31,
              cpuCores: 1,
              pids: 4096,
            });
            try {
              await runSandboxed({
                command: 'true',
                inDir: empty,
                outDir: empty,
                limits,
                cgroupProcs: run.procsFiles,
              });
            } finally {
              await run.remove();
            }
          }),
        );

    // Store-back: 100 derived instances (new series) by STOW-RS through the gateway vs Orthanc's plugin.
    const derived = (tag: string) =>
      [
        ...generateInstances({
          patients: 1,
          instancesPerSeries: INSTANCES,
          modalities: ['MR'],
          rows: 256,
          cols: 256,
          seed: `bench-derived-${tag}`,
        }),
      ].map((s, i) => {
        const p = join(scratch, `derived-${tag}-${i}.dcm`);
        writeFileSync(p, s.buffer);
        return p;
      });
    const gwStore: number[] = [];
    const pluginStore: number[] = [];
    for (let r = 0; r < REPS; r++) {
      const a = derived(`gw-${r}`);
      gwStore.push(
        await timed(() => stowWithLength(`${gw.url}/projects/bench/dicom-web/studies`, `Bearer ${token}`, a)),
      );
      const b = derived(`plugin-${r}`);
      pluginStore.push(await timed(() => stowWithLength(`${stack.ORTHANC_URL}/dicom-web/studies`, auth, b)));
    }

    const rows: BenchRow[] = [];
    const hand = median(byHand);
    const full = median(pipelineMs);
    rows.push({
      metric: `dcm2niix on ${INSTANCES} MR instances: full pipeline run vs by hand on local files (medians of ${REPS})`,
      unit: 'ms',
      gateway: round(full),
      orthanc: round(hand),
      ratio: full / hand,
      ratioMeaning: 'pipeline / by hand (lower is better); Orthanc column = by hand',
      note: `overhead ${round(full - hand)} ms`,
    });
    rows.push({
      metric: `materialise ${INSTANCES} instances to files: gateway WADO-RS (run token) vs Orthanc DICOMweb plugin`,
      unit: 'ms',
      gateway: round(median(gwFetch)),
      orthanc: round(median(pluginFetch)),
      ratio: median(gwFetch) / median(pluginFetch),
      ratioMeaning: 'gateway / plugin (lower is better)',
    });
    rows.push({
      metric: `store back ${INSTANCES} derived instances by STOW-RS: gateway vs Orthanc DICOMweb plugin`,
      unit: 'ms',
      gateway: round(median(gwStore)),
      orthanc: round(median(pluginStore)),
      ratio: median(gwStore) / median(pluginStore),
      ratioMeaning: 'gateway / plugin (lower is better)',
    });
    rows.push({
      metric: `sandbox start (prlimit + bubblewrap running true) vs plain sh -c true (medians of ${REPS * 2})`,
      unit: 'ms',
      gateway: round(median(sandboxMs)),
      orthanc: round(median(shellMs)),
      note: 'Orthanc column = plain shell; no Orthanc counterpart',
    });
    if (cg.available)
      rows.push({
        metric: `sandbox start in a run cgroup (v${cg.version}: made with its limits, pid handed over, removed) vs plain sh -c true (medians of ${REPS * 2})`,
        unit: 'ms',
        gateway: round(median(cgroupMs)),
        orthanc: round(median(shellMs)),
        note: 'Orthanc column = plain shell; no Orthanc counterpart',
      });
    const load = loadavg()
      .map((x) => x.toFixed(2))
      .join(' ');
    return {
      suite: 'Pipelines: machinery overhead around dcm2niix',
      setup:
        `One gateway process (run tokens verified), pipeline run executed in the bench process (runner as in the ` +
        `worker), ${INSTANCES}-instance 256x256 MR series, ${REPS} repetitions, medians. Load average at the end: ${load}. ` +
        `Orthanc column: by-hand dcm2niix, Orthanc's DICOMweb plugin, or a plain shell as named per row. ` +
        (cg.available
          ? `Runs get cgroup v${cg.version} limits here.`
          : `Runs get rlimits only here (${cg.reason}).`),
      rows,
    };
  } finally {
    await closeServices(services);
    await gw.stop();
    rmSync(scratch, { recursive: true, force: true });
  }
}

/** The same series from Orthanc's DICOMweb plugin to files (the reference the gateway's materialisation is held to). */
async function pluginSeries(
  base: string,
  auth: string,
  study: string,
  series: string,
  dir: string,
): Promise<void> {
  await fetchSeries(
    { baseUrl: base, projectId: '', token: '', timeoutMs: 300_000 },
    { studyUid: study, seriesUid: series },
    dir,
    { maxInstances: 10_000, maxPartBytes: 1e9 },
    undefined,
    { url: `${base}/dicom-web/studies/${study}/series/${series}`, authorization: auth },
  );
  if (readdirSync(dir).length === 0) throw new Error('plugin returned no instances');
}

/**
 * STOW-RS of files with a Content-Length body (Orthanc 1.10's HTTP server refuses chunked request bodies), the same
 * client for the gateway and the plugin so that the two figures compare the servers.
 */
async function stowWithLength(url: string, authorization: string, files: string[]): Promise<void> {
  const r = await storeBatch(
    url,
    files.map((f) => readFileSync(f)),
    { headers: { authorization } },
  );
  if (r.status !== 200) throw new Error(`STOW-RS answered ${r.status}: ${r.error ?? ''}`);
}
