import { execFileSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freshStackEnv, parseStackEnv } from './private-stack';

/**
 * Starts an isolated stack (PostgreSQL, Redis, Orthanc) for this test run in a temporary folder on free ports,
 * so that `npm test` works while `npm run demo` (or another test run) is up. Settings reach the test workers
 * through the environment.
 */
export default async function globalSetup(): Promise<void> {
  const dir = process.env.APERTURE_TEST_STACK_DIR ?? mkdtempSync(join(tmpdir(), 'aperture-test-'));
  const env = { ...process.env, ...(await freshStackEnv(dir)) };
  const out = execFileSync('bash', [join(__dirname, '../../scripts/stack.sh'), 'up'], {
    env,
    encoding: 'utf8',
    stdio: ['ignore', 'pipe', 'inherit'],
    timeout: 15 * 60_000,
  });
  Object.assign(process.env, parseStackEnv(out));
  process.env.APERTURE_TEST_STACK_DIR = dir;
  process.env.APERTURE_TEST_STACK_OWNED = process.env.APERTURE_TEST_STACK_OWNED ?? '1';
  process.env.LOG_LEVEL = process.env.LOG_LEVEL ?? 'silent';
}
