/**
 * QIDO-RS latency of two (or more) source trees' gateways over the same stack, index and data, in alternating
 * rounds (A B B A ...), so that a difference between the trees is not a difference between stacks, data or the
 * machine's load at the time. Used for issue 9 (is the reshape's added QIDO p50 the request-context
 * AsyncLocalStorage, or the SQL?).
 *
 *   BENCH_AB_TREES=/work/main,/work/wt-other [BENCH_STUDIES=5000] [BENCH_AB_ROUNDS=6] [BENCH_QIDO_REPS=500] \
 *     npx tsx bench/qido-ab.ts
 *
 * Each tree must have its dependencies (a node_modules folder or a link to one). The index schema is the first
 * tree's (it migrates the fresh stack and loads the data); the other trees must accept it. Prints a table of p50 and
 * p95 per shape and tree (medians over the rounds) and the per-round figures; writes nothing into bench/REPORT.md.
 */
import { stowInstances } from '../tools/stow-client';
import { qidoShapes, timeQido } from './lib/qido';
import { singleInstanceStudies } from './lib/studies';
import { benchStackDown, benchStackUp, createProject, type StackEnv, startGatewayProcess } from './lib/stack';

const TREES = (process.env.BENCH_AB_TREES ?? '').split(',').filter(Boolean);
const STUDIES = Number(process.env.BENCH_STUDIES ?? 5000);
const ROUNDS = Number(process.env.BENCH_AB_ROUNDS ?? 6);
const REPS = Number(process.env.BENCH_QIDO_REPS ?? 500);
const PORT = 18090;

/** One tree's gateway on the stack: auth and indexer off (nothing but QIDO runs). */
const startGateway = (tree: string, stack: StackEnv) =>
  startGatewayProcess(stack, PORT, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' }, [], tree);

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};

async function main() {
  if (TREES.length < 2) throw new Error('BENCH_AB_TREES: two or more source trees, comma-separated');
  const stack = benchStackUp({ fresh: true });
  try {
    // Load with the first tree (it migrates the schema).
    const loader = await startGateway(TREES[0], stack);
    let studyUid = '';
    let patientId = '';
    try {
      await createProject(loader.url, 'bench', 'Benchmark');
      const root = `${loader.url}/projects/bench/dicom-web`;
      const res = await stowInstances(singleInstanceStudies('bench-ab', STUDIES), {
        baseUrl: root,
        batch: 25,
        concurrency: 4,
        keepResults: false,
      });
      console.log(`[ab] loaded ${STUDIES} studies in ${res.seconds.toFixed(0)} s (failed ${res.failed})`);
      const probe = (await (
        await fetch(`${root}/studies?limit=1&offset=${Math.floor(STUDIES / 2)}&includefield=00100020`)
      ).json()) as Array<Record<string, { Value?: unknown[] }>>;
      studyUid = String(probe[0]?.['0020000D']?.Value?.[0]);
      patientId = String(probe[0]?.['00100020']?.Value?.[0]);
    } finally {
      await loader.stop();
    }
    const shapes = qidoShapes(studyUid, patientId);
    // per tree, per shape: p50s and p95s of each round
    const figures = new Map<string, Map<string, { p50: number[]; p95: number[] }>>();
    for (let round = 0; round < ROUNDS; round++) {
      // A B, B A, A B, ...: neither tree always runs first in a pair.
      const order = round % 2 === 0 ? TREES : [...TREES].reverse();
      for (const tree of order) {
        const gw = await startGateway(tree, stack);
        try {
          const root = `${gw.url}/projects/bench/dicom-web`;
          for (const q of shapes) {
            const g = await timeQido(`${root}/studies?${q.qs}&limit=100`, REPS);
            const byShape = figures.get(tree) ?? new Map();
            figures.set(tree, byShape);
            const f = byShape.get(q.name) ?? { p50: [], p95: [] };
            byShape.set(q.name, f);
            f.p50.push(g.p50);
            f.p95.push(g.p95);
          }
          console.log(`[ab] round ${round + 1} ${tree} done`);
        } finally {
          await gw.stop();
        }
      }
    }
    console.log(`\n${ROUNDS} rounds, ${REPS} sequential requests per shape and round, ${STUDIES} studies`);
    console.log(`| shape | ${TREES.map((t) => `${t} p50 / p95 (ms)`).join(' | ')} |`);
    console.log(`|---|${TREES.map(() => '---').join('|')}|`);
    for (const q of shapes) {
      const cells = TREES.map((t) => {
        const f = figures.get(t)!.get(q.name)!;
        return `${median(f.p50).toFixed(2)} / ${median(f.p95).toFixed(2)} (rounds p50: ${f.p50.map((x) => x.toFixed(2)).join(', ')})`;
      });
      console.log(`| ${q.name} | ${cells.join(' | ')} |`);
    }
  } finally {
    benchStackDown();
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
