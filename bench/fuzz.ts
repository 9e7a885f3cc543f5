/**
 * `npm run fuzz -- --seed 1 --count 5000`: the generator of test/fuzz.itest.ts at length. Starts its own stack in
 * .stack/fuzz (fresh, free ports) and a gateway process, sends `count` mutated samples plus broken framings by
 * STOW-RS, and prints the figures (cases, stored, refused by reason, statuses, max gateway RSS, time) and every
 * violation (5xx, hang, Orthanc down, stored bytes or index differing from what was sent). Exit code 1 on any.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Pool } from 'pg';
import { freePort } from '../tools/net';
import { runFuzz } from '../test/helpers/fuzz-run';
import {
  benchStackDown,
  benchStackUp,
  createProject,
  orthancAuth,
  rssOf,
  startGatewayProcess,
} from './lib/stack';

function arg(name: string, def: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
}

async function main(): Promise<void> {
  const seed = arg('seed', 1);
  const count = arg('count', 1000);
  const root = join(__dirname, '..');
  const samplesDir = process.env.APERTURE_SAMPLES_DIR ?? join(root, '../shared/dicom-samples');
  const samples = readFileSync(join(samplesDir, 'MANIFEST.tsv'), 'utf8')
    .trim()
    .split('\n')
    .slice(1)
    .map((l) => join(samplesDir, l.split('\t')[0]));
  const stackDir = process.env.BENCH_STACK_DIR ?? join(root, '.stack/fuzz');
  process.env.BENCH_STACK_DIR = stackDir;
  process.env.BENCH_PG_PORT ??= String(await freePort());
  process.env.BENCH_REDIS_PORT ??= String(await freePort());
  process.env.BENCH_ORTHANC_HTTP_PORT ??= String(await freePort());
  process.env.BENCH_ORTHANC_DICOM_PORT ??= String(await freePort());
  const stack = benchStackUp({ fresh: true });
  const gw = await startGatewayProcess(stack, await freePort(), {
    AUTH_ENABLED: 'false',
    LOG_LEVEL: 'error',
  });
  const db = new Pool({ connectionString: stack.DATABASE_URL, max: 2 });
  try {
    await createProject(gw.url, 'fuzz', 'fuzz');
    const report = await runFuzz(
      {
        stowUrl: `${gw.url}/projects/fuzz/dicom-web/studies`,
        orthancUrl: stack.ORTHANC_URL,
        orthancAuth: orthancAuth(stack),
        orthancPidFile: join(stackDir, 'orthanc/orthanc.pid'),
        db,
        gatewayRss: () => rssOf(gw.pid) * 1024 ** 2,
      },
      { seed, count, samples, batch: 100, log: (l) => console.error(`[fuzz] ${l}`) },
    );
    if (gw.child.exitCode !== null) report.violations.push(`gateway exited with ${gw.child.exitCode}`);
    console.log(
      JSON.stringify({ seed, ...report, maxRssMb: Math.round(report.maxRssBytes / 1024 ** 2) }, null, 2),
    );
    process.exitCode = report.violations.length ? 1 : 0;
  } finally {
    await db.end();
    await gw.stop();
    benchStackDown();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
