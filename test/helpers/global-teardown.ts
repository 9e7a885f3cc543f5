import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

/** Stops the test stack and removes its folder (unless APERTURE_KEEP_TEST_STACK is set, for post-mortems). */
export default async function globalTeardown(): Promise<void> {
  const dir = process.env.APERTURE_TEST_STACK_DIR;
  if (!dir || process.env.APERTURE_TEST_STACK_OWNED !== '1') return;
  execFileSync('bash', [join(__dirname, '../../scripts/stack.sh'), 'down'], {
    env: { ...process.env, STACK_DIR: dir },
    stdio: 'inherit',
  });
  if (!process.env.APERTURE_KEEP_TEST_STACK) rmSync(dir, { recursive: true, force: true });
}
