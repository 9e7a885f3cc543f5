import { execFile } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freshStackEnv, parseStackEnv } from './private-stack';

const run = promisify(execFile);
const STACK = join(__dirname, '../../scripts/stack.sh');
/** More stacks than this would only compete for the same cores. */
const MAX_STACKS = 4;

/** Starts one stack in `dir`; returns the settings that point a process at it. */
async function startStack(dir: string): Promise<Record<string, string>> {
  const env = { ...process.env, ...(await freshStackEnv(dir)) };
  const { stdout, stderr } = await run('bash', [STACK, 'up'], {
    env,
    encoding: 'utf8',
    timeout: 15 * 60_000,
    maxBuffer: 16 * 1024 * 1024,
  });
  process.stderr.write(stderr);
  return { ...parseStackEnv(stdout), APERTURE_TEST_STACK_DIR: dir };
}

/**
 * Starts an isolated stack (PostgreSQL, Redis, Orthanc) per jest worker, each in a temporary folder on free ports,
 * so that `npm test` works while `npm run demo` (or another test run) is up, and test files running at the same time
 * in different workers never see each other's data. Each worker picks its stack by JEST_WORKER_ID
 * (test/helpers/worker-stack.ts); files within one worker run one after another, as before.
 */
export default async function globalSetup(globalConfig: { maxWorkers: number }): Promise<void> {
  let stacks: Array<Record<string, string>>;
  if (process.env.APERTURE_TEST_STACK_DIR) {
    // One stack in a folder chosen by hand (kept for post-mortems with APERTURE_KEEP_TEST_STACK), shared by workers.
    stacks = [await startStack(process.env.APERTURE_TEST_STACK_DIR)];
    process.env.APERTURE_TEST_STACK_OWNED = process.env.APERTURE_TEST_STACK_OWNED ?? '1';
  } else {
    const n = Math.max(1, Math.min(MAX_STACKS, globalConfig.maxWorkers || 1));
    const dirs = Array.from({ length: n }, () => mkdtempSync(join(tmpdir(), 'aperture-test-')));
    // The first alone (it may build the loopback shim and initialise shared files), the others together.
    const first = await startStack(dirs[0]);
    stacks = [first, ...(await Promise.all(dirs.slice(1).map(startStack)))];
    process.env.APERTURE_TEST_STACK_OWNED = '1';
  }
  // Shared by every worker of this run: one-off builds (test/helpers/once.ts).
  process.env.APERTURE_TEST_RUN_DIR = mkdtempSync(join(tmpdir(), 'aperture-run-'));
  Object.assign(process.env, stacks[0]);
  process.env.APERTURE_TEST_STACKS = JSON.stringify(stacks);
  process.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'silent';
}
