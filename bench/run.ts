/**
 * `npm run bench [-- suite ...]`: runs the benchmark suites against a dedicated stack (.stack/bench, fresh each
 * run) and writes bench/REPORT.md plus bench/results/<time>.json. Every figure is measured side by side with
 * Orthanc direct in the same run and reported as a ratio; nothing here is a pass/fail test.
 */
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { type SuiteResult, writeReport } from './lib/report';
import { benchStackDown, benchStackUp, type StackEnv } from './lib/stack';

async function main(): Promise<void> {
  const available = readdirSync(join(__dirname, 'suites'))
    .filter((f) => f.endsWith('.ts'))
    .map((f) => f.replace(/\.ts$/, ''))
    .sort();
  const wanted = process.argv.slice(2).length ? process.argv.slice(2) : available;
  for (const w of wanted)
    if (!available.includes(w)) throw new Error(`unknown suite ${w}; available: ${available.join(', ')}`);
  const startedAt = new Date();
  const results: SuiteResult[] = [];
  for (const name of wanted) {
    // Each suite gets a fresh archive and index so that figures do not depend on suite order.
    const stack = benchStackUp({ fresh: true });
    try {
      const mod = (await import(join(__dirname, 'suites', name))) as {
        run(stack: StackEnv): Promise<SuiteResult>;
      };
      console.log(`[bench] ${name}...`);
      results.push(await mod.run(stack));
      console.log(writeReport(results, startedAt));
    } finally {
      benchStackDown();
    }
  }
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
