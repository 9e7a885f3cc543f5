/**
 * Orthanc's own REST store rate (POST /instances) of 512x512 CT objects by number in flight, and its
 * POST /studies/{id}/anonymize rate on the same stack: whether fewer concurrent stores go faster on Orthanc's
 * PostgreSQL index (issue 10's ceiling). Usage: BENCH_STACK_DIR=... ports... npx tsx bench/store-concurrency.ts
 */
import { generateInstances } from '../tools/synth';
import { benchStackUp, orthancAuth, storeInOrthanc } from './lib/stack';
import { msSince, round } from './lib/stats';

const N = Number(process.env.BENCH_STORE_N ?? 200);
const LEVELS = (process.env.BENCH_STORE_LEVELS ?? '1,2,4,8,16').split(',').map(Number);

async function main(): Promise<void> {
  const stack = benchStackUp({ fresh: true });
  const auth = orthancAuth(stack);
  let seed = 0;
  const series = () => [
    ...generateInstances({
      patients: 4,
      studiesPerPatient: 1,
      seriesPerStudy: 1,
      instancesPerSeries: N / 4,
      modalities: ['CT'],
      rows: 512,
      cols: 512,
      seed: `store-conc-${seed++}`,
    }),
  ];
  let retries = 0;
  const store = async (objs: Array<{ buffer: Buffer }>, inFlight: number): Promise<number> => {
    const out = await storeInOrthanc(stack, objs, inFlight);
    retries += out.retries;
    return out.rate;
  };
  const anonymize = async (): Promise<number> => {
    const studies = (await (
      await fetch(`${stack.ORTHANC_URL}/studies`, { headers: { authorization: auth } })
    ).json()) as string[];
    const ids = studies.slice(0, 4);
    const t = process.hrtime.bigint();
    await Promise.all(
      ids.map(async (id) => {
        const r = await fetch(`${stack.ORTHANC_URL}/studies/${id}/anonymize`, {
          method: 'POST',
          headers: { authorization: auth, 'content-type': 'application/json' },
          body: JSON.stringify({ Synchronous: true }),
        });
        if (!r.ok) throw new Error(`anonymize: ${r.status}`);
        await r.arrayBuffer();
      }),
    );
    return N / (msSince(t) / 1000);
  };
  await store(series(), 4); // warm-up and the studies anonymize reads
  for (let round_ = 0; round_ < 2; round_++) {
    console.log(`anonymize: ${round(await anonymize())} inst/s`);
    for (const level of LEVELS) {
      const rate = await store(series(), level);
      console.log(`store ${level} in flight: ${round(rate)} inst/s (retries so far ${retries})`);
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
