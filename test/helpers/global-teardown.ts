import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { join } from 'node:path';

/** Stops the test stacks and removes their folders (unless APERTURE_KEEP_TEST_STACK is set, for post-mortems). */
export default async function globalTeardown(): Promise<void> {
  if (process.env.APERTURE_TEST_RUN_DIR)
    rmSync(process.env.APERTURE_TEST_RUN_DIR, { recursive: true, force: true });
  if (process.env.APERTURE_TEST_STACK_OWNED !== '1') return;
  const stacks = JSON.parse(process.env.APERTURE_TEST_STACKS ?? '[]') as Array<Record<string, string>>;
  for (const dir of stacks.map((s) => s.APERTURE_TEST_STACK_DIR).filter(Boolean)) {
    execFileSync('bash', [join(__dirname, '../../scripts/stack.sh'), 'down'], {
      env: { ...process.env, STACK_DIR: dir },
      stdio: 'inherit',
    });
    if (!process.env.APERTURE_KEEP_TEST_STACK) rmSync(dir, { recursive: true, force: true });
  }
}
