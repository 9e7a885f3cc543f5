import { singleInstanceStudies } from '../lib/studies';
import { stowInstances } from '../../tools/stow-client';
import { qidoShapes, timeQido } from '../lib/qido';
import type { BenchRow, SuiteResult } from '../lib/report';
import {
  createProject,
  orthancAuth,
  orthancIndexName,
  type StackEnv,
  startGatewayProcess,
} from '../lib/stack';
import { msSince, timedPool } from '../lib/stats';

const STUDIES = Number(process.env.BENCH_STUDIES ?? 10_000);
const INGEST_N = Number(process.env.BENCH_INGEST_N ?? 1_000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 4);
const QIDO_REPS = Number(process.env.BENCH_QIDO_REPS ?? 200);
const ORTHANC_QIDO_REPS = Number(process.env.BENCH_ORTHANC_QIDO_REPS ?? 20);

/** STOW-RS ingest rate and QIDO-RS latency at STUDIES studies: gateway vs Orthanc's DICOMweb plugin. */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const gw = await startGatewayProcess(stack, 18080, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' });
  const orthancDicomweb =
    stack.ORTHANC_URL.replace('://', `://${stack.ORTHANC_USERNAME}:${stack.ORTHANC_PASSWORD}@`) +
    '/dicom-web';
  const rows: BenchRow[] = [];
  try {
    await createProject(gw.url, 'bench', 'Benchmark');
    const gwRoot = `${gw.url}/projects/bench/dicom-web`;

    // Ingest: two disjoint synthetic sets of the same shape, interleaved halves so that neither side always goes
    // first on a warmer (or fuller) archive. One study of one instance per request, CONCURRENCY in flight.
    const setGw = [...singleInstanceStudies('bench-gateway', INGEST_N)];
    const setOr = [...singleInstanceStudies('bench-orthanc', INGEST_N)];
    const half = Math.floor(INGEST_N / 2);
    let gwSeconds = 0;
    let orSeconds = 0;
    let gwFailed = 0;
    let orFailed = 0;
    for (const [from, to] of [
      [0, half],
      [half, INGEST_N],
    ]) {
      const a = await stowInstances(setGw.slice(from, to), {
        baseUrl: gwRoot,
        batch: 1,
        concurrency: CONCURRENCY,
        keepResults: false,
      });
      gwSeconds += a.seconds;
      gwFailed += a.failed + a.partial;
      const b = await stowInstances(setOr.slice(from, to), {
        baseUrl: orthancDicomweb,
        batch: 1,
        concurrency: CONCURRENCY,
        keepResults: false,
      });
      orSeconds += b.seconds;
      orFailed += b.failed + b.partial;
    }
    const gwRate = INGEST_N / gwSeconds;
    const orRate = INGEST_N / orSeconds;
    rows.push({
      metric: `STOW-RS ingest, ${INGEST_N} single-instance studies, ${CONCURRENCY} in flight`,
      unit: 'inst/s',
      gateway: gwRate,
      orthanc: orRate,
      ratio: gwRate / orRate,
      ratioMeaning: 'gateway / Orthanc',
      target: '≥ 0.85',
      met: gwRate / orRate >= 0.85,
      note: gwFailed || orFailed ? `failed requests: gateway ${gwFailed}, Orthanc ${orFailed}` : undefined,
    });
    // Orthanc REST POST /instances: the archive's own floor, without any DICOMweb layer.
    const setRest = [...singleInstanceStudies('bench-rest', Math.min(INGEST_N, 500))];
    const t = process.hrtime.bigint();
    await timedPool(setRest.length, CONCURRENCY, async (i) => {
      const res = await fetch(`${stack.ORTHANC_URL}/instances`, {
        method: 'POST',
        headers: { authorization: orthancAuth(stack), 'content-type': 'application/dicom' },
        body: setRest[i],
      });
      await res.arrayBuffer();
    });
    const restRate = setRest.length / (msSince(t) / 1000);
    rows.push({
      metric: 'reference: Orthanc REST POST /instances (no DICOMweb)',
      unit: 'inst/s',
      gateway: gwRate,
      orthanc: restRate,
      ratio: gwRate / restRate,
      ratioMeaning: 'gateway / Orthanc REST',
    });

    // Fill the index to STUDIES studies, and index the Orthanc-side sets too, so both sides answer over the same data.
    const fill = Math.max(0, STUDIES - 2 * INGEST_N - setRest.length);
    await stowInstances(setOr, { baseUrl: gwRoot, batch: 1, concurrency: CONCURRENCY, keepResults: false });
    await stowInstances(setRest, { baseUrl: gwRoot, batch: 1, concurrency: CONCURRENCY, keepResults: false });
    await stowInstances(singleInstanceStudies('bench-fill', fill), {
      baseUrl: gwRoot,
      batch: 25,
      concurrency: CONCURRENCY,
      keepResults: false,
    });
    const count = (await (
      await fetch(`${stack.ORTHANC_URL}/statistics`, { headers: { authorization: orthancAuth(stack) } })
    ).json()) as { CountStudies: number };

    // QIDO: the same queries against both, limit=100, sequential (latency, not throughput).
    const probe = (await (
      await fetch(`${gwRoot}/studies?limit=1&offset=${Math.floor(STUDIES / 2)}&includefield=00100020`)
    ).json()) as Array<Record<string, { Value?: unknown[] }>>;
    const studyUid = String(probe[0]?.['0020000D']?.Value?.[0]);
    const patientId = String(probe[0]?.['00100020']?.Value?.[0]);
    for (const q of qidoShapes(studyUid, patientId)) {
      const gwUrl = `${gwRoot}/studies?${q.qs}&limit=100`;
      const orUrl = `${stack.ORTHANC_URL}/dicom-web/studies?${q.qs}&limit=100`;
      const g = await timeQido(gwUrl, QIDO_REPS);
      const o = await timeQido(orUrl, ORTHANC_QIDO_REPS, { authorization: orthancAuth(stack) });
      rows.push({
        metric: `QIDO ${q.name}, limit=100 (p95; p50 ${g.p50} vs ${o.p50} ms; ${g.results} vs ${o.results} results)`,
        unit: 'ms',
        gateway: g.p95,
        orthanc: o.p95,
        ratio: g.p95 / o.p95,
        ratioMeaning: 'gateway / Orthanc latency',
        target: `p95 < ${q.target} ms`,
        met: g.p95 < q.target,
      });
    }
    return {
      suite: 'STOW-RS ingest and QIDO-RS latency',
      setup:
        `${count.CountStudies} studies in the archive (synthetic single-instance 64x64 CT/MR/CR). Gateway: one process, ` +
        `auth off, indexer off. Orthanc 1.10 with its DICOMweb plugin on its ${orthancIndexName()} index, same machine, loopback. ` +
        `QIDO: ${QIDO_REPS} sequential requests per query on the gateway, ${ORTHANC_QIDO_REPS} on Orthanc, after 3 warm-ups.`,
      rows,
    };
  } finally {
    await gw.stop();
  }
}
