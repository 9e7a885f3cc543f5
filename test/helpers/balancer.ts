/**
 * A real HAProxy (Debian's) in front of gateway processes, as production runs it: health checks on /readyz, L7
 * retries of requests a backend refused before answering, and the backend that answered named in X-Served-By.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../tools/net';
import { waitFor } from './dimse';

export interface Haproxy {
  /** Per server of each backend: sessions it has taken so far (HAProxy's `stot`). */
  sessions(): Promise<Record<string, number>>;
  stop(): Promise<void>;
}

/** The defaults every test balancer shares. */
const DEFAULTS = [
  'defaults',
  '  timeout connect 2s',
  '  timeout client 60s',
  '  timeout server 60s',
  // A health check slower than this counts as failed; a loaded machine answers /readyz in well under it.
  '  timeout check 2s',
  '  option redispatch',
  '  retries 3',
];

/** Starts HAProxy with `sections` (frontends and backends) after the shared defaults and a stats socket. */
export async function startHaproxy(sections: string[]): Promise<Haproxy> {
  const dir = mkdtempSync(join(tmpdir(), 'aperture-lb-'));
  const sock = join(dir, 'stats.sock');
  const cfgPath = join(dir, 'haproxy.cfg');
  writeFileSync(
    cfgPath,
    [
      'global',
      '  maxconn 512',
      `  stats socket ${sock} mode 600 level admin`,
      ...DEFAULTS,
      ...sections,
      '',
    ].join('\n'),
  );
  const child: ChildProcess = spawn('haproxy', ['-db', '-f', cfgPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  await waitFor(
    'HAProxy to start',
    async () => {
      if (child.exitCode !== null) throw new Error(`haproxy exited: ${stderr}`);
      return (await stat(sock).catch(() => '')).length > 0;
    },
    30_000,
    100,
  );
  return {
    async sessions() {
      const csv = await stat(sock);
      const [head, ...rows] = csv.replace(/^# /, '').trim().split('\n');
      const cols = head.split(',');
      const out: Record<string, number> = {};
      for (const row of rows) {
        const v = row.split(',');
        const [px, sv] = [v[cols.indexOf('pxname')], v[cols.indexOf('svname')]];
        if (sv !== 'FRONTEND' && sv !== 'BACKEND') out[`${px}/${sv}`] = Number(v[cols.indexOf('stot')]);
      }
      return out;
    },
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

function stat(sock: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const c = createConnection(sock);
    let out = '';
    c.on('data', (d) => (out += d.toString()));
    c.on('end', () => resolve(out));
    c.on('error', reject);
    c.write('show stat\n');
  });
}

/** Lines of an HTTP backend of gateways checked on /readyz, answering with X-Served-By. */
export function gatewayBackend(
  name: string,
  backends: Record<string, string>,
  checkIntervalMs = 250,
): string[] {
  return [
    `backend ${name}`,
    '  mode http',
    '  balance roundrobin',
    // A request the backend closed or refused before any answer byte is sent to the other backend.
    '  retry-on conn-failure empty-response',
    '  option httpchk GET /readyz',
    '  http-check expect status 200',
    '  http-response set-header X-Served-By %s',
    ...Object.entries(backends).map(([server, url]) => {
      const { hostname, port } = new URL(url);
      return `  server ${server} ${hostname}:${port} check inter ${checkIntervalMs}ms fall 2 rise 1`;
    }),
  ];
}

export interface Balancer {
  url: string;
  stop(): Promise<void>;
}

/** Starts HAProxy on a free loopback port over `backends` (name → base URL); resolves once every backend is up. */
export async function startBalancer(backends: Record<string, string>): Promise<Balancer> {
  const port = await freePort();
  const proxy = await startHaproxy([
    'frontend gateways',
    '  mode http',
    `  bind 127.0.0.1:${port}`,
    '  default_backend gateways',
    ...gatewayBackend('gateways', backends),
  ]);
  const url = `http://127.0.0.1:${port}`;
  await waitForEvery(url, Object.keys(backends));
  return { url, stop: () => proxy.stop() };
}

/** Resolves once each named backend has answered a proxied /healthz. */
export async function waitForEvery(url: string, names: string[]): Promise<void> {
  await waitFor(
    'HAProxy to route to every gateway',
    async () => {
      const seen = new Set<string>();
      for (let i = 0; i < names.length * 3; i++) {
        const res = await fetch(`${url}/healthz`).catch(() => undefined);
        const by = res?.headers.get('x-served-by');
        if (by) seen.add(by);
      }
      return seen.size === names.length;
    },
    30_000,
    200,
  );
}

/**
 * A second Orthanc on the configuration of the stack in `stackDir` (same PostgreSQL index, same storage folder, as
 * Orthanc supports), on free ports of its own; stopped by killing `child`.
 */
export async function startOrthancReplica(
  stackDir: string,
  env: Record<string, string>,
): Promise<{ http: number; dicom: number; child: ChildProcess }> {
  const http = await freePort();
  const dicom = await freePort();
  const dir = join(stackDir, 'orthanc2');
  mkdirSync(dir, { recursive: true });
  const cfg = readFileSync(join(stackDir, 'orthanc/orthanc.json'), 'utf8')
    .replace(/"HttpPort"\s*:\s*\d+/, `"HttpPort" : ${http}`)
    .replace(/"DicomPort"\s*:\s*\d+/, `"DicomPort" : ${dicom}`);
  if (!cfg.includes('libOrthancPostgreSQLIndex'))
    throw new Error('an Orthanc replica needs the stack on the PostgreSQL index (ORTHANC_INDEX=postgresql)');
  writeFileSync(join(dir, 'orthanc.json'), cfg);
  const child = spawn('Orthanc', [`--logdir=${dir}`, join(dir, 'orthanc.json')], {
    env: {
      ...process.env,
      LD_PRELOAD: join(__dirname, '../../scripts/loopback-bind.so'),
      APERTURE_LOOPBACK_PORTS: String(http),
    },
    stdio: 'ignore',
  });
  const auth = 'Basic ' + Buffer.from(`${env.ORTHANC_USERNAME}:${env.ORTHANC_PASSWORD}`).toString('base64');
  await waitFor(
    'the second Orthanc',
    async () => {
      if (child.exitCode !== null) throw new Error(`second Orthanc exited with ${child.exitCode}`);
      return (
        await fetch(`http://127.0.0.1:${http}/system`, { headers: { authorization: auth } }).catch(
          () => undefined,
        )
      )?.ok;
    },
    60_000,
    200,
  );
  return { http, dicom, child };
}
