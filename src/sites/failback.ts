/**
 * Failback (issue 16; docs/two-sites.md): after a failover, the old primary's PostgreSQL folder is turned into a
 * standby of the promoted site. pg_rewind where it can (the folder is rewound to where the timelines split, copying
 * only what changed; it needs `wal_log_hints = on` or data checksums on the old primary), else a fresh
 * `pg_basebackup` into a new folder that then takes the old one's place (the old folder is kept beside it, renamed,
 * for whatever it held that never reached the other site). Either way the folder gets `standby.signal` and a
 * `primary_conninfo` naming the promoted site, so it starts as its standby.
 *
 * Refuses while the old primary still runs (it must not take writes, and neither tool works on a live folder) and
 * when the other site is not a primary (nothing to follow).
 */
import { execFile } from 'node:child_process';
import { chown, mkdir, readdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Pool } from 'pg';
import { isInRecovery } from '../index-db/sites';
import { pgBinDir } from './backup';

export interface FailbackOptions {
  /** The old primary's data folder (stopped). */
  pgData: string;
  /** postgres:// URL of the promoted site (a superuser: pg_rewind and pg_basebackup read the whole cluster). */
  newPrimaryUrl: string;
  /** postgres:// URL the old primary answered on: asked, to refuse while it still takes writes. */
  oldPrimaryUrl?: string;
  /** application_name this standby reports (what `synchronous_standby_names` at the promoted site names). */
  name: string;
  /** Skip pg_rewind and re-seed with a base backup. */
  noRewind?: boolean;
  pgBin?: string;
  now?: Date;
}

export interface FailbackReport {
  method: 'rewind' | 'basebackup';
  /** Why pg_rewind was not used (its own message), when it was tried and failed. */
  rewindError?: string;
  /** Where the old folder went (base backup only). */
  keptOldFolder?: string;
  primaryConninfo: string;
  seconds: number;
}

/** Whether a PostgreSQL server answers as a primary (true), a standby (false), or not at all (undefined). */
export async function answersAsPrimary(url: string): Promise<boolean | undefined> {
  const db = new Pool({ connectionString: url, max: 1, connectionTimeoutMillis: 3000 });
  db.on('error', () => undefined);
  try {
    return !(await isInRecovery(db));
  } catch {
    return undefined;
  } finally {
    await db.end().catch(() => undefined);
  }
}

/** The live postmaster that owns a data folder, if any (postmaster.pid names it and it exists). */
async function livePostmaster(pgData: string): Promise<number | undefined> {
  const text = await readFile(join(pgData, 'postmaster.pid'), 'utf8').catch(() => '');
  const pid = Number(text.split('\n')[0]);
  if (!pid) return undefined;
  try {
    process.kill(pid, 0);
  } catch {
    return undefined;
  }
  // A zombie still answers kill -0; /proc says whether it is one.
  const st = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  return / Z /.test(st) ? undefined : pid;
}

/** libpq keyword=value connection string from a postgres:// URL (what primary_conninfo holds). */
export function conninfoOf(url: string, applicationName: string): string {
  const u = new URL(url);
  const q = (v: string) => `'${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
  const parts = [
    `host=${q(u.hostname)}`,
    `port=${q(u.port || '5432')}`,
    `user=${q(decodeURIComponent(u.username) || 'postgres')}`,
  ];
  if (u.password) parts.push(`password=${q(decodeURIComponent(u.password))}`);
  parts.push(`application_name=${q(applicationName)}`);
  return parts.join(' ');
}

/** Runs a PostgreSQL server tool as the folder's owner (they refuse to run as root, and must write as the owner). */
function runAs(
  owner: { uid: number; gid: number },
  cmd: string,
  args: string[],
  env?: NodeJS.ProcessEnv,
): Promise<string> {
  const root = process.getuid?.() === 0;
  return new Promise((resolve, reject) => {
    execFile(
      cmd,
      args,
      {
        env: { ...process.env, ...env },
        maxBuffer: 16 * 1024 ** 2,
        timeout: 3_600_000,
        ...(root ? { uid: owner.uid, gid: owner.gid } : {}),
        // The tools write into the folder as its owner; a cwd they cannot read makes some of them fail.
        cwd: '/',
      },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(`${basename(cmd)}: ${(stderr || err.message).trim().split('\n').slice(-3).join(' ')}`),
          );
        else resolve(stdout);
      },
    );
  });
}

/** Turns the stopped old primary at `pgData` into a standby of the promoted site. */
export async function failback(o: FailbackOptions): Promise<FailbackReport> {
  const started = Date.now();
  const pid = await livePostmaster(o.pgData);
  if (pid)
    throw new Error(
      `PostgreSQL is still running on ${o.pgData} (pid ${pid}): stop it first, so that this site takes no writes`,
    );
  const oldRole = o.oldPrimaryUrl ? await answersAsPrimary(o.oldPrimaryUrl) : undefined;
  if (oldRole === true)
    throw new Error('the old primary still answers as a primary (it accepts writes): stop it first');
  if (oldRole === false) throw new Error('the old primary still runs (as a standby): stop it first');
  const newRole = await answersAsPrimary(o.newPrimaryUrl);
  if (newRole === undefined) throw new Error('the new primary does not answer: nothing to follow');
  if (!newRole) throw new Error('the new primary is still a standby: run `aperture failover` there first');
  const st = await stat(o.pgData).catch(() => undefined);
  if (!st?.isDirectory() || !(await readFile(join(o.pgData, 'PG_VERSION'), 'utf8').catch(() => '')))
    throw new Error(`${o.pgData} is not a PostgreSQL data folder`);
  const owner = { uid: st.uid, gid: st.gid };
  const bin = await pgBinDir(o.pgBin);
  const tool = (n: string) => (bin ? join(bin, n) : n);
  const url = new URL(o.newPrimaryUrl);
  const env = url.password ? { PGPASSWORD: decodeURIComponent(url.password) } : undefined;
  const primaryConninfo = conninfoOf(o.newPrimaryUrl, o.name);

  let rewindError: string | undefined;
  if (!o.noRewind) {
    try {
      // -R writes standby.signal and primary_conninfo (from the source connection, application_name included).
      await runAs(
        owner,
        tool('pg_rewind'),
        [`--target-pgdata=${o.pgData}`, `--source-server=${primaryConninfo} dbname='postgres'`, '-R'],
        env,
      );
      await ensureStandbyConfig(o.pgData, primaryConninfo, owner);
      return { method: 'rewind', primaryConninfo, seconds: (Date.now() - started) / 1000 };
    } catch (err) {
      rewindError = err instanceof Error ? err.message : String(err);
    }
  }

  // A fresh folder beside the old one, filled by the base backup, then swapped in (the old one is kept).
  const stamp = (o.now ?? new Date()).toISOString().replace(/[-:]/g, '').replace(/\..*/, '');
  const fresh = `${o.pgData}.reseed-${stamp}`;
  const kept = `${o.pgData}.old-${stamp}`;
  await mkdir(fresh, { mode: 0o700 });
  if (process.getuid?.() === 0) await chown(fresh, owner.uid, owner.gid);
  await runAs(
    owner,
    tool('pg_basebackup'),
    [
      ...['-h', url.hostname, '-p', url.port || '5432', '-U', decodeURIComponent(url.username) || 'postgres'],
      ...[
        '-D',
        fresh,
        '-R',
        '-X',
        'stream',
        '-c',
        'fast',
        '-d',
        `application_name=${o.name}`,
        '--no-password',
      ],
    ],
    env,
  );
  await rename(o.pgData, kept);
  await rename(fresh, o.pgData);
  return {
    method: 'basebackup',
    rewindError,
    keptOldFolder: kept,
    primaryConninfo,
    seconds: (Date.now() - started) / 1000,
  };
}

/** standby.signal and primary_conninfo, whatever the tool version wrote (older pg_rewind has no -R). */
async function ensureStandbyConfig(
  pgData: string,
  conninfo: string,
  owner: { uid: number; gid: number },
): Promise<void> {
  const files = await readdir(pgData);
  if (!files.includes('standby.signal')) await writeFile(join(pgData, 'standby.signal'), '');
  const auto = join(pgData, 'postgresql.auto.conf');
  const text = await readFile(auto, 'utf8').catch(() => '');
  if (!/^primary_conninfo\s*=/m.test(text))
    await writeFile(auto, `${text}\nprimary_conninfo = '${conninfo.replace(/'/g, "''")}'\n`);
  if (process.getuid?.() === 0) {
    await chown(join(pgData, 'standby.signal'), owner.uid, owner.gid);
    await chown(auto, owner.uid, owner.gid);
  }
}
