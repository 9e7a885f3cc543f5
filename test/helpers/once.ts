/**
 * Work that several test files need and that must happen once per test run even when files run in parallel
 * workers: the production build of the web app and the published OHIF viewer. A lock folder in the run's shared
 * folder (APERTURE_TEST_RUN_DIR, made by global-setup.ts) lets the first caller do it while the others wait.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ensureOhifDist } from '../../scripts/viewer';

const ROOT = join(__dirname, '../..');

async function once(name: string, make: () => string, timeoutMs = 10 * 60_000): Promise<string> {
  const dir = process.env.APERTURE_TEST_RUN_DIR;
  if (!dir) return make();
  const lock = join(dir, `${name}.lock`);
  const done = join(dir, `${name}.done`);
  try {
    mkdirSync(lock);
  } catch {
    const deadline = Date.now() + timeoutMs;
    while (!existsSync(done)) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for another test file to finish ${name}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const result = readFileSync(done, 'utf8');
    if (result.startsWith('error:'))
      throw new Error(`${name} failed in another test file: ${result.slice(6)}`);
    return result;
  }
  try {
    const result = make();
    writeFileSync(done, result);
    return result;
  } catch (err) {
    writeFileSync(done, `error:${(err as Error).message}`);
    throw err;
  }
}

/** The production build of web/ (what `npm run build` serves), made once per run; returns its folder. */
export function builtWebApp(): Promise<string> {
  return once('web-build', () => {
    const out = process.env.APERTURE_TEST_RUN_DIR
      ? join(process.env.APERTURE_TEST_RUN_DIR, 'web')
      : join(ROOT, 'dist/web');
    execFileSync(
      join(ROOT, 'node_modules/.bin/vite'),
      ['build', '--config', 'web/vite.config.mts', '--logLevel', 'error', '--outDir', out, '--emptyOutDir'],
      { cwd: ROOT, stdio: 'inherit' },
    );
    return out;
  });
}

/** The published OHIF viewer's dist folder (downloaded into .stack/ once, then reused). */
export function ohifDist(): Promise<string> {
  return once('ohif', () => ensureOhifDist());
}
