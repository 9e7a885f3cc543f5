import { type ChildProcess, spawn } from 'node:child_process';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { groupByStudy, generateInstances } from '../../tools/synth';
import { stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import {
  anonymizeInOrthanc,
  createProject,
  orthancAuth,
  type StackEnv,
  startGatewayProcess,
  storeInOrthanc,
} from '../lib/stack';
import { msSince, round, summarise } from '../lib/stats';

const STUDIES = Number(process.env.BENCH_DEID_STUDIES ?? 4);
const PER_SERIES = Number(process.env.BENCH_DEID_INSTANCES ?? 50);
const ROOT = join(__dirname, '../..');
/** COHORT_CONCURRENCY's default (src/config.ts), when the environment does not set it. */
const DEFAULT_LANES = 8;

/** The worker process (src/worker.ts) with the stack's settings: it runs the cohort, as in production. */
function startWorker(stack: StackEnv): ChildProcess {
  // BENCH_DEID_WORKER_ARGS: extra Node options for the worker, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`.
  const extra = (process.env.BENCH_DEID_WORKER_ARGS ?? '').split(' ').filter(Boolean);
  return spawn(process.execPath, [...extra, '--import', 'tsx', join(ROOT, 'src/worker.ts')], {
    cwd: ROOT,
    env: { ...process.env, ...stack, LOG_LEVEL: 'warn' },
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}

/** The gateway's event-loop delay p99 and max (ms) since the last scrape: prom-client's monitorEventLoopDelay histogram resets on every scrape. */
async function eventLoopDelay(gatewayUrl: string): Promise<{ p99: number; max: number }> {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  const value = (name: string) => {
    const m = new RegExp(
      `^aperture_process_nodejs_eventloop_lag_${name}_seconds(?:\\{[^}]*\\})? ([0-9.e+-]+)$`,
      'm',
    ).exec(text);
    if (!m) throw new Error(`/metrics has no event-loop ${name}`);
    return Number(m[1]) * 1000;
  };
  return { p99: value('p99'), max: value('max') };
}

/** Samples GET /healthz every 100 ms until stopped: what a client sees of the HTTP process meanwhile. */
function sampleHealth(gatewayUrl: string): { stop(): Promise<number[]> } {
  const ms: number[] = [];
  let running = true;
  const loop = (async () => {
    while (running) {
      const t = process.hrtime.bigint();
      await (await fetch(`${gatewayUrl}/healthz`)).arrayBuffer();
      ms.push(msSince(t));
      await new Promise((r) => setTimeout(r, 100));
    }
  })();
  return {
    stop: async () => {
      running = false;
      await loop;
      return ms;
    },
  };
}

/** STUDIES studies of one PER_SERIES-instance 512x512 CT series, disjoint per seed. */
function ctSeries(seed: string) {
  return generateInstances({
    patients: STUDIES,
    studiesPerPatient: 1,
    seriesPerStudy: 1,
    instancesPerSeries: PER_SERIES,
    modalities: ['CT'],
    rows: 512,
    cols: 512,
    seed,
  });
}

/**
 * De-identify and store: a cohort of STUDIES 512x512 CT series (worker process, Basic Profile) against Orthanc's
 * own `POST /studies/{id}/anonymize` of the same studies in the same run, and the gateway's event-loop delay while
 * the cohort runs.
 */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const gw = await startGatewayProcess(stack, 18091, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' });
  const worker = startWorker(stack);
  const rows: BenchRow[] = [];
  const load: number[] = [];
  try {
    await createProject(gw.url, 'deid-src', 'De-identification source');
    const instances = [...ctSeries('bench-deid')];
    const studyUids = [...groupByStudy(instances)].map((s) => s[0].studyInstanceUid);
    const total = instances.length;
    // One instance per request, retried: on a loaded machine a multi-megabyte request now and then loses its answer.
    let next = 0;
    await Promise.all(
      [0, 1].map(async () => {
        for (let i = next++; i < total; i = next++) {
          for (let attempt = 1; ; attempt++) {
            const r = await stowInstances([instances[i].buffer], {
              baseUrl: `${gw.url}/projects/deid-src/dicom-web`,
              batch: 1,
              keepResults: false,
            });
            if (r.ok === 1) break;
            if (attempt === 3)
              throw new Error(`could not load the source studies: ${JSON.stringify(r.statuses)}`);
          }
        }
      }),
    );

    // Orthanc: every study's anonymize request at once; its job engine runs them with its own concurrency.
    const auth = { authorization: orthancAuth(stack) };
    const ids = await Promise.all(
      studyUids.map(async (uid) => {
        const r = (await (
          await fetch(`${stack.ORTHANC_URL}/tools/lookup`, { method: 'POST', headers: auth, body: uid })
        ).json()) as Array<{ ID: string; Type: string }>;
        return r.find((x) => x.Type === 'Study')!.ID;
      }),
    );
    const anonymize = (): Promise<number> => anonymizeInOrthanc(stack, ids, total);
    load.push(loadavg()[0]);
    const orthancBefore = await anonymize();

    // Idle reference for the event loop and /healthz, then the cohort.
    await eventLoopDelay(gw.url);
    const idleHealth = sampleHealth(gw.url);
    await new Promise((r) => setTimeout(r, 5000));
    const idleMs = await idleHealth.stop();
    const idle = await eventLoopDelay(gw.url);

    load.push(loadavg()[0]);
    const busyHealth = sampleHealth(gw.url);
    const t1 = process.hrtime.bigint();
    const created = await fetch(`${gw.url}/api/projects/deid-src/cohorts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        name: 'bench',
        studies: studyUids,
        target: { new: { id: 'deid-research', name: 'De-identified' } },
      }),
    });
    if (created.status !== 202) throw new Error(`cohort: HTTP ${created.status}`);
    const { id } = (await created.json()) as { id: string };
    let cohort: { state: string; progress: { done: number; failed: number; withheld: number } };
    for (;;) {
      cohort = (await (await fetch(`${gw.url}/api/cohorts/${id}`)).json()) as typeof cohort;
      if (cohort.state === 'done') break;
      if (worker.exitCode !== null) throw new Error('the worker exited');
      await new Promise((r) => setTimeout(r, 200));
    }
    const gatewayRate = cohort.progress.done / (msSince(t1) / 1000);
    const busyMs = await busyHealth.stop();
    const busy = await eventLoopDelay(gw.url);
    load.push(loadavg()[0]);
    // Orthanc again after the cohort: other work on a shared machine drifts, so the cohort is bracketed by two
    // Orthanc runs and compared with their mean.
    const orthancAfter = await anonymize();
    const orthancRate = (orthancBefore + orthancAfter) / 2;

    // The floor under the cohort: Orthanc's own work for it, without the gateway. Objects of the same size and
    // kind (another seed, so new UIDs) stored by POST /instances, as many in flight as the cohort has lanes; then the
    // same with a read of one source file before each store, which is all the archive does for a cohort instance.
    const lanes = Number(process.env.COHORT_CONCURRENCY ?? DEFAULT_LANES);
    const other = (seed: string) => [...ctSeries(seed)];
    const sourceIds = (
      await Promise.all(
        ids.map(
          async (sid) =>
            (await (
              await fetch(`${stack.ORTHANC_URL}/studies/${sid}/instances`, { headers: auth })
            ).json()) as Array<{ ID: string }>,
        ),
      )
    ).flatMap((list) => list.map((x) => x.ID));
    let retries = 0;
    const storeDirect = async (objs: Array<{ buffer: Buffer }>, read: boolean): Promise<number> => {
      const readSource = async (i: number) => {
        const r = await fetch(`${stack.ORTHANC_URL}/instances/${sourceIds[i % sourceIds.length]}/file`, {
          headers: auth,
        });
        if (!r.ok) throw new Error(`Orthanc read: HTTP ${r.status}`);
        await r.arrayBuffer();
      };
      const out = await storeInOrthanc(stack, objs, lanes, read ? readSource : undefined);
      retries += out.retries;
      return out.rate;
    };
    load.push(loadavg()[0]);
    const storeRate = await storeDirect(other('bench-deid-floor-store'), false);
    const readStoreRate = await storeDirect(other('bench-deid-floor-read-store'), true);
    load.push(loadavg()[0]);

    rows.push({
      metric: `de-identify and store, ${STUDIES} studies x ${PER_SERIES} CT 512x512 (${cohort.progress.done} done, ${cohort.progress.failed} failed; Orthanc before ${round(orthancBefore)}, after ${round(orthancAfter)} inst/s)`,
      unit: 'inst/s',
      gateway: gatewayRate,
      orthanc: orthancRate,
      ratio: gatewayRate / orthancRate,
      ratioMeaning: 'cohort / Orthanc /anonymize',
      target: '≥ 1.5',
      met: gatewayRate / orthancRate >= 1.5 && cohort.progress.done === total,
    });
    rows.push({
      metric: `gateway event-loop delay p99 while the cohort runs (max ${round(busy.max)} ms; idle p99 ${round(idle.p99)} ms, max ${round(idle.max)} ms)`,
      unit: 'ms',
      gateway: busy.p99,
      target: 'p99 < 50 ms',
      met: busy.p99 < 50,
    });
    rows.push({
      metric: `reference: Orthanc POST /instances of ${total} other 512x512 CT, ${lanes} in flight (floor of the store)`,
      unit: 'inst/s',
      gateway: storeRate,
      orthanc: orthancRate,
      ratio: storeRate / orthancRate,
      ratioMeaning: 'Orthanc store / Orthanc /anonymize',
    });
    rows.push({
      metric: `reference: Orthanc GET a source file + POST /instances, ${total}, ${lanes} in flight (the archive's part of a cohort; ${retries} stores retried in the two)`,
      unit: 'inst/s',
      gateway: readStoreRate,
      orthanc: orthancRate,
      ratio: readStoreRate / orthancRate,
      ratioMeaning: 'Orthanc read+store / Orthanc /anonymize',
    });
    const b = summarise(busyMs);
    const i = summarise(idleMs);
    rows.push({
      metric: `GET /healthz every 100 ms while the cohort runs, p99 (${b.n} requests; p50 ${b.p50} ms; idle p99 ${i.p99} ms)`,
      unit: 'ms',
      gateway: b.p99,
    });
    return {
      suite: 'De-identification: cohort vs Orthanc /anonymize',
      setup:
        `${total} synthetic 512x512 CT instances (${STUDIES} studies of one series) stored through STOW-RS. Orthanc: ` +
        `POST /studies/{id}/anonymize for every study at once (Synchronous, its job engine's own concurrency), before and again after the cohort (the mean of the two is the Orthanc figure). ` +
        `Gateway: one cohort of the same studies (Basic Profile) run by one worker process (src/worker.ts, ` +
        `COHORT_CONCURRENCY ${lanes}): read from Orthanc, de-identify, leak check, ` +
        `store into Orthanc and index, timed from POST to state done (polled every 200 ms). Event-loop delay is the ` +
        `gateway's own perf_hooks monitorEventLoopDelay histogram (prom-client, reset on every /metrics scrape). ` +
        `Orthanc store floor: other objects of the same size and kind by POST /instances with as many in flight as the ` +
        `cohort has lanes, alone and after a GET of a source file each. ` +
        `Load average (1 min) before Orthanc, before the cohort, after it, before the floor, after it: ${load.map((l) => round(l)).join(', ')}.`,
      rows,
    };
  } finally {
    worker.kill('SIGTERM');
    await gw.stop();
  }
}
