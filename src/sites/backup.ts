/**
 * Backups of the whole archive (issue 16): one PostgreSQL base backup that holds the Aperture index and Orthanc's
 * index at the same point in time (both databases live in one cluster, see scripts/stack.sh), Orthanc's storage
 * files copied incrementally (they are immutable and named by UUID: a file already in the previous backup is
 * hard-linked, not copied again), and the configuration and keys. A backup is a folder
 * `<BACKUP_DIR>/<UTC time>`; it is written as `<name>.partial` and renamed only once complete, so a crash or a full
 * disk never leaves something that looks like a backup. Pruning deletes folders: hard links keep the files that
 * later backups still share.
 */
import { execFile } from 'node:child_process';
import { createReadStream } from 'node:fs';
import {
  chmod,
  chown,
  copyFile,
  link,
  mkdir,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  statfs,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join, relative } from 'node:path';
import { createHash } from 'node:crypto';

/** What a backup folder says about itself (manifest.json, written last). */
export interface BackupManifest {
  format: 1;
  name: string;
  createdAt: string;
  /** Storage files in the backup, and of those the ones copied (the rest are hard links to the previous backup). */
  storageFiles: number;
  storageBytes: number;
  copiedFiles: number;
  copiedBytes: number;
  /** Bytes of the base backup folder. */
  databaseBytes: number;
  /** The backup this one links to, if any. */
  previous?: string;
  /** Configuration and key files, by the name they have under config/. */
  configFiles: string[];
  seconds: number;
}

/** Where the archive to back up is. */
export interface BackupSource {
  /** postgres:// URL of the cluster (any database of it; the base backup takes the whole cluster). */
  databaseUrl: string;
  /** Orthanc's StorageDirectory. */
  storageDir: string;
  /** Configuration and key files to keep (orthanc.json, credentials, the gateway's env file, signing keys). */
  configPaths: readonly string[];
}

/** Progress of a long step, for progress bars. */
export type Progress = (step: string, done: number, total: number) => void;

/** Thrown when the destination has no room: the message says how much is needed and how much is free. */
export class NoSpaceError extends Error {
  constructor(
    readonly where: string,
    readonly neededBytes: number,
    readonly freeBytes: number,
  ) {
    super(
      `not enough space in ${where}: about ${mib(neededBytes)} MiB needed, ${mib(freeBytes)} MiB free ` +
        `(free space, prune old backups with a shorter retention, or back up elsewhere)`,
    );
  }
}

const mib = (n: number) => Math.ceil(n / 1024 ** 2);

const run = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) =>
  new Promise<string>((resolve, reject) => {
    execFile(
      cmd,
      args,
      { env: { ...process.env, ...env }, maxBuffer: 16 * 1024 ** 2 },
      (err, stdout, stderr) => {
        if (err)
          reject(
            new Error(
              `${basename(cmd)} failed: ${(stderr || err.message).trim().split('\n').slice(-3).join(' ')}`,
            ),
          );
        else resolve(stdout);
      },
    );
  });

/** The bin folder of the newest PostgreSQL client tools (Debian keeps them under /usr/lib/postgresql/N/bin). */
export async function pgBinDir(explicit?: string): Promise<string> {
  if (explicit) return explicit;
  const versions = await readdir('/usr/lib/postgresql').catch(() => [] as string[]);
  const sorted = versions.filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a));
  return sorted.length ? `/usr/lib/postgresql/${sorted[0]}/bin` : '';
}

const tool = (bin: string, name: string) => (bin ? join(bin, name) : name);

/** Every regular file under `dir`, as paths relative to it, with sizes. */
export async function listFiles(dir: string): Promise<{ path: string; size: number }[]> {
  const out: { path: string; size: number }[] = [];
  const walk = async (d: string) => {
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else if (e.isFile()) out.push({ path: relative(dir, p), size: (await stat(p)).size });
    }
  };
  await walk(dir);
  return out.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
}

async function folderBytes(dir: string): Promise<number> {
  return (await listFiles(dir)).reduce((n, f) => n + f.size, 0);
}

/** Complete backups in `backupDir`, oldest first. */
export async function listBackups(backupDir: string): Promise<BackupManifest[]> {
  const names = await readdir(backupDir).catch(() => [] as string[]);
  const out: BackupManifest[] = [];
  for (const name of names.sort()) {
    if (name.endsWith('.partial')) continue;
    try {
      out.push(JSON.parse(await readFile(join(backupDir, name, 'manifest.json'), 'utf8')) as BackupManifest);
    } catch {
      // not a backup (or an unreadable one): never pruned, never linked to
    }
  }
  return out;
}

const isNoSpace = (err: unknown) => (err as NodeJS.ErrnoException)?.code === 'ENOSPC';

/** Free bytes for an unprivileged writer where `dir` is (its nearest existing parent). */
async function freeBytes(dir: string): Promise<number> {
  for (let d = dir; ; d = dirname(d)) {
    try {
      const s = await statfs(d);
      return s.bavail * s.bsize;
    } catch (err) {
      if (d === dirname(d)) throw err;
    }
  }
}

/** Backup folder name for a time: sortable, no colons (portable file names). */
export function backupName(at: Date): string {
  return at
    .toISOString()
    .replace(/[:]/g, '')
    .replace(/\.\d+Z$/, 'Z');
}

/**
 * Makes one backup in `backupDir` and returns its manifest. The base backup comes first, then the storage files:
 * every file the index snapshot names was written before the index row committed, so it is on disk by then.
 */
export async function runBackup(
  source: BackupSource,
  backupDir: string,
  opts: {
    pgBin?: string;
    minFreeBytes?: number;
    onProgress?: Progress;
    now?: Date;
    /** Size of the databases (for the free space check before starting). */
    dbBytes?: () => Promise<number>;
  } = {},
): Promise<BackupManifest> {
  const started = Date.now();
  const name = backupName(opts.now ?? new Date());
  const final = join(backupDir, name);
  const partial = `${final}.partial`;
  await mkdir(backupDir, { recursive: true });
  if (await stat(final).catch(() => undefined)) throw new Error(`a backup named ${name} exists already`);
  const previous = (await listBackups(backupDir)).at(-1);
  const files = await listFiles(source.storageDir);
  const prevFiles = new Map<string, number>();
  if (previous) {
    for (const f of await listFiles(join(backupDir, previous.name, 'storage')).catch(() => []))
      prevFiles.set(f.path, f.size);
  }
  const toCopy = files.filter((f) => prevFiles.get(f.path) !== f.size);
  const copyBytes = toCopy.reduce((n, f) => n + f.size, 0);
  const dbBytes = await opts.dbBytes?.();
  const needed = copyBytes + (dbBytes ?? 0) + (opts.minFreeBytes ?? 0);
  const free = await freeBytes(backupDir);
  if (free < needed) throw new NoSpaceError(backupDir, needed, free);

  await rm(partial, { recursive: true, force: true });
  await mkdir(partial, { recursive: true });
  try {
    const bin = await pgBinDir(opts.pgBin);
    const url = new URL(source.databaseUrl);
    opts.onProgress?.('database', 0, 1);
    // -X stream: the WAL written during the copy goes with it, so the folder starts on its own at one consistent
    // point; -c fast: checkpoint now rather than waiting for the next one.
    await run(
      tool(bin, 'pg_basebackup'),
      [
        '-h',
        url.hostname,
        '-p',
        url.port || '5432',
        '-U',
        decodeURIComponent(url.username) || 'postgres',
        '-D',
        join(partial, 'pg'),
        '-Fp',
        '-X',
        'stream',
        '-c',
        'fast',
        '--no-password',
      ],
      url.password ? { PGPASSWORD: decodeURIComponent(url.password) } : undefined,
    );
    opts.onProgress?.('database', 1, 1);

    const storage = join(partial, 'storage');
    let done = 0;
    let copiedFiles = 0;
    let copiedBytes = 0;
    const total = files.reduce((n, f) => n + f.size, 0);
    for (const f of files) {
      const to = join(storage, f.path);
      await mkdir(dirname(to), { recursive: true });
      if (previous && prevFiles.get(f.path) === f.size) {
        const from = join(backupDir, previous.name, 'storage', f.path);
        // Another file system than the previous backup's (a moved folder): copy instead.
        await link(from, to).catch(async (err: NodeJS.ErrnoException) => {
          if (err.code !== 'EXDEV' && err.code !== 'EMLINK') throw err;
          await copyFile(from, to);
        });
      } else {
        await copyFile(join(source.storageDir, f.path), to);
        copiedFiles++;
        copiedBytes += f.size;
      }
      done += f.size;
      opts.onProgress?.('storage', done, total);
    }

    const configFiles: string[] = [];
    if (source.configPaths.length) await mkdir(join(partial, 'config'), { recursive: true });
    for (const p of source.configPaths) {
      const as = basename(p);
      if (configFiles.includes(as)) throw new Error(`two configuration files are named ${as}`);
      await copyFile(p, join(partial, 'config', as));
      await chmod(join(partial, 'config', as), 0o600);
      configFiles.push(as);
    }

    const manifest: BackupManifest = {
      format: 1,
      name,
      createdAt: (opts.now ?? new Date()).toISOString(),
      storageFiles: files.length,
      storageBytes: total,
      copiedFiles,
      copiedBytes,
      databaseBytes: await folderBytes(join(partial, 'pg')),
      previous: previous?.name,
      configFiles,
      seconds: (Date.now() - started) / 1000,
    };
    await writeFile(join(partial, 'manifest.json'), JSON.stringify(manifest, null, 2));
    await rename(partial, final);
    return manifest;
  } catch (err) {
    await rm(partial, { recursive: true, force: true }).catch(() => undefined);
    if (isNoSpace(err)) throw new NoSpaceError(backupDir, needed, await freeBytes(backupDir).catch(() => 0));
    throw err;
  }
}

/** Retention: the newest backup of each of the last `daily` days and of each of the last `weekly` ISO weeks. */
export interface Retention {
  daily: number;
  weekly: number;
}

/** Monday (UTC) of the ISO week of `d`, as YYYY-MM-DD. */
function weekOf(d: Date): string {
  const monday = new Date(Date.UTC(d.getUTCFullYear(), d.getUTCMonth(), d.getUTCDate()));
  monday.setUTCDate(monday.getUTCDate() - ((monday.getUTCDay() + 6) % 7));
  return monday.toISOString().slice(0, 10);
}

/**
 * Names of the backups to keep under a retention policy (newest first wins each day and each week). The newest
 * backup is always kept, whatever the policy.
 */
export function backupsToKeep(
  backups: readonly Pick<BackupManifest, 'name' | 'createdAt'>[],
  keep: Retention,
): Set<string> {
  const newestFirst = [...backups].sort((a, b) => (a.createdAt < b.createdAt ? 1 : -1));
  const kept = new Set<string>();
  if (newestFirst[0]) kept.add(newestFirst[0].name);
  const pick = (bucket: (d: Date) => string, n: number) => {
    const seen = new Set<string>();
    for (const b of newestFirst) {
      const key = bucket(new Date(b.createdAt));
      if (seen.has(key)) continue;
      if (seen.size >= n) break;
      seen.add(key);
      kept.add(b.name);
    }
  };
  pick((d) => d.toISOString().slice(0, 10), keep.daily);
  pick(weekOf, keep.weekly);
  return kept;
}

/** Deletes backups the policy does not keep (and leftovers of interrupted ones); returns the names removed. */
export async function pruneBackups(backupDir: string, keep: Retention): Promise<string[]> {
  const all = await listBackups(backupDir);
  const kept = backupsToKeep(all, keep);
  const removed: string[] = [];
  for (const b of all) {
    if (kept.has(b.name)) continue;
    await rm(join(backupDir, b.name), { recursive: true, force: true });
    removed.push(b.name);
  }
  for (const name of await readdir(backupDir).catch(() => [] as string[])) {
    if (name.endsWith('.partial')) {
      await rm(join(backupDir, name), { recursive: true, force: true });
      removed.push(name);
    }
  }
  return removed;
}

/**
 * Rebuilds a stack folder from a backup, in the layout scripts/stack.sh uses (`pg/`, `orthanc/storage/`,
 * `orthanc/credentials`, and `config/` with every saved file): then `STACK_DIR=<into> scripts/stack.sh up` starts it.
 * The folder must be new or empty: a restore never overwrites a live archive.
 */
export async function restoreBackup(
  backupPath: string,
  into: string,
  opts: { onProgress?: Progress } = {},
): Promise<BackupManifest> {
  const manifest = JSON.parse(
    await readFile(join(backupPath, 'manifest.json'), 'utf8').catch(() => {
      throw new Error(`${backupPath} is not a complete backup (no manifest.json)`);
    }),
  ) as BackupManifest;
  const existing = await readdir(into).catch(() => [] as string[]);
  if (existing.length) throw new Error(`${into} is not empty: restore only into a fresh folder`);
  const needed = manifest.storageBytes + manifest.databaseBytes;
  const free = await freeBytes(into);
  if (free < needed) throw new NoSpaceError(into, needed, free);
  try {
    await mkdir(into, { recursive: true });
    const copyTree = async (from: string, to: string, step: string) => {
      const files = await listFiles(from);
      const total = files.reduce((n, f) => n + f.size, 0);
      let done = 0;
      // Folders first, empty ones included (PostgreSQL needs pg_subtrans/ and the like even when empty).
      const dirs = async (d: string) => {
        await mkdir(join(to, relative(from, d)), { recursive: true });
        for (const e of await readdir(d, { withFileTypes: true }))
          if (e.isDirectory()) await dirs(join(d, e.name));
      };
      await dirs(from);
      for (const f of files) {
        await copyFile(join(from, f.path), join(to, f.path));
        done += f.size;
        opts.onProgress?.(step, done, total);
      }
    };
    await copyTree(join(backupPath, 'pg'), join(into, 'pg'), 'database');
    // PostgreSQL wants its data folder private; as root, it belongs to the postgres user that runs the cluster.
    await chmod(join(into, 'pg'), 0o700);
    if (process.getuid?.() === 0) await chownTree(join(into, 'pg'), 'postgres');
    await copyTree(join(backupPath, 'storage'), join(into, 'orthanc', 'storage'), 'storage');
    if (manifest.configFiles.length)
      await copyTree(join(backupPath, 'config'), join(into, 'config'), 'config');
    if (manifest.configFiles.includes('credentials')) {
      await copyFile(join(backupPath, 'config', 'credentials'), join(into, 'orthanc', 'credentials'));
      await chmod(join(into, 'orthanc', 'credentials'), 0o600);
    }
    return manifest;
  } catch (err) {
    if (isNoSpace(err)) throw new NoSpaceError(into, needed, await freeBytes(into).catch(() => 0));
    throw err;
  }
}

async function chownTree(dir: string, user: string): Promise<void> {
  const passwd = await readFile('/etc/passwd', 'utf8');
  const line = passwd.split('\n').find((l) => l.startsWith(`${user}:`));
  if (!line) throw new Error(`no ${user} user to own the restored database folder`);
  const [, , uid, gid] = line.split(':');
  const walk = async (d: string) => {
    await chown(d, Number(uid), Number(gid));
    for (const e of await readdir(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else await chown(p, Number(uid), Number(gid));
    }
  };
  await walk(dir);
}

/** MD5 (hex) of a stream's bytes and their count. */
export async function md5OfStream(body: NodeJS.ReadableStream): Promise<{ md5: string; bytes: number }> {
  const h = createHash('md5');
  let bytes = 0;
  for await (const chunk of body as AsyncIterable<Buffer>) {
    h.update(chunk);
    bytes += chunk.length;
  }
  return { md5: h.digest('hex'), bytes };
}

/** MD5 of a file on disk. */
export async function md5OfFile(path: string): Promise<string> {
  return (await md5OfStream(createReadStream(path))).md5;
}
