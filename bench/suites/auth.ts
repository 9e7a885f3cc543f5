import { generateInstances } from '../../tools/synth';
import { stowInstances } from '../../tools/stow-client';
import { startOidcIssuer } from '../../tools/oidc-issuer/issuer';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, round, timedPool } from '../lib/stats';

const REQUESTS = Number(process.env.BENCH_AUTH_REQUESTS ?? 600);
const CONCURRENCY = Number(process.env.BENCH_AUTH_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_AUTH_ROUNDS ?? 3);

/** Throughput of `REQUESTS` GETs with CONCURRENCY in flight: requests/s and MB/s. */
async function throughput(
  urls: readonly string[],
  headers: Record<string, string>,
): Promise<{ rps: number; mbps: number }> {
  let bytes = 0;
  const t = process.hrtime.bigint();
  await timedPool(REQUESTS, CONCURRENCY, async (i) => {
    const res = await fetch(urls[i % urls.length], { headers });
    if (!res.ok) throw new Error(`HTTP ${res.status} for ${urls[i % urls.length]}`);
    bytes += (await res.arrayBuffer()).byteLength;
  });
  const s = msSince(t) / 1000;
  return { rps: REQUESTS / s, mbps: bytes / 1024 / 1024 / s };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** QIDO and WADO-RS retrieve throughput with authentication on vs off, same data, same run. */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const issuer = await startOidcIssuer({ port: 18180, tokenLifetimeS: 3600 });
  const off = await startGatewayProcess(stack, 18081, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' });
  const on = await startGatewayProcess(stack, 18082, {
    AUTH_ENABLED: 'true',
    OIDC_ISSUER: issuer.issuer,
    INDEXER_ENABLED: 'false',
  });
  try {
    await createProject(off.url, 'demo', 'Demo');
    // 40 studies of 4 CT series x 8 slices of 256x256 (~130 KB each): enough variety for the caches to matter.
    await stowInstances(
      generateInstances({
        patients: 20,
        studiesPerPatient: 2,
        seriesPerStudy: 4,
        instancesPerSeries: 8,
        rows: 256,
        cols: 256,
        modalities: ['CT'],
        seed: 'bench-auth',
      }),
      { baseUrl: `${off.url}/projects/demo/dicom-web`, batch: 'study', concurrency: 2, keepResults: false },
    );
    // alice reads project demo through her Keycloak groups: the realistic path (claims → scopes in SQL).
    const token = await issuer.userToken('alice');
    const bearer = { authorization: `Bearer ${token}` };
    const studies = (await (
      await fetch(`${off.url}/projects/demo/dicom-web/studies?limit=1000`)
    ).json()) as Array<Record<string, { Value?: string[] }>>;
    const instancePaths: string[] = [];
    for (const s of studies.slice(0, 20)) {
      const uid = s['0020000D'].Value![0];
      const insts = (await (
        await fetch(`${off.url}/projects/demo/dicom-web/studies/${uid}/instances?limit=4`)
      ).json()) as Array<Record<string, { Value?: string[] }>>;
      for (const i of insts) {
        instancePaths.push(
          `/projects/demo/dicom-web/studies/${uid}/series/${i['0020000E'].Value![0]}/instances/${i['00080018'].Value![0]}`,
        );
      }
    }
    const qidoPaths = [
      '/projects/demo/dicom-web/studies?limit=100',
      '/dicom-web/studies?limit=100&ModalitiesInStudy=CT',
      '/projects/demo/dicom-web/series?limit=100',
    ];

    const rows: BenchRow[] = [];
    for (const [name, paths, accept] of [
      ['QIDO-RS (3 query shapes, limit=100)', qidoPaths, 'application/dicom+json'],
      ['WADO-RS retrieve instance (~130 KB)', instancePaths, 'multipart/related; type="application/dicom"'],
    ] as const) {
      const offRuns: Array<{ rps: number; mbps: number }> = [];
      const onRuns: Array<{ rps: number; mbps: number }> = [];
      await throughput(
        paths.map((p) => off.url + p),
        { accept },
      ); // warm-up
      await throughput(
        paths.map((p) => on.url + p),
        { accept, ...bearer },
      );
      for (let r = 0; r < ROUNDS; r++) {
        // Alternate so that neither side always runs second on a warmer machine.
        offRuns.push(
          await throughput(
            paths.map((p) => off.url + p),
            { accept },
          ),
        );
        onRuns.push(
          await throughput(
            paths.map((p) => on.url + p),
            { accept, ...bearer },
          ),
        );
      }
      const offRps = median(offRuns.map((x) => x.rps));
      const onRps = median(onRuns.map((x) => x.rps));
      rows.push({
        metric: `${name}, ${CONCURRENCY} clients, median of ${ROUNDS} rounds of ${REQUESTS} (auth on vs off)`,
        unit: 'req/s',
        gateway: onRps,
        orthanc: offRps,
        ratio: onRps / offRps,
        ratioMeaning: 'auth on / auth off',
        target: '≥ 0.97',
        met: onRps / offRps >= 0.97,
        note: `MB/s on ${round(median(onRuns.map((x) => x.mbps)))}, off ${round(median(offRuns.map((x) => x.mbps)))}`,
      });
    }
    return {
      suite: 'Authentication cost (auth on vs off)',
      setup:
        'Two gateway processes on the same stack and data: one with AUTH_ENABLED=false, one verifying Keycloak-shaped ' +
        'RS256 tokens from the local issuer (JWKS cached) for a reader of the project; both write the audit trail. ' +
        'Here the "Orthanc direct" column holds the auth-off gateway.',
      rows,
    };
  } finally {
    await on.stop();
    await off.stop();
    await issuer.close();
  }
}
