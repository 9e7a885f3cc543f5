/**
 * Indexing lag: from a C-STORE accepted by the archive (dcmsend, one association per instance, as a modality sends)
 * to the instance being visible in a project (in the index, or through QIDO-RS with --via qido). Prints JSON with
 * p50/p95 over N instances.
 *
 *   tsx bench/lag.ts [--n 50] [--via index|qido] [--gateway-url URL] [--poll-ms 250]
 *
 * Settings come from the environment or the env file scripts/stack.sh writes (APERTURE_ENV_FILE, default
 * .stack/dev/env): DATABASE_URL, ORTHANC_*, ORTHANC_DICOM_PORT. Without --gateway-url a gateway process
 * (src/main.ts, indexer on, INDEXER_POLL_MS from --poll-ms) is started for the run and stopped after it; with it, that
 * gateway's indexer must be running and AUTH_ENABLED=false (or BENCH_TOKEN set) for --via qido.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import dcmjs from 'dcmjs';
import { Pool } from 'pg';
import { freePort } from '../tools/net';

const ROOT = join(__dirname, '..');
const run = promisify(execFile);
const CALLED_AET = 'LAGBENCH';
const PROJECT = 'bench-lag';

interface Args {
  n: number;
  via: 'index' | 'qido';
  gatewayUrl?: string;
  pollMs: number;
  template: string;
}

function parseArgs(argv: string[]): Args {
  const args: Args = {
    n: 50,
    via: 'index',
    pollMs: 250,
    template: join(ROOT, '../shared/dicom-samples/hierarchy/77654033/CT2/17106'),
  };
  for (let i = 0; i < argv.length; i++) {
    const [k, v] = [argv[i], argv[i + 1]];
    if (k === '--n') args.n = Number(v);
    else if (k === '--via') args.via = v === 'qido' ? 'qido' : 'index';
    else if (k === '--gateway-url') args.gatewayUrl = v;
    else if (k === '--poll-ms') args.pollMs = Number(v);
    else if (k === '--template') args.template = v;
    else continue;
    i++;
  }
  if (!Number.isInteger(args.n) || args.n < 1) throw new Error('--n: a positive integer');
  return args;
}

/** The stack's settings: the environment over the env file. */
function stackEnv(): Record<string, string> {
  const file = process.env.APERTURE_ENV_FILE ?? join(ROOT, '.stack/dev/env');
  const out: Record<string, string> = {};
  if (existsSync(file)) {
    for (const line of readFileSync(file, 'utf8').split('\n')) {
      const m = /^([A-Z][A-Z0-9_]*)=(.*)$/.exec(line.trim());
      if (m) out[m[1]] = m[2];
    }
  }
  for (const k of [
    'DATABASE_URL',
    'REDIS_URL',
    'ORTHANC_URL',
    'ORTHANC_USERNAME',
    'ORTHANC_PASSWORD',
    'ORTHANC_DICOM_PORT',
  ]) {
    if (process.env[k]) out[k] = process.env[k]!;
  }
  for (const k of ['DATABASE_URL', 'ORTHANC_URL', 'ORTHANC_DICOM_PORT']) {
    if (!out[k])
      throw new Error(
        `${k} not set (start a stack with scripts/stack.sh and point APERTURE_ENV_FILE at its env)`,
      );
  }
  return out;
}

function newUid(): string {
  return '2.25.' + BigInt('0x' + randomUUID().replace(/-/g, '')).toString();
}

/** A copy of the template under fresh Study/Series/SOP Instance UIDs. */
function copyOf(template: Buffer): { bytes: Buffer; sopInstanceUid: string } {
  const ab = template.buffer.slice(
    template.byteOffset,
    template.byteOffset + template.byteLength,
  ) as ArrayBuffer;
  const d = dcmjs.data.DicomMessage.readFile(ab);
  const sop = newUid();
  d.dict['0020000D'] = { vr: 'UI', Value: [newUid()] };
  d.dict['0020000E'] = { vr: 'UI', Value: [newUid()] };
  d.dict['00080018'] = { vr: 'UI', Value: [sop] };
  d.meta['00020003'] = { vr: 'UI', Value: [sop] };
  return { bytes: Buffer.from(d.write()), sopInstanceUid: sop };
}

async function startGateway(
  env: Record<string, string>,
  pollMs: number,
): Promise<{ url: string; child: ChildProcess }> {
  const port = await freePort();
  const child = spawn(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts')], {
    cwd: ROOT,
    env: {
      ...process.env,
      ...env,
      PORT: String(port),
      HOST: '127.0.0.1',
      AUTH_ENABLED: 'false',
      INDEXER_ENABLED: 'true',
      INDEXER_POLL_MS: String(pollMs),
      LOG_LEVEL: 'warn',
    },
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  const url = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 1200; i++) {
    if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}`);
    try {
      if ((await fetch(`${url}/healthz`)).ok) return { url, child };
    } catch {
      /* not up yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('gateway did not start');
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const idx = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[idx];
}

/** What measureLag reports. */
export interface LagResult {
  metric: string;
  via: 'index' | 'qido';
  n: number;
  pollMs?: number;
  p50Ms: number;
  p95Ms: number;
  maxMs: number;
  meanMs: number;
  targetP95Ms: number;
  met: boolean;
  seconds: number;
}

/** Runs the lag measurement (see the file comment); `env` defaults to the stack's settings. */
export async function measureLag(
  opts: Partial<Args> = {},
  stack?: Record<string, string>,
): Promise<LagResult> {
  const args = { ...parseArgs([]), ...opts };
  const env = stack ?? stackEnv();
  const db = new Pool({ connectionString: env.DATABASE_URL, max: 2 });
  const dir = mkdtempSync(join(tmpdir(), 'aperture-lag-'));
  let gateway: { url: string; child: ChildProcess } | undefined;
  try {
    const url = args.gatewayUrl ?? (gateway = await startGateway(env, args.pollMs)).url;
    // Arrivals called LAGBENCH go to the bench project, so that QIDO (which shows projects, not quarantine) sees them.
    await db.query(
      `INSERT INTO projects (id, name) VALUES ($1, 'Indexing lag benchmark') ON CONFLICT DO NOTHING`,
      [PROJECT],
    );
    await db.query(
      `INSERT INTO routing_rules (project_id, position, kind, match, value)
       SELECT $1, -1, 'called_aet', 'equals', $2
        WHERE NOT EXISTS (SELECT 1 FROM routing_rules WHERE project_id = $1 AND kind = 'called_aet' AND value = $2)`,
      [PROJECT, CALLED_AET],
    );
    const template = readFileSync(args.template);
    const headers: Record<string, string> = { accept: 'application/dicom+json' };
    if (process.env.BENCH_TOKEN) headers.authorization = `Bearer ${process.env.BENCH_TOKEN}`;
    const visible = async (sop: string): Promise<boolean> => {
      if (args.via === 'qido') {
        const res = await fetch(`${url}/projects/${PROJECT}/dicom-web/instances?SOPInstanceUID=${sop}`, {
          headers,
        });
        if (res.status === 204) return false;
        if (res.status !== 200) throw new Error(`QIDO answered ${res.status}`);
        return ((await res.json()) as unknown[]).length > 0;
      }
      const r = await db.query(
        'SELECT 1 FROM project_instances WHERE project_id = $1 AND sop_instance_uid = $2',
        [PROJECT, sop],
      );
      return r.rows.length > 0;
    };

    const lags: number[] = [];
    const started = Date.now();
    for (let i = 0; i < args.n; i++) {
      const { bytes, sopInstanceUid } = copyOf(template);
      const path = join(dir, `${i}.dcm`);
      writeFileSync(path, bytes);
      await run('dcmsend', ['-aet', 'LAGSCU', '-aec', CALLED_AET, '127.0.0.1', env.ORTHANC_DICOM_PORT, path]);
      const accepted = performance.now();
      for (;;) {
        if (await visible(sopInstanceUid)) break;
        if (performance.now() - accepted > 30_000) throw new Error(`instance ${i} not visible after 30 s`);
        await new Promise((r) => setTimeout(r, 5));
      }
      lags.push(performance.now() - accepted);
      // A random pause, so that arrivals do not fall into step with the indexer's polling.
      await new Promise((r) => setTimeout(r, Math.random() * 200));
    }
    const sorted = [...lags].sort((a, b) => a - b);
    const round = (x: number) => Math.round(x * 10) / 10;
    return {
      metric: 'indexing lag (C-STORE accepted → visible)',
      via: args.via,
      n: lags.length,
      pollMs: args.gatewayUrl ? undefined : args.pollMs,
      p50Ms: round(percentile(sorted, 50)),
      p95Ms: round(percentile(sorted, 95)),
      maxMs: round(sorted[sorted.length - 1]),
      meanMs: round(lags.reduce((a, b) => a + b, 0) / lags.length),
      targetP95Ms: 1000,
      met: percentile(sorted, 95) < 1000,
      seconds: round((Date.now() - started) / 1000),
    };
  } finally {
    if (gateway && gateway.child.exitCode === null) {
      const exited = new Promise((r) => gateway!.child.once('exit', r));
      gateway.child.kill('SIGTERM');
      await exited;
    }
    await db.end();
    rmSync(dir, { recursive: true, force: true });
  }
}

if (require.main === module) {
  measureLag(parseArgs(process.argv.slice(2)))
    .then((r) => console.log(JSON.stringify(r, null, 2)))
    .catch((err) => {
      console.error(err instanceof Error ? err.message : err);
      process.exit(1);
    });
}
