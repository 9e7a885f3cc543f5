import { measureLag } from '../lag';
import type { SuiteResult } from '../lib/report';
import type { StackEnv } from '../lib/stack';

/** C-STORE accepted → visible in QIDO-RS (the change-feed indexer's lag). */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const n = Number(process.env.BENCH_LAG_N ?? 100);
  const rows = [];
  for (const via of ['index', 'qido'] as const) {
    const r = await measureLag({ n, via, pollMs: Number(process.env.BENCH_LAG_POLL_MS ?? 250) }, stack);
    rows.push({
      metric: `indexing lag via ${via}, ${r.n} C-STOREs (p95; p50 ${r.p50Ms} ms, max ${r.maxMs} ms)`,
      unit: 'ms',
      gateway: r.p95Ms,
      target: `p95 < ${r.targetP95Ms} ms`,
      met: r.met,
    });
  }
  return {
    suite: 'DIMSE ingest: indexing lag',
    setup:
      'dcmsend (one association per instance, as a modality sends) to Orthanc with called AE LAGBENCH, routed to a ' +
      'project; time from dcmsend returning to the instance being visible in the index and through QIDO-RS. ' +
      "Orthanc's own QIDO sees an instance as soon as C-STORE returns, so there is no Orthanc column: this is the " +
      'delay the gateway adds.',
    rows,
  };
}
