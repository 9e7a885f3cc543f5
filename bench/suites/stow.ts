/**
 * STOW-RS ingest, gateway vs Orthanc's own DICOMweb plugin, in the two shapes uploaders use: one instance per
 * request and a series of 100 instances per request. Several rounds, each side going first in turn, so the spread
 * of the ratio on a shared machine shows; plus the gateway's CPU time per instance (load-independent) and how soon
 * a stored object answers QIDO after the STOW response.
 */
import { request } from 'undici';
import { generateInstances } from '../../tools/synth';
import { singleInstanceStudies } from '../lib/studies';
import { stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import {
  cpuMsOf,
  cpuMsOfTree,
  createProject,
  orthancAuth,
  stackPid,
  type StackEnv,
  startGatewayProcess,
} from '../lib/stack';
import { msSince, round, summarise } from '../lib/stats';

const ROUNDS = Number(process.env.BENCH_STOW_ROUNDS ?? 3);
/** Single-instance requests per side per round. */
const SINGLE_N = Number(process.env.BENCH_STOW_SINGLE_N ?? 200);
/** Series of 100 per side per round. */
const SERIES_N = Number(process.env.BENCH_STOW_SERIES_N ?? 3);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const VISIBLE_N = Number(process.env.BENCH_STOW_VISIBLE_N ?? 100);
/** Shapes to run (comma-separated: single, series); both by default. */
const SHAPES = (process.env.BENCH_STOW_SHAPES ?? 'single,series').split(',').map((s) => s.trim());
/** Node options for the gateway process, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` for a profiling run. */
const GATEWAY_NODE_ARGS = (process.env.BENCH_STOW_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);

/**
 * The floor both STOW-RS sides share: Orthanc's REST `POST /instances`, one object per call, `batch` objects one
 * after the other per client (as the plugin and the gateway store the parts of one request), `concurrency` clients.
 */
async function postInstances(
  stack: StackEnv,
  objects: readonly Buffer[],
  batch: number,
  concurrency: number,
): Promise<{ seconds: number; failed: number }> {
  const url = `${stack.ORTHANC_URL.replace(/\/+$/, '')}/instances`;
  const authorization = orthancAuth(stack);
  let next = 0;
  let failed = 0;
  const started = process.hrtime.bigint();
  const worker = async () => {
    for (let at = next; at < objects.length; at = next) {
      next += batch;
      for (const obj of objects.slice(at, at + batch)) {
        const res = await request(url, {
          method: 'POST',
          headers: { authorization, 'content-type': 'application/dicom' },
          body: obj,
        });
        await res.body.text();
        if (res.statusCode !== 200) failed++;
      }
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { seconds: msSince(started) / 1000, failed };
}

function singles(seed: string, n: number): Buffer[] {
  return [...singleInstanceStudies(seed, n)];
}

function series(seed: string, n: number): Buffer[][] {
  const out: Buffer[][] = [];
  let cur: Buffer[] = [];
  for (const s of generateInstances({
    patients: n,
    studiesPerPatient: 1,
    seriesPerStudy: 1,
    instancesPerSeries: 100,
    rows: 64,
    cols: 64,
    seed,
  })) {
    cur.push(s.buffer);
    if (cur.length === 100) {
      out.push(cur);
      cur = [];
    }
  }
  return out;
}

/** STOW-RS rate in both shapes over several rounds, gateway CPU per instance, QIDO visibility after STOW. */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const gw = await startGatewayProcess(
    stack,
    18081,
    { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' },
    GATEWAY_NODE_ARGS,
  );
  // On a loaded machine the gateway may need longer than startGatewayProcess waits.
  for (let i = 0; ; i++) {
    const up = await fetch(`${gw.url}/healthz`).then(
      (r) => r.ok,
      () => false,
    );
    if (up) break;
    if (i > 600) throw new Error('the gateway did not start');
    await new Promise((r) => setTimeout(r, 200));
  }
  const orthancDicomweb =
    stack.ORTHANC_URL.replace('://', `://${stack.ORTHANC_USERNAME}:${stack.ORTHANC_PASSWORD}@`) +
    '/dicom-web';
  const rows: BenchRow[] = [];
  try {
    await createProject(gw.url, 'bench', 'Benchmark');
    const gwRoot = `${gw.url}/projects/bench/dicom-web`;
    // Warm both sides (JIT, connections, Orthanc's first writes).
    await stowInstances(singles('stow-warm-gw', 20), { baseUrl: gwRoot, batch: 1, concurrency: CONCURRENCY });
    await stowInstances(singles('stow-warm-or', 20), {
      baseUrl: orthancDicomweb,
      batch: 1,
      concurrency: CONCURRENCY,
    });

    const shapes = [
      { name: 'single', label: `single-instance requests (${SINGLE_N} per round)`, batch: 1 },
      { name: 'series', label: `series of 100 instances per request (${SERIES_N} per round)`, batch: 100 },
    ] as const;
    for (const shape of shapes.filter((s) => SHAPES.includes(s.name))) {
      const ratios: number[] = [];
      const floorRatios: number[] = [];
      const gwRates: number[] = [];
      const orRates: number[] = [];
      const restRates: number[] = [];
      const cpuPerInstance: number[] = [];
      // CPU ms per instance of each process group, per side: where the gateway's extra work lands.
      const pgPid = stackPid('pg/postmaster.pid');
      const orthancPid = stackPid('orthanc/orthanc.pid');
      const cpuSides: Record<'gw' | 'or' | 'rest', { pg: number[]; orthanc: number[]; client: number[] }> = {
        gw: { pg: [], orthanc: [], client: [] },
        or: { pg: [], orthanc: [], client: [] },
        rest: { pg: [], orthanc: [], client: [] },
      };
      const accounted = async <T>(side: 'gw' | 'or' | 'rest', n: number, f: () => Promise<T>): Promise<T> => {
        const pg0 = cpuMsOfTree(pgPid);
        const or0 = cpuMsOf(orthancPid);
        const cl0 = process.cpuUsage();
        const out = await f();
        const cl = process.cpuUsage(cl0);
        cpuSides[side].pg.push((cpuMsOfTree(pgPid) - pg0) / n);
        cpuSides[side].orthanc.push((cpuMsOf(orthancPid) - or0) / n);
        cpuSides[side].client.push((cl.user + cl.system) / 1000 / n);
        return out;
      };
      let failed = 0;
      let orFailed = 0;
      for (let r = 0; r < ROUNDS; r++) {
        const make = (side: string) =>
          shape.batch === 1
            ? singles(`stow-${shape.name}-${side}-${r}`, SINGLE_N)
            : series(`stow-${shape.name}-${side}-${r}`, SERIES_N).flat();
        const gwSet = make('gw');
        const orSet = make('or');
        const restSet = make('rest');
        const measureGw = () => accounted('gw', gwSet.length, measureGwRaw);
        const measureOr = () => accounted('or', orSet.length, measureOrRaw);
        const measureRest = () => accounted('rest', restSet.length, measureRestRaw);
        const measureGwRaw = async () => {
          const cpu0 = cpuMsOf(gw.pid);
          const t = process.hrtime.bigint();
          const res = await stowInstances(gwSet, {
            baseUrl: gwRoot,
            batch: shape.batch,
            concurrency: CONCURRENCY,
            keepResults: false,
          });
          const s = msSince(t) / 1000;
          cpuPerInstance.push((cpuMsOf(gw.pid) - cpu0) / gwSet.length);
          failed += res.failed + res.partial;
          return gwSet.length / s;
        };
        const measureOrRaw = async () => {
          const t = process.hrtime.bigint();
          const res = await stowInstances(orSet, {
            baseUrl: orthancDicomweb,
            batch: shape.batch,
            concurrency: CONCURRENCY,
            keepResults: false,
          });
          orFailed += res.failed + res.partial;
          return orSet.length / (msSince(t) / 1000);
        };
        const measureRestRaw = async () => {
          const res = await postInstances(stack, restSet, shape.batch, CONCURRENCY);
          orFailed += res.failed;
          return restSet.length / res.seconds;
        };
        let g: number;
        let o: number;
        let f: number;
        if (r % 2 === 0) {
          g = await measureGw();
          o = await measureOr();
          f = await measureRest();
        } else {
          f = await measureRest();
          o = await measureOr();
          g = await measureGw();
        }
        gwRates.push(g);
        orRates.push(o);
        restRates.push(f);
        ratios.push(g / o);
        floorRatios.push(g / f);
      }
      const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      const ratio = median(ratios);
      rows.push({
        metric: `STOW-RS ingest, ${shape.label}, ${CONCURRENCY} in flight, median of ${ROUNDS} rounds`,
        unit: 'inst/s',
        gateway: median(gwRates),
        orthanc: median(orRates),
        ratio,
        ratioMeaning: 'gateway / Orthanc DICOMweb plugin',
        target: '≥ 0.85',
        met: ratio >= 0.85,
        note:
          `ratios per round ${ratios.map(round).join(', ')}; gateway CPU ${round(median(cpuPerInstance))} ms/instance ` +
          `(rounds ${cpuPerInstance.map(round).join(', ')})` +
          (failed || orFailed ? `; requests not all stored: gateway ${failed}, Orthanc ${orFailed}` : ''),
      });
      rows.push({
        metric: `↳ reference: Orthanc REST POST /instances, same shape (${shape.batch} after one another per client)`,
        unit: 'inst/s',
        gateway: median(gwRates),
        orthanc: median(restRates),
        ratio: median(floorRatios),
        ratioMeaning: 'gateway / Orthanc REST',
        target: '—',
        note: `ratios per round ${floorRatios.map(round).join(', ')}; plugin / REST ${round(median(orRates) / median(restRates))}`,
      });
      const cpuNote = (side: 'gw' | 'or' | 'rest') =>
        `PostgreSQL ${round(median(cpuSides[side].pg))}, Orthanc ${round(median(cpuSides[side].orthanc))}, ` +
        `client ${round(median(cpuSides[side].client))}`;
      rows.push({
        metric: `↳ CPU per instance (median of rounds): gateway process on the gateway side; PostgreSQL and Orthanc in note`,
        unit: 'ms',
        gateway: median(cpuPerInstance),
        note: `gateway side: ${cpuNote('gw')}; plugin side: ${cpuNote('or')}; REST side: ${cpuNote('rest')}`,
      });
    }

    // Visibility: each instance STOWed alone, then one QIDO for it right after the response.
    const visible: number[] = [];
    let missing = 0;
    for (const buf of singles('stow-visible', VISIBLE_N)) {
      const res = await stowInstances([buf], { baseUrl: gwRoot, batch: 1, concurrency: 1 });
      const body = res.results[0]?.body as Record<
        string,
        { Value?: Array<Record<string, { Value?: unknown[] }>> }
      >;
      const sop = String(body?.['00081199']?.Value?.[0]?.['00081155']?.Value?.[0]);
      const t = process.hrtime.bigint();
      for (;;) {
        const q = await fetch(`${gw.url}/projects/bench/dicom-web/instances?SOPInstanceUID=${sop}`, {
          headers: { accept: 'application/dicom+json' },
        });
        const text = await q.text();
        if (text && (JSON.parse(text) as unknown[]).length === 1) break;
        missing++;
        if (msSince(t) > 5000) throw new Error(`instance ${sop} not visible 5 s after its STOW response`);
      }
      visible.push(msSince(t));
    }
    const v = summarise(visible);
    rows.push({
      metric: `STOW response → visible in QIDO, ${VISIBLE_N} instances (p95; p50 ${v.p50} ms)`,
      unit: 'ms',
      gateway: v.p95,
      target: 'p95 ≤ 500 ms',
      met: v.p95 <= 500,
      note: `QIDO requests that did not yet find the instance: ${missing}`,
    });
    return {
      suite: 'STOW-RS ingest shapes (issue 15)',
      setup:
        `Synthetic 64x64 CT/MR/CR (~9.5 KB each). Gateway: one process, auth off, indexer off. Orthanc 1.10 with its ` +
        `DICOMweb plugin, same stack and machine, loopback. Each round stores a fresh disjoint set on each side, ` +
        `the side going first alternating; gateway CPU from /proc (user + system) over its part of the round.`,
      rows,
    };
  } finally {
    await gw.stop();
  }
}
