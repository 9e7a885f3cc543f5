/**
 * Scale-out throughput (issue 17): the same mixed load (STOW-RS of 2-instance requests, QIDO-RS study and series
 * queries, WADO-RS instance retrieves) against 1 gateway + 1 worker + 1 Orthanc and against 2 + 2 + 2 on one
 * PostgreSQL index and one storage folder, each behind a real HAProxy (so both pay the same proxy hop). On a 2-core
 * machine every process competes for the same cores: the ratio says what the extra processes cost or buy here, not
 * what a second machine would.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { freePort } from '../../tools/net';
import { multipartBody } from '../../tools/stow-client';
import { gatewayBackend, startHaproxy, startOrthancReplica, waitForEvery } from '../../test/helpers/balancer';
import { syntheticCopies } from '../../test/helpers/dimse';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, type GatewayProcess, type StackEnv, startGatewayProcess } from '../lib/stack';
import { percentile, round } from '../lib/stats';

const ROOT = join(__dirname, '../..');
const TEMPLATE = join(ROOT, '../shared/dicom-samples/ct/CT_small.dcm');
const SECONDS = Number(process.env.BENCH_SCALE_SECONDS ?? 30);
const WARMUP_SECONDS = Number(process.env.BENCH_SCALE_WARMUP_SECONDS ?? 10);
const WRITERS = Number(process.env.BENCH_SCALE_WRITERS ?? 4);
const READERS = Number(process.env.BENCH_SCALE_READERS ?? 8);
const PROJECT = 'scaleout';

function startWorker(env: StackEnv): ChildProcess {
  return spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/worker.ts')], {
    cwd: ROOT,
    env: { ...process.env, ...env, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
}

interface Outcome {
  storedPerS: number;
  readsPerS: number;
  readP95: number;
  errors: number;
}

/** Runs the mixed load for SECONDS against `gw` (the balancer's gateway frontend). */
async function load(gw: string, tmp: string, label: string, seconds: number): Promise<Outcome> {
  const agent = new Agent({ connections: WRITERS + READERS, keepAliveTimeout: 10_000 });
  const deadline = Date.now() + seconds * 1000;
  let stored = 0;
  let errors = 0;
  const readMs: number[] = [];
  const studies: string[] = [];
  let batch = 0;
  const writer = async () => {
    while (Date.now() < deadline) {
      const copies = syntheticCopies(TEMPLATE, join(tmp, `${label}-${batch++}`), 2);
      const body = multipartBody(copies.map((c) => readFileSync(c.path)));
      const res = await request(`${gw}/projects/${PROJECT}/dicom-web/studies`, {
        method: 'POST',
        dispatcher: agent,
        headers: { 'content-type': body.contentType, accept: 'application/dicom+json' },
        body: Readable.from(body.chunks()),
      }).catch(() => undefined);
      if (!res) {
        errors++;
        continue;
      }
      await res.body.dump();
      if (res.statusCode === 200) {
        stored += copies.length;
        studies.push(copies[0].studyUid);
      } else errors++;
    }
  };
  const reader = async (n: number) => {
    for (let i = 0; Date.now() < deadline; i++) {
      const study = studies[(n * 7 + i) % Math.max(1, studies.length)];
      const url =
        i % 3 === 0 || !study
          ? `${gw}/projects/${PROJECT}/dicom-web/studies?limit=20&offset=${i % 50}`
          : i % 3 === 1
            ? `${gw}/projects/${PROJECT}/dicom-web/studies/${study}/series`
            : `${gw}/projects/${PROJECT}/dicom-web/studies/${study}/instances?limit=5`;
      const t = Date.now();
      const res = await request(url, { dispatcher: agent }).catch(() => undefined);
      if (!res) {
        errors++;
        continue;
      }
      await res.body.dump();
      if (res.statusCode === 200 || res.statusCode === 204) readMs.push(Date.now() - t);
      else errors++;
    }
  };
  const t0 = Date.now();
  await Promise.all([
    ...Array.from({ length: WRITERS }, writer),
    ...Array.from({ length: READERS }, (_, n) => reader(n)),
  ]);
  const s = (Date.now() - t0) / 1000;
  await agent.close();
  return {
    storedPerS: stored / s,
    readsPerS: readMs.length / s,
    readP95: percentile(readMs, 95),
    errors,
  };
}

/** One configuration: `n` gateways, workers and Orthancs behind one HAProxy; the load; everything stopped after. */
async function configuration(
  stack: StackEnv,
  orthancs: Array<{ http: number }>,
  n: number,
  tmp: string,
  round: number,
): Promise<Outcome> {
  const ports = { gw: await freePort(), rest: await freePort() };
  const gwPorts = await Promise.all(Array.from({ length: n }, () => freePort()));
  const proxy = await startHaproxy([
    'frontend gateways',
    '  mode http',
    `  bind 127.0.0.1:${ports.gw}`,
    '  default_backend gateways',
    ...gatewayBackend(
      'gateways',
      Object.fromEntries(gwPorts.map((p, i) => [`g${i + 1}`, `http://127.0.0.1:${p}`])),
    ),
    'frontend orthanc-rest',
    '  mode http',
    `  bind 127.0.0.1:${ports.rest}`,
    '  default_backend orthancs',
    'backend orthancs',
    '  mode http',
    '  balance roundrobin',
    ...orthancs.slice(0, n).map((o, i) => `  server o${i + 1} 127.0.0.1:${o.http} check inter 1s`),
  ]);
  const env = { ...stack, ORTHANC_URL: `http://127.0.0.1:${ports.rest}` };
  const gateways: GatewayProcess[] = [];
  const workers: ChildProcess[] = [];
  try {
    for (const p of gwPorts)
      gateways.push(await startGatewayProcess(env, p, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'true' }));
    for (let i = 0; i < n; i++) workers.push(startWorker(env));
    await waitForEvery(
      `http://127.0.0.1:${ports.gw}`,
      gwPorts.map((_, i) => `g${i + 1}`),
    );
    await createProject(gateways[0].url, PROJECT, 'Scale-out bench');
    // Warm-up: connections, JIT, caches.
    await load(`http://127.0.0.1:${ports.gw}`, tmp, `warm${n}-${round}`, WARMUP_SECONDS).catch(
      () => undefined,
    );
    return await load(`http://127.0.0.1:${ports.gw}`, tmp, `run${n}-${round}`, SECONDS);
  } finally {
    await Promise.all(gateways.map((g) => g.stop()));
    for (const w of workers) w.kill('SIGTERM');
    await proxy.stop();
  }
}

export async function run(stack: StackEnv): Promise<SuiteResult> {
  const stackDir = process.env.BENCH_STACK_DIR ?? join(ROOT, '.stack/bench');
  const tmp = mkdtempSync(join(tmpdir(), 'aperture-bench-scale-'));
  const o1 = { http: Number(new URL(stack.ORTHANC_URL).port) };
  const replica = await startOrthancReplica(stackDir, stack);
  const loadBefore = (await import('node:os')).loadavg()[0];
  try {
    // A B B A: the archive grows with every run (each STOW request is a new study), so the order alternates and each
    // configuration's figure is the mean of its two runs.
    const a1 = await configuration(stack, [o1, replica], 1, tmp, 1);
    const b1 = await configuration(stack, [o1, replica], 2, tmp, 1);
    const b2 = await configuration(stack, [o1, replica], 2, tmp, 2);
    const a2 = await configuration(stack, [o1, replica], 1, tmp, 2);
    const mean = (x: Outcome, y: Outcome): Outcome => ({
      storedPerS: (x.storedPerS + y.storedPerS) / 2,
      readsPerS: (x.readsPerS + y.readsPerS) / 2,
      readP95: (x.readP95 + y.readP95) / 2,
      errors: x.errors + y.errors,
    });
    const one = mean(a1, a2);
    const two = mean(b1, b2);
    const runs = (x: Outcome, y: Outcome, f: (o: Outcome) => number) => `${round(f(x))} and ${round(f(y))}`;
    const loadAfter = (await import('node:os')).loadavg()[0];
    const rows: BenchRow[] = [
      {
        metric: `STOW-RS instances stored per second (${WRITERS} writers of 2-instance requests, ${SECONDS} s)`,
        unit: 'inst/s',
        gateway: round(two.storedPerS),
        orthanc: round(one.storedPerS),
        ratio: round(two.storedPerS / one.storedPerS),
        ratioMeaning: '2x2x2 / 1x1x1',
      },
      {
        metric: `QIDO-RS reads per second beside it (${READERS} readers: studies, series, instances)`,
        unit: 'req/s',
        gateway: round(two.readsPerS),
        orthanc: round(one.readsPerS),
        ratio: round(two.readsPerS / one.readsPerS),
        ratioMeaning: '2x2x2 / 1x1x1',
      },
      {
        metric: 'QIDO-RS read latency p95 under the mixed load',
        unit: 'ms',
        gateway: round(two.readP95),
        orthanc: round(one.readP95),
        ratio: round(two.readP95 / one.readP95),
        ratioMeaning: '2x2x2 / 1x1x1 (lower is better)',
      },
      {
        metric: 'failed requests (non-2xx or refused) in the measured runs',
        unit: 'requests',
        gateway: two.errors,
        orthanc: one.errors,
      },
    ];
    const cores = (await import('node:os')).cpus().length;
    return {
      suite: 'scaleout: 2 gateways x 2 workers x 2 Orthancs vs 1 of each, same machine',
      setup:
        `Both configurations behind a real HAProxy on the same stack (one PostgreSQL index and one storage folder for ` +
        `both Orthancs), run in the order 1x1x1, 2x2x2, 2x2x2, 1x1x1 (means of the two runs each), each run after a ` +
        `${WARMUP_SECONDS} s warm-up; gateways and workers as their own ` +
        `processes. The "Orthanc direct" column holds the 1x1x1 configuration. Load average (1 min) before and ` +
        `after: ${round(loadBefore)}, ${round(loadAfter)}, on ${cores} cores: every added process competes for the ` +
        `same cores, so the ratio says what scale-out costs or buys on one machine, not what a second machine would. ` +
        `Single runs: 1x1x1 (first, last) STOW ${runs(a1, a2, (o) => o.storedPerS)} inst/s, reads ` +
        `${runs(a1, a2, (o) => o.readsPerS)} req/s; 2x2x2 (second, third) STOW ${runs(b1, b2, (o) => o.storedPerS)} ` +
        `inst/s, reads ${runs(b1, b2, (o) => o.readsPerS)} req/s.`,
      rows,
    };
  } finally {
    replica.child.kill('SIGTERM');
    rmSync(tmp, { recursive: true, force: true });
  }
}
