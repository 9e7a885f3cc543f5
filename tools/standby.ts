/**
 * A PostgreSQL streaming standby on this machine, for the two-site tests and benchmarks (issue 16): the base backup
 * that seeds it and the start/stop of its server, as the cluster's owner (postgres when we are root). Outside the
 * production build: operators use `aperture failback` and their own service manager.
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';

const exec = promisify(execFile);

/** The newest PostgreSQL server tools (Debian: /usr/lib/postgresql/N/bin). */
export const PG_BIN = `/usr/lib/postgresql/${readdirSync('/usr/lib/postgresql')
  .filter((v) => /^\d+$/.test(v))
  .sort((a, b) => Number(a) - Number(b))
  .at(-1)}/bin`;

/** Runs a PostgreSQL server tool as the cluster's owner (postgres when we are root). */
export function asPg(tool: string, args: string[], timeoutMs = 300_000): Promise<{ stdout: string }> {
  const root = process.getuid?.() === 0;
  return exec(
    root ? 'runuser' : join(PG_BIN, tool),
    root ? ['-u', 'postgres', '--', join(PG_BIN, tool), ...args] : args,
    { timeout: timeoutMs, encoding: 'utf8' },
  );
}

/** Seeds `dataDir` (new or empty, writable by the owner) as a standby of `primaryUrl` named `name`. */
export async function seedStandby(primaryUrl: string, dataDir: string, name: string): Promise<void> {
  const p = new URL(primaryUrl);
  await asPg('pg_basebackup', [
    ...['-h', p.hostname, '-p', p.port, '-U', decodeURIComponent(p.username) || 'postgres', '-D', dataDir],
    ...['-R', '-X', 'stream', '-c', 'fast', '-d', `application_name=${name}`],
  ]);
}

/** Starts the server on a data folder (a standby when the folder says so), on loopback `port`. */
export async function startCluster(opts: {
  dataDir: string;
  port: number | string;
  /** Unix socket folder and where the log goes (owner-writable). */
  socketDir: string;
  logFile: string;
  /** Extra `-c name=value` settings. */
  settings?: string[];
}): Promise<void> {
  await asPg('pg_ctl', [
    ...['-D', opts.dataDir, '-l', opts.logFile, '-w', '-t', '60', '-o'],
    [
      `-p ${opts.port} -k ${opts.socketDir} -c listen_addresses=127.0.0.1 -c max_connections=200`,
      ...(opts.settings ?? []).map((s) => `-c ${s}`),
    ].join(' '),
    'start',
  ]);
}

/** Stops the server on a data folder at once (a lost site); no error when it is not running. */
export async function stopCluster(dataDir: string): Promise<void> {
  await asPg('pg_ctl', ['-D', dataDir, '-m', 'immediate', '-w', 'stop']).catch(() => undefined);
}
