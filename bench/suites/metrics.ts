import { generateInstances } from '../../tools/synth';
import { stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, round, timedPool } from '../lib/stats';

const REQUESTS = Number(process.env.BENCH_METRICS_REQUESTS ?? 600);
const CONCURRENCY = Number(process.env.BENCH_METRICS_CONCURRENCY ?? 8);
const ROUNDS = Number(process.env.BENCH_METRICS_ROUNDS ?? 3);
const TOKEN = 'bench-metrics-token';

async function throughput(urls: readonly string[], headers: Record<string, string>): Promise<number> {
  const t = process.hrtime.bigint();
  await timedPool(REQUESTS, CONCURRENCY, async (i) => {
    const res = await fetch(urls[i % urls.length], { headers });
    if (!res.ok) throw new Error(`HTTP ${res.status} for ${urls[i % urls.length]}`);
    await res.arrayBuffer();
  });
  return REQUESTS / (msSince(t) / 1000);
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/**
 * The cost of Prometheus instrumentation: two gateways on the same stack and data, METRICS_ENABLED=true (and scraped
 * every second, 15x more often than Prometheus' default, so the collectors' queries are included) vs false.
 */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const off = await startGatewayProcess(stack, 18191, {
    AUTH_ENABLED: 'false',
    INDEXER_ENABLED: 'false',
    METRICS_ENABLED: 'false',
  });
  const on = await startGatewayProcess(stack, 18192, {
    AUTH_ENABLED: 'false',
    INDEXER_ENABLED: 'false',
    METRICS_ENABLED: 'true',
    METRICS_TOKEN: TOKEN,
  });
  let scraping = true;
  let scrapes = 0;
  const scraper = (async () => {
    while (scraping) {
      const r = await fetch(`${on.url}/metrics`, { headers: { authorization: `Bearer ${TOKEN}` } });
      if (r.status !== 200) throw new Error(`scrape answered ${r.status}`);
      await r.text();
      scrapes++;
      await new Promise((res) => setTimeout(res, 1000));
    }
  })();
  try {
    await createProject(off.url, 'demo', 'Demo');
    await stowInstances(
      generateInstances({
        patients: 10,
        studiesPerPatient: 2,
        seriesPerStudy: 2,
        instancesPerSeries: 8,
        rows: 256,
        cols: 256,
        modalities: ['CT'],
        seed: 'bench-metrics',
      }),
      { baseUrl: `${off.url}/projects/demo/dicom-web`, batch: 'study', concurrency: 2, keepResults: false },
    );
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
      '/projects/demo/dicom-web/series?limit=100',
    ];
    const rows: BenchRow[] = [];
    for (const [name, paths, accept] of [
      ['QIDO-RS (2 query shapes, limit=100)', qidoPaths, 'application/dicom+json'],
      ['WADO-RS retrieve instance (~130 KB)', instancePaths, 'multipart/related; type="application/dicom"'],
    ] as const) {
      const offRuns: number[] = [];
      const onRuns: number[] = [];
      await throughput(
        paths.map((p) => off.url + p),
        { accept },
      );
      await throughput(
        paths.map((p) => on.url + p),
        { accept },
      );
      for (let r = 0; r < ROUNDS; r++) {
        offRuns.push(
          await throughput(
            paths.map((p) => off.url + p),
            { accept },
          ),
        );
        onRuns.push(
          await throughput(
            paths.map((p) => on.url + p),
            { accept },
          ),
        );
      }
      const ratio = median(onRuns) / median(offRuns);
      rows.push({
        metric: `${name}, ${CONCURRENCY} clients, median of ${ROUNDS} rounds of ${REQUESTS} (metrics on vs off)`,
        unit: 'req/s',
        gateway: median(onRuns),
        orthanc: median(offRuns),
        ratio,
        ratioMeaning: 'metrics on / metrics off',
        target: '≥ 0.98',
        met: ratio >= 0.98,
        note: `rounds on ${onRuns.map((x) => round(x)).join(', ')}; off ${offRuns.map((x) => round(x)).join(', ')}`,
      });
    }
    rows.push({
      metric: 'scrapes of /metrics during the runs (one a second)',
      unit: 'scrapes',
      gateway: scrapes,
    });
    return {
      suite: 'Metrics cost (METRICS_ENABLED on vs off)',
      setup:
        'Two gateway processes on the same stack and data, auth off: one with METRICS_ENABLED=false, one with ' +
        'metrics on and /metrics scraped every second. The "Orthanc direct" column holds the metrics-off gateway.',
      rows,
    };
  } finally {
    scraping = false;
    await scraper.catch(() => undefined);
    await on.stop();
    await off.stop();
  }
}
