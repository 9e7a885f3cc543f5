import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { GATEWAY_NODE_FLAGS } from '../../tools/gateway-node-flags';
import { msSince } from './stats';

const ROOT = join(__dirname, '../..');

/** Settings of a running local stack, as scripts/stack.sh prints them. */
export type StackEnv = Record<string, string>;

/** The bench stack's folder: BENCH_STACK_DIR, or .stack/bench. */
function benchStackDir(): string {
  return process.env.BENCH_STACK_DIR ?? join(ROOT, '.stack/bench');
}

/**
 * Starts (or reuses) the benchmark stack in .stack/bench on its own ports, so benchmarks never touch the demo's
 * or a test run's data.
 */
export function benchStackUp(opts: { fresh?: boolean } = {}): StackEnv {
  const env = {
    ...process.env,
    STACK_DIR: benchStackDir(),
    PG_PORT: process.env.BENCH_PG_PORT ?? '25532',
    REDIS_PORT: process.env.BENCH_REDIS_PORT ?? '26479',
    ORTHANC_HTTP_PORT: process.env.BENCH_ORTHANC_HTTP_PORT ?? '28142',
    ORTHANC_DICOM_PORT: process.env.BENCH_ORTHANC_DICOM_PORT ?? '24342',
  };
  if (opts.fresh) execFileSync('bash', [join(ROOT, 'scripts/stack.sh'), 'wipe'], { env, stdio: 'inherit' });
  const out = execFileSync('bash', [join(ROOT, 'scripts/stack.sh'), 'up'], { env, encoding: 'utf8' });
  return parseEnv(out);
}

/** The index Orthanc runs on in the bench stack (its ports file says), for the suites' set-up text. */
export function orthancIndexName(): string {
  const saved = readEnvFile(join(benchStackDir(), 'ports'));
  return saved.ORTHANC_INDEX === 'sqlite' ? 'SQLite' : 'PostgreSQL';
}

/** Stops the benchmark stack. */
export function benchStackDown(): void {
  const env = { ...process.env, STACK_DIR: benchStackDir() };
  execFileSync('bash', [join(ROOT, 'scripts/stack.sh'), 'down'], { env, stdio: 'inherit' });
}

/** KEY=value lines → object. */
export function parseEnv(text: string): StackEnv {
  const out: StackEnv = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(line.trim());
    if (m) out[m[1]] = m[2];
  }
  return out;
}

/** Reads an env file written by scripts/stack.sh. */
export function readEnvFile(path: string): StackEnv {
  return parseEnv(readFileSync(path, 'utf8'));
}

/** A gateway running as its own process (so its RSS can be measured), on `port`. */
export interface GatewayProcess {
  url: string;
  pid: number;
  child: ChildProcess;
  rssMb(): number;
  stop(): Promise<void>;
}

/**
 * Starts `src/main.ts` with the stack's settings plus `extra` (and Node options `nodeArgs`), and waits until /healthz
 * answers. `root`: the source tree to run (this one by default; bench/qido-ab.ts runs others).
 */
export async function startGatewayProcess(
  stack: StackEnv,
  port: number,
  extra: Record<string, string> = {},
  nodeArgs: readonly string[] = [],
  root: string = ROOT,
): Promise<GatewayProcess> {
  // `node --import tsx` rather than the tsx CLI, which would run the gateway in a grandchild whose RSS we'd miss.
  const child = spawn(
    process.execPath,
    [
      ...GATEWAY_NODE_FLAGS,
      ...extraGatewayNodeArgs(),
      ...nodeArgs,
      '--import',
      'tsx',
      join(root, 'src/main.ts'),
    ],
    {
      cwd: root,
      env: {
        ...process.env,
        ...stack,
        PORT: String(port),
        HOST: '127.0.0.1',
        LOG_LEVEL: 'warn',
        ...extra,
        ...extraGatewayEnv(),
      },
      stdio: ['ignore', 'inherit', 'inherit'],
    },
  );
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) break;
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    url,
    pid: child.pid!,
    child,
    rssMb: () => rssOf(child.pid!),
    stop: () =>
      new Promise<void>((resolve) => {
        // A child killed by a signal has signalCode set and exitCode null.
        if (child.exitCode !== null || child.signalCode !== null) return resolve();
        child.once('exit', () => resolve());
        child.kill('SIGTERM');
      }),
  };
}

/**
 * More Node flags for every gateway a bench starts, from BENCH_GATEWAY_NODE_ARGS (space-separated), after
 * GATEWAY_NODE_FLAGS: how the young-generation comparison in bench/REPORT.md ("Where the time-to-first-byte tail comes
 * from") was run, e.g. `BENCH_GATEWAY_NODE_ARGS=--max-semi-space-size=1`.
 */
function extraGatewayNodeArgs(): string[] {
  return (process.env.BENCH_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
}

/**
 * Settings every gateway a bench starts gets last, from BENCH_GATEWAY_ENV (space-separated KEY=value): how an A/B of
 * one setting is run on one tree, e.g. `BENCH_GATEWAY_ENV=ARCHIVE_FILE_READS=false`.
 */
function extraGatewayEnv(): Record<string, string> {
  return parseEnv((process.env.BENCH_GATEWAY_ENV ?? '').split(' ').join('\n'));
}

/** Resident set size of a process in MB, from /proc (Linux). */
export function rssOf(pid: number): number {
  try {
    const status = readFileSync(`/proc/${pid}/status`, 'utf8');
    const m = /VmRSS:\s+(\d+)\s+kB/.exec(status);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

/** CPU time (user + system) a process has used so far, in ms, from /proc (Linux; clock ticks of 10 ms). */
export function cpuMsOf(pid: number): number {
  try {
    // Fields after the command name (which may hold spaces) start at the state, field 3; utime and stime are 14, 15.
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    return (Number(fields[11]) + Number(fields[12])) * 10;
  } catch {
    return NaN;
  }
}

/** CPU time (ms) of a process and of its children alive now (e.g. PostgreSQL's postmaster and its backends). */
export function cpuMsOfTree(pid: number): number {
  let total = cpuMsOf(pid);
  if (!Number.isFinite(total)) return NaN;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry) || Number(entry) === pid) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) total += cpuMsOf(Number(entry));
    } catch {
      /* gone meanwhile */
    }
  }
  return total;
}

/** The pid a stack service wrote (`pg/postmaster.pid`, `orthanc/orthanc.pid` under the bench stack folder), or NaN. */
export function stackPid(relativePidFile: string): number {
  try {
    const dir = benchStackDir();
    return Number(readFileSync(join(dir, relativePidFile), 'utf8').split('\n')[0].trim());
  } catch {
    return NaN;
  }
}

/** Basic auth header for Orthanc direct calls. */
export function orthancAuth(stack: StackEnv): string {
  return 'Basic ' + Buffer.from(`${stack.ORTHANC_USERNAME}:${stack.ORTHANC_PASSWORD}`).toString('base64');
}

/** Creates a project through the gateway's API (a gateway with AUTH_ENABLED=false); an existing one is fine. */
export async function createProject(gatewayUrl: string, id: string, name: string): Promise<void> {
  const res = await fetch(`${gatewayUrl}/api/projects`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ id, name }),
  });
  await res.arrayBuffer();
  if (res.status !== 201 && res.status !== 409) throw new Error(`creating project ${id}: HTTP ${res.status}`);
}

/**
 * Stores objects straight into Orthanc by `POST /instances`, `inFlight` at a time (after `before(i)` for object i, when
 * given), retried as the gateway's archive retries (src/orthanc/archive.ts): Orthanc on PostgreSQL now and then gives
 * up on a conflicting transaction under concurrent stores and answers 500. Answers instances/s and the retries made.
 */
export async function storeInOrthanc(
  stack: StackEnv,
  objs: ReadonlyArray<{ buffer: Buffer }>,
  inFlight: number,
  before?: (i: number) => Promise<void>,
): Promise<{ rate: number; retries: number }> {
  const auth = orthancAuth(stack);
  let k = 0;
  let retries = 0;
  const t = process.hrtime.bigint();
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      for (let i = k++; i < objs.length; i = k++) {
        if (before) await before(i);
        for (let attempt = 1; ; attempt++) {
          const res = await fetch(`${stack.ORTHANC_URL}/instances`, {
            method: 'POST',
            headers: { authorization: auth, 'content-type': 'application/dicom' },
            body: objs[i].buffer,
          });
          await res.arrayBuffer();
          if (res.ok) break;
          if (res.status !== 500 || attempt >= 5) throw new Error(`Orthanc store: HTTP ${res.status}`);
          retries++;
          await new Promise((r) => setTimeout(r, 50 * attempt + Math.random() * 150));
        }
      }
    }),
  );
  return { rate: objs.length / (msSince(t) / 1000), retries };
}

/**
 * Orthanc's own `POST /studies/{id}/anonymize` of the given studies (Orthanc ids), all at once and synchronous, so that
 * its job engine runs them with its own concurrency. Answers instances/s over `instances` (the studies' total).
 */
export async function anonymizeInOrthanc(
  stack: StackEnv,
  studyIds: readonly string[],
  instances: number,
): Promise<number> {
  const auth = orthancAuth(stack);
  const t = process.hrtime.bigint();
  await Promise.all(
    studyIds.map(async (id) => {
      const res = await fetch(`${stack.ORTHANC_URL}/studies/${id}/anonymize`, {
        method: 'POST',
        headers: { authorization: auth, 'content-type': 'application/json' },
        body: JSON.stringify({ Synchronous: true }),
      });
      if (!res.ok) throw new Error(`Orthanc anonymize: HTTP ${res.status}`);
      await res.arrayBuffer();
    }),
  );
  return instances / (msSince(t) / 1000);
}
