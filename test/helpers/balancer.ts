/**
 * A real HAProxy (Debian's) in front of gateway processes, as production runs it: health checks on /readyz, L7
 * retries of requests a backend refused before answering, and the backend that answered named in X-Served-By.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { freePort } from '../../tools/net';
import { waitFor } from './dimse';

export interface Balancer {
  url: string;
  stop(): Promise<void>;
}

/** Starts HAProxy on a free loopback port over `backends` (name → base URL); resolves once every backend is up. */
export async function startBalancer(
  backends: Record<string, string>,
  checkIntervalMs = 250,
): Promise<Balancer> {
  const dir = mkdtempSync(join(tmpdir(), 'aperture-lb-'));
  const port = await freePort();
  const servers = Object.entries(backends).map(([name, url]) => {
    const { hostname, port: p } = new URL(url);
    return `  server ${name} ${hostname}:${p} check inter ${checkIntervalMs}ms fall 2 rise 1`;
  });
  const cfg = [
    'global',
    '  maxconn 512',
    'defaults',
    '  mode http',
    '  timeout connect 2s',
    '  timeout client 60s',
    '  timeout server 60s',
    // A health check slower than this counts as failed; a loaded machine answers /readyz in well under it.
    '  timeout check 2s',
    '  option redispatch',
    '  retries 3',
    // A request the backend closed or refused before any answer byte is sent to the other backend.
    '  retry-on conn-failure empty-response',
    'frontend gateways',
    `  bind 127.0.0.1:${port}`,
    '  default_backend gateways',
    'backend gateways',
    '  balance roundrobin',
    '  option httpchk GET /readyz',
    '  http-check expect status 200',
    '  http-response set-header X-Served-By %s',
    ...servers,
    '',
  ].join('\n');
  const cfgPath = join(dir, 'haproxy.cfg');
  writeFileSync(cfgPath, cfg);
  const child: ChildProcess = spawn('haproxy', ['-db', '-f', cfgPath], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => (stderr = (stderr + c.toString()).slice(-4000)));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const url = `http://127.0.0.1:${port}`;
  const names = Object.keys(backends);
  // Up when each backend has answered at least one proxied request.
  await waitFor(
    'HAProxy to route to every gateway',
    async () => {
      if (child.exitCode !== null) throw new Error(`haproxy exited: ${stderr}`);
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
  return {
    url,
    async stop() {
      if (child.exitCode === null) child.kill('SIGTERM');
      await exited;
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
