/**
 * A stack (PostgreSQL, Redis, Orthanc) of one test file's own, started with scripts/stack.sh in a temporary folder
 * on free ports, for tests that kill services: killing the shared test stack would break the other test files.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { freePort } from '../../tools/net';

const run = promisify(execFile);
const STACK = join(__dirname, '../../scripts/stack.sh');

export type StackService = 'postgres' | 'redis' | 'orthanc';

/** Settings that point a gateway, a worker or the DIMSE helpers at a private stack. */
export const STACK_KEYS = [
  'DATABASE_URL',
  'REDIS_URL',
  'ORTHANC_URL',
  'ORTHANC_USERNAME',
  'ORTHANC_PASSWORD',
  'ORTHANC_DICOM_PORT',
] as const;

export interface PrivateStack {
  dir: string;
  /** KEY=value settings printed by `stack.sh up`. */
  env: Record<string, string>;
  /** Runs `stack.sh up` again (the restart path after a crash) and returns what it logged. */
  up(): Promise<string>;
  /** The pid the stack's own files name for a service (postmaster.pid, redis.pid, orthanc.pid). */
  pidOf(service: StackService): number | undefined;
  /** kill -9 of a service's main process; returns once the process is gone. */
  kill(service: StackService): Promise<void>;
  /** Points process.env at this stack (for helpers that read it, e.g. cstore); returns a function that undoes it. */
  useInProcessEnv(): () => void;
  /** `stack.sh down` and removes the folder. */
  destroy(): Promise<void>;
}

/** True while a process exists and is not a zombie (an unreaped zombie still answers kill -0). */
export function processRuns(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) !== 'Z';
  } catch {
    return false;
  }
}

/** Stack script settings for a new stack in `dir`: free ports, a short stable age, no fsync (tests only). */
export async function freshStackEnv(dir: string): Promise<Record<string, string>> {
  return {
    STACK_DIR: dir,
    PG_PORT: String(await freePort()),
    REDIS_PORT: String(await freePort()),
    ORTHANC_HTTP_PORT: String(await freePort()),
    ORTHANC_DICOM_PORT: String(await freePort()),
    ORTHANC_STABLE_AGE: '2',
    PG_FSYNC: 'off',
  };
}

/** The KEY=value lines `stack.sh up` prints, as settings. */
export function parseStackEnv(stdout: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) env[m[1]] = m[2];
  }
  return env;
}

/** Starts a private stack (`settings`: stack.sh variables such as ORTHANC_INDEX). */
export async function startPrivateStack(
  prefix = 'aperture-private-',
  settings: Record<string, string> = {},
): Promise<PrivateStack> {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  const stackEnv = { ...process.env, ...(await freshStackEnv(dir)), ...settings };
  const up = async () => {
    const { stdout, stderr } = await run('bash', [STACK, 'up'], {
      env: stackEnv,
      timeout: 300_000,
      encoding: 'utf8',
    });
    return { env: parseStackEnv(stdout), log: stderr };
  };
  const first = await up();
  const pidFiles: Record<StackService, string> = {
    postgres: join(dir, 'pg/postmaster.pid'),
    redis: join(dir, 'redis/redis.pid'),
    orthanc: join(dir, 'orthanc/orthanc.pid'),
  };
  const pidOf = (service: StackService) => {
    const f = pidFiles[service];
    if (!existsSync(f)) return undefined;
    const pid = Number(readFileSync(f, 'utf8').split('\n')[0].trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  };
  return {
    dir,
    env: first.env,
    async up() {
      return (await up()).log;
    },
    pidOf,
    async kill(service) {
      const pid = pidOf(service);
      if (!pid) throw new Error(`no pid for ${service}`);
      process.kill(pid, 'SIGKILL');
      const deadline = Date.now() + 10_000;
      while (processRuns(pid)) {
        if (Date.now() > deadline) throw new Error(`${service} (pid ${pid}) did not die`);
        await new Promise((r) => setTimeout(r, 20));
      }
    },
    useInProcessEnv() {
      const saved: Record<string, string | undefined> = {};
      for (const k of STACK_KEYS) {
        saved[k] = process.env[k];
        process.env[k] = first.env[k];
      }
      return () => {
        for (const k of STACK_KEYS) {
          if (saved[k] === undefined) delete process.env[k];
          else process.env[k] = saved[k];
        }
      };
    },
    async destroy() {
      await run('bash', [STACK, 'down'], { env: stackEnv, timeout: 120_000 }).catch(() => undefined);
      if (!process.env.APERTURE_KEEP_TEST_STACK) rmSync(dir, { recursive: true, force: true });
    },
  };
}
