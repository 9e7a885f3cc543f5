import { startOidcIssuer } from '../../tools/oidc-issuer/issuer';
import { generateInstances, type SyntheticInstance } from '../../tools/synth';
import { type StowRequestResult, stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import {
  cpuMsOf,
  createProject,
  orthancAuth,
  orthancIndexName,
  rssOf,
  type StackEnv,
  startGatewayProcess,
} from '../lib/stack';
import { msSince, round, summarise } from '../lib/stats';

/**
 * Behaviour under load (issue 8, defect 15): CLIENTS concurrent readers mixing QIDO at the three levels, series
 * metadata and instance retrieval for SECONDS (or MAX_REQUESTS, whichever comes first), against the gateway (auth
 * on, a reader's token) and then the same request sequence against Orthanc's DICOMweb plugin. Reports latency
 * percentiles per request kind, errors, and the gateway's RSS before, at its peak and after.
 */
const CLIENTS = Number(process.env.BENCH_LOAD_CLIENTS ?? 50);
const SECONDS = Number(process.env.BENCH_LOAD_SECONDS ?? 60);
const MAX_REQUESTS = Number(process.env.BENCH_LOAD_MAX_REQUESTS ?? 60_000);
const WARMUP = Number(process.env.BENCH_LOAD_WARMUP ?? 500);
const STUDIES = Number(process.env.BENCH_LOAD_STUDIES ?? 2_000);
const RICH_STUDIES = Number(process.env.BENCH_LOAD_RICH_STUDIES ?? 20);
const SERIES_INSTANCES = Number(process.env.BENCH_LOAD_SERIES_INSTANCES ?? 50);
const SEED = Number(process.env.BENCH_LOAD_SEED ?? 8015);
/** Extra Node options for the gateway process (e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof`) when profiling. */
const GATEWAY_NODE_ARGS = (process.env.BENCH_LOAD_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
/** BENCH_LOAD_ORTHANC=false skips the Orthanc half (profiling runs only: the report then has no ratio). */
const WITH_ORTHANC = process.env.BENCH_LOAD_ORTHANC !== 'false';

const PROJECT = 'demo';
const JSON_ACCEPT = 'application/dicom+json';
const DICOM_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*';

type Kind = 'qido-studies' | 'qido-series' | 'qido-instances' | 'series-metadata' | 'retrieve-instance';
const KINDS: readonly Kind[] = [
  'qido-studies',
  'qido-series',
  'qido-instances',
  'series-metadata',
  'retrieve-instance',
];
/** Share of each kind in the mix (a viewer session: browse studies, open series, load metadata, fetch images). */
const WEIGHTS: Record<Kind, number> = {
  'qido-studies': 0.3,
  'qido-series': 0.15,
  'qido-instances': 0.15,
  'series-metadata': 0.25,
  'retrieve-instance': 0.15,
};

/** A small, seeded PRNG (mulberry32), so that both targets get the very same request sequence. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Planned {
  kind: Kind;
  /** Path below the DICOMweb root, with query string. */
  path: string;
  accept: string;
}

interface Corpus {
  studyUids: string[];
  patientIds: string[];
  /** [study, series] of the multi-instance series. */
  series: Array<[string, string]>;
  /** [study, series, sop] of retrievable instances. */
  instances: Array<[string, string, string]>;
}

/** The request sequence: deterministic for a seed, the same for the gateway and for Orthanc. */
function plan(corpus: Corpus, n: number, seed: number): Planned[] {
  const rnd = prng(seed);
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd() * xs.length)];
  const out: Planned[] = [];
  let sum = 0;
  const cumulative = KINDS.map((k) => (sum += WEIGHTS[k]));
  for (let i = 0; i < n; i++) {
    const r = rnd();
    const kind = KINDS[cumulative.findIndex((c) => r < c)] ?? 'qido-studies';
    switch (kind) {
      case 'qido-studies': {
        const shapes = [
          () => `/studies?limit=100`,
          () => `/studies?PatientID=${encodeURIComponent(pick(corpus.patientIds))}&limit=100`,
          () => `/studies?StudyInstanceUID=${pick(corpus.studyUids)}`,
          () => `/studies?PatientName=${pick(['A', 'B', 'C', 'D', 'M', 'S'])}*&limit=100`,
          () => {
            const from = 2015 + Math.floor(rnd() * 10);
            const to = Math.min(2024, from + Math.floor(rnd() * 3));
            return `/studies?StudyDate=${from}0101-${to}1231&limit=100`;
          },
          () => `/studies?ModalitiesInStudy=${pick(['CT', 'MR', 'CR'])}&limit=100`,
        ];
        out.push({ kind, path: pick(shapes)(), accept: JSON_ACCEPT });
        break;
      }
      case 'qido-series': {
        const [s] = rnd() < 0.5 ? pick(corpus.series) : [pick(corpus.studyUids)];
        out.push({ kind, path: `/studies/${s}/series`, accept: JSON_ACCEPT });
        break;
      }
      case 'qido-instances': {
        const [s, x] = pick(corpus.series);
        out.push({ kind, path: `/studies/${s}/series/${x}/instances`, accept: JSON_ACCEPT });
        break;
      }
      case 'series-metadata': {
        const [s, x] = pick(corpus.series);
        out.push({ kind, path: `/studies/${s}/series/${x}/metadata`, accept: JSON_ACCEPT });
        break;
      }
      case 'retrieve-instance': {
        const [s, x, o] = pick(corpus.instances);
        out.push({ kind, path: `/studies/${s}/series/${x}/instances/${o}`, accept: DICOM_ACCEPT });
        break;
      }
    }
  }
  return out;
}

interface LoadResult {
  seconds: number;
  requests: number;
  perKind: Record<Kind, { ms: number[]; errors: number; bytes: number }>;
  errorSamples: string[];
}

function emptyPerKind(): LoadResult['perKind'] {
  return Object.fromEntries(
    KINDS.map((k) => [k, { ms: [] as number[], errors: 0, bytes: 0 }]),
  ) as LoadResult['perKind'];
}

/**
 * Runs `requests` with `clients` in flight until they are done or `seconds` have passed. Every body is read to the
 * end; a non-2xx answer or a network failure counts as an error of its kind.
 */
async function drive(
  root: string,
  requests: readonly Planned[],
  clients: number,
  seconds: number,
  headers: Record<string, string>,
): Promise<LoadResult> {
  const perKind = emptyPerKind();
  const errorSamples: string[] = [];
  const deadline = Date.now() + seconds * 1000;
  let next = 0;
  const t0 = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: clients }, async () => {
      for (let i = next++; i < requests.length && Date.now() < deadline; i = next++) {
        const r = requests[i];
        const t = process.hrtime.bigint();
        const stat = perKind[r.kind];
        try {
          const res = await fetch(root + r.path, { headers: { accept: r.accept, ...headers } });
          if (!res.ok) {
            // The gateway's error bodies name the cause (no PHI), which tells a queueing timeout from an archive failure.
            const text = await res.text();
            stat.errors++;
            if (errorSamples.length < 10)
              errorSamples.push(`${r.kind} HTTP ${res.status} ${text.slice(0, 160)}`);
          } else {
            for await (const chunk of res.body ?? []) stat.bytes += (chunk as Uint8Array).byteLength;
          }
        } catch (err) {
          stat.errors++;
          if (errorSamples.length < 10) errorSamples.push(`${r.kind} ${(err as Error).message}`);
        }
        stat.ms.push(msSince(t));
      }
    }),
  );
  return {
    seconds: msSince(t0) / 1000,
    requests: KINDS.reduce((a, k) => a + perKind[k].ms.length, 0),
    perKind,
    errorSamples,
  };
}

/** Passes generated instances through while noting the UIDs the requests will draw from. */
function* noting(
  items: Iterable<SyntheticInstance>,
  note: (i: SyntheticInstance) => void,
): Generator<SyntheticInstance> {
  for (const i of items) {
    note(i);
    yield i;
  }
}

/** Samples a process's RSS every 100 ms; `stop` returns the peak. */
function rssSampler(pid: number): { stop(): number } {
  let peak = rssOf(pid);
  const timer = setInterval(() => (peak = Math.max(peak, rssOf(pid))), 100);
  return {
    stop() {
      clearInterval(timer);
      return Math.max(peak, rssOf(pid));
    },
  };
}

/** 50 concurrent QIDO + WADO readers: gateway (auth on) vs Orthanc's DICOMweb plugin, same requests. */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const issuer = await startOidcIssuer({ port: 18181, tokenLifetimeS: 4 * 3600 });
  const loader = await startGatewayProcess(stack, 18084, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' });
  let gw: Awaited<ReturnType<typeof startGatewayProcess>> | undefined;
  const rows: BenchRow[] = [];
  try {
    await createProject(loader.url, PROJECT, 'Demo');
    const loaderRoot = `${loader.url}/projects/${PROJECT}/dicom-web`;
    // Many small single-instance studies for the study-level queries, and a few studies of two series of
    // SERIES_INSTANCES 128x128 instances for series-level queries, metadata and retrieval.
    const corpus: Corpus = { studyUids: [], patientIds: [], series: [], instances: [] };
    const patients = new Set<string>();
    // Why a store request failed (status and the start of its answer), for the error below: a few are enough.
    const failures: string[] = [];
    const noteFailure = (r: StowRequestResult) => {
      if (r.status !== 200 && failures.length < 5)
        failures.push(`HTTP ${r.status} ${r.error ?? JSON.stringify(r.body).slice(0, 300)}`);
    };
    const bulk = await stowInstances(
      noting(
        generateInstances({
          patients: Math.ceil(Math.max(0, STUDIES - RICH_STUDIES) / 5),
          studiesPerPatient: 5,
          seriesPerStudy: 1,
          instancesPerSeries: 1,
          rows: 64,
          cols: 64,
          seed: 'bench-load',
        }),
        (i) => {
          corpus.studyUids.push(i.studyInstanceUid);
          patients.add(i.patientId);
        },
      ),
      { baseUrl: loaderRoot, batch: 25, concurrency: 4, keepResults: false, onResult: noteFailure },
    );
    const seen = new Set<string>();
    const rich = await stowInstances(
      noting(
        generateInstances({
          patients: RICH_STUDIES,
          studiesPerPatient: 1,
          seriesPerStudy: 2,
          instancesPerSeries: SERIES_INSTANCES,
          rows: 128,
          cols: 128,
          seed: 'bench-load-rich',
        }),
        (i) => {
          if (!seen.has(i.seriesInstanceUid)) {
            seen.add(i.seriesInstanceUid);
            corpus.series.push([i.studyInstanceUid, i.seriesInstanceUid]);
          }
          if (!seen.has(i.studyInstanceUid)) {
            seen.add(i.studyInstanceUid);
            corpus.studyUids.push(i.studyInstanceUid);
          }
          corpus.instances.push([i.studyInstanceUid, i.seriesInstanceUid, i.sopInstanceUid]);
          patients.add(i.patientId);
        },
      ),
      { baseUrl: loaderRoot, batch: 25, concurrency: 4, keepResults: false, onResult: noteFailure },
    );
    corpus.patientIds = [...patients];
    if (bulk.failed || rich.failed || bulk.partial || rich.partial)
      throw new Error(`could not store the load data set: ${failures.join('; ')}`);
    await loader.stop();

    gw = await startGatewayProcess(
      stack,
      18085,
      {
        AUTH_ENABLED: 'true',
        OIDC_ISSUER: issuer.issuer,
        INDEXER_ENABLED: 'false',
      },
      GATEWAY_NODE_ARGS,
    );
    // alice reads project demo through her Keycloak groups: the path a viewer takes (claims → scopes in SQL).
    const bearer = { authorization: `Bearer ${await issuer.userToken('alice')}` };
    const gwRoot = `${gw.url}/projects/${PROJECT}/dicom-web`;
    const orRoot = `${stack.ORTHANC_URL}/dicom-web`;
    const orHeaders = { authorization: orthancAuth(stack) };
    const requests = plan(corpus, MAX_REQUESTS, SEED);
    const warmup = plan(corpus, WARMUP, SEED + 1);

    // Gateway first (its RSS is the point), then Orthanc on the same requests.
    const rssStart = gw.rssMb();
    await drive(gwRoot, warmup, CLIENTS, SECONDS, bearer);
    const rssWarm = gw.rssMb();
    const sampler = rssSampler(gw.pid);
    const cpuBefore = cpuMsOf(gw.pid);
    const g = await drive(gwRoot, requests, CLIENTS, SECONDS, bearer);
    const cpuPerRequest = (cpuMsOf(gw.pid) - cpuBefore) / g.requests;
    const rssPeak = sampler.stop();
    const rssEnd = gw.rssMb();
    await new Promise((r) => setTimeout(r, 5000));
    const rssSettled = gw.rssMb();

    let o: LoadResult = { seconds: NaN, requests: 0, perKind: emptyPerKind(), errorSamples: [] };
    if (WITH_ORTHANC) {
      await drive(orRoot, warmup, CLIENTS, SECONDS, orHeaders);
      o = await drive(orRoot, requests, CLIENTS, SECONDS, orHeaders);
    }

    for (const kind of [...KINDS, 'all' as const]) {
      const pick = (r: LoadResult) =>
        kind === 'all'
          ? {
              ms: KINDS.flatMap((k) => r.perKind[k].ms),
              errors: KINDS.reduce((a, k) => a + r.perKind[k].errors, 0),
            }
          : r.perKind[kind];
      const gs = summarise(pick(g).ms);
      const os = summarise(pick(o).ms);
      const target = kind === 'retrieve-instance' ? undefined : 250;
      rows.push({
        metric:
          `${kind}, ${CLIENTS} clients (p99; gateway p50 ${gs.p50} / p95 ${gs.p95} ms, n ${gs.n}, errors ${pick(g).errors}; ` +
          `Orthanc p50 ${os.p50} / p95 ${os.p95} ms, n ${os.n}, errors ${pick(o).errors})`,
        unit: 'ms',
        gateway: gs.p99,
        orthanc: os.p99,
        ratio: gs.p99 / os.p99,
        ratioMeaning: 'gateway / Orthanc p99',
        target: target !== undefined ? `p99 ≤ ${target} ms, 0 errors` : '0 errors',
        met: pick(g).errors === 0 && (target === undefined || gs.p99 <= target),
      });
    }
    const gRate = g.requests / g.seconds;
    const oRate = o.requests / o.seconds;
    rows.push({
      metric: `throughput, ${CLIENTS} clients (${g.requests} requests in ${round(g.seconds)} s vs ${o.requests} in ${round(o.seconds)} s)`,
      unit: 'req/s',
      gateway: gRate,
      orthanc: oRate,
      ratio: gRate / oRate,
      ratioMeaning: 'gateway / Orthanc',
      note: g.errorSamples.length ? `gateway errors: ${g.errorSamples.join('; ')}` : undefined,
    });
    rows.push({
      // CPU per request depends much less than latency on what else the shared machine runs at the time.
      metric: 'gateway CPU time per request (user + system, all kinds)',
      unit: 'ms',
      gateway: cpuPerRequest,
    });
    rows.push({
      metric: 'gateway RSS growth under load (peak − before warm-up)',
      unit: 'MB',
      gateway: rssPeak - rssStart,
      target: '≤ 100 MB',
      met: rssPeak - rssStart <= 100,
      note: `RSS ${round(rssStart)} MB before, ${round(rssWarm)} after warm-up, ${round(rssPeak)} peak, ${round(rssEnd)} at the end, ${round(rssSettled)} 5 s later`,
    });
    return {
      suite: 'Behaviour under load (50 concurrent readers)',
      setup:
        `${STUDIES} studies in project ${PROJECT}: ${STUDIES - RICH_STUDIES} single-instance 64x64 studies and ` +
        `${RICH_STUDIES} studies of 2 series x ${SERIES_INSTANCES} 128x128 instances. ${CLIENTS} clients in one Node ` +
        `process on the same machine, each sending the next request of one seeded sequence (seed ${SEED}; mix ` +
        KINDS.map((k) => `${k} ${WEIGHTS[k] * 100}%`).join(', ') +
        `) for ${SECONDS} s or ${MAX_REQUESTS} requests, after ${WARMUP} warm-up requests; bodies read to the end. ` +
        `Gateway: one process, auth on (a reader's RS256 token), audit on, indexer off; then Orthanc's DICOMweb ` +
        `plugin (${orthancIndexName()} index) on the same sequence. Loopback only.`,
      rows,
    };
  } finally {
    await gw?.stop();
    await loader.stop();
    await issuer.close();
  }
}
