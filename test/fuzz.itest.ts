import { join } from 'node:path';
import { readFileSync } from 'node:fs';
import { ensureProject } from '../src/index-db/projects';
import { runFuzz } from './helpers/fuzz-run';
import { orthancEndpoint, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

// A bounded, seeded share of bench/fuzz.ts: ~30 s of cases (plus the stack) on a shared 2-core machine.
jest.setTimeout(420_000);
const SEED = Number(process.env.FUZZ_SEED ?? 20261201);
const COUNT = Number(process.env.FUZZ_COUNT ?? 1200);

const samples = readFileSync(`${SAMPLES}/MANIFEST.tsv`, 'utf8')
  .trim()
  .split('\n')
  .slice(1)
  .map((l) => join(SAMPLES, l.split('\t')[0]));

describe('fuzzing STOW-RS through the gateway into the real Orthanc', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await ensureProject(gw.services.db, { id: 'fuzz', name: 'fuzz' });
  });
  afterAll(async () => gw.close());

  it(`mutants of every sample and broken framings: no crash, no 5xx, no hang, bounded RSS, stored = sent (seed ${SEED})`, async () => {
    const { url, auth } = orthancEndpoint();
    const rssBefore = process.memoryUsage().rss;
    const report = await runFuzz(
      {
        stowUrl: `${gw.url}/projects/fuzz/dicom-web/studies`,
        orthancUrl: url,
        orthancAuth: auth,
        orthancPidFile: process.env.APERTURE_TEST_STACK_DIR
          ? join(process.env.APERTURE_TEST_STACK_DIR, 'orthanc/orthanc.pid')
          : undefined,
        db: gw.services.db,
        gatewayRss: () => process.memoryUsage().rss,
      },
      { seed: SEED, count: COUNT, samples, requestTimeoutMs: 20_000 },
    );
    expect(report.violations).toEqual([]);
    expect(report.cases).toBe(COUNT);
    // Every sample was mutated at least once, and each kind of mutation was tried.
    expect(COUNT).toBeGreaterThanOrEqual(samples.length);
    expect(Object.keys(report.byKind).filter((k) => !k.startsWith('framing:')).length).toBeGreaterThanOrEqual(
      7,
    );
    expect(report.framingCases).toBeGreaterThanOrEqual(5);
    // Refusals happened and so did stores: the generator is neither all-broken nor harmless.
    expect(report.stored).toBeGreaterThan(0);
    expect(Object.values(report.refusedByReason).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
    expect(report.maxAnswerMs).toBeLessThan(20_000);
    // The gateway runs in this process: its memory must not grow with what it refused.
    expect(report.maxRssBytes - rssBefore).toBeLessThan(512 * 1024 ** 2);
    process.stdout.write(
      `fuzz report: ${JSON.stringify({ ...report, violations: report.violations.length })}\n`,
    );
  });
});
