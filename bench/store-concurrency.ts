/**
 * Orthanc's own REST store rate (POST /instances) of 512x512 CT objects by number in flight, and its
 * POST /studies/{id}/anonymize rate on the same stack: whether fewer concurrent stores go faster on Orthanc's
 * PostgreSQL index (issue 10's ceiling). Usage: BENCH_STACK_DIR=... ports... npx tsx bench/store-concurrency.ts
 */
import { generateInstances } from '../tools/synth';
import { anonymizeInOrthanc, benchStackUp, orthancAuth, storeInOrthanc } from './lib/stack';
import { round } from './lib/stats';

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
  const store = async (objs: ReadonlyArray<{ buffer: Buffer }>, inFlight: number): Promise<number> => {
    const out = await storeInOrthanc(stack, objs, inFlight);
    retries += out.retries;
    return out.rate;
  };
  // Warm-up; its 4 studies are the ones /anonymize reads in every round.
  const warm = series();
  await store(warm, 4);
  const studyIds = await Promise.all(
    [...new Set(warm.map((x) => x.studyInstanceUid))].map(async (uid) => {
      const found = (await (
        await fetch(`${stack.ORTHANC_URL}/tools/lookup`, {
          method: 'POST',
          headers: { authorization: auth },
          body: uid,
        })
      ).json()) as Array<{ ID: string; Type: string }>;
      return found.find((x) => x.Type === 'Study')!.ID;
    }),
  );
  for (let round_ = 0; round_ < 2; round_++) {
    console.log(`anonymize: ${round(await anonymizeInOrthanc(stack, studyIds, warm.length))} inst/s`);
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
