/**
 * Backup and restore time per GB (issue 16). The bench stack is filled with BENCH_BACKUP_MB (default 600) of
 * real-sized instances (synthetic 512x512 16-bit CT, ~0.5 MB each) posted to Orthanc; then, in the same run:
 * - `aperture backup` (the CLI as an operator runs it: pg_basebackup of the cluster + every storage file copied and
 *   fsynced) against the baseline of plain tools on the same data: `pg_basebackup -X stream -c fast` plus
 *   `tar -cf` of Orthanc's storage folder;
 * - a second `aperture backup` with nothing new (the incremental case: files hard-linked, not copied);
 * - `aperture restore` into a fresh folder against `cp -a` of the base backup plus `tar -xf` of the storage tarball.
 * Reported as seconds per GB of archive (databases + storage) and as ratios aperture / baseline.
 */
import { execFile } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readdirSync, rmSync, statfsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { generateInstances } from '../../tools/synth';
import type { BenchRow, SuiteResult } from '../lib/report';
import { orthancAuth, type StackEnv } from '../lib/stack';
import { round } from '../lib/stats';

const ROOT = join(__dirname, '../..');
const exec = promisify(execFile);
const TARGET_MB = Number(process.env.BENCH_BACKUP_MB ?? 600);
const PG_BIN = `/usr/lib/postgresql/${readdirSync('/usr/lib/postgresql').sort().at(-1)}/bin`;

async function timed(fn: () => Promise<unknown>): Promise<number> {
  const t0 = process.hrtime.bigint();
  await fn();
  return Number(process.hrtime.bigint() - t0) / 1e9;
}

async function duBytes(path: string): Promise<number> {
  const { stdout } = await exec('du', ['-sb', path], { encoding: 'utf8' });
  return Number(stdout.split(/\s/)[0]);
}

function asPg(tool: string, args: string[]) {
  const root = process.getuid?.() === 0;
  return exec(
    root ? 'runuser' : join(PG_BIN, tool),
    root ? ['-u', 'postgres', '--', join(PG_BIN, tool), ...args] : args,
    { timeout: 1_800_000, encoding: 'utf8', maxBuffer: 64 * 1024 ** 2 },
  );
}

export async function run(stack: StackEnv): Promise<SuiteResult> {
  const stackDir = process.env.BENCH_STACK_DIR ?? join(ROOT, '.stack/bench');
  const storage = join(stackDir, 'orthanc/storage');
  // Beside the stack (same disk), not in /tmp (which may be a small tmpfs).
  const tmp = mkdtempSync(join(ROOT, '.stack/bench-backup-'));
  chmodSync(tmp, 0o755);
  const free = statfsSync(tmp);
  const freeMb = (free.bavail * free.bsize) / 1024 ** 2;
  // Five copies of the archive exist at the peak (archive, backup, baseline backup, two restores).
  const mb = Math.min(TARGET_MB, Math.floor(freeMb / 6));
  const env = {
    ...process.env,
    ...stack,
    ORTHANC_STORAGE_DIR: storage,
    BACKUP_CONFIG_PATHS: join(stackDir, 'orthanc/credentials'),
    LOG_LEVEL: 'warn',
  };
  const cli = (args: string[]) =>
    exec(join(ROOT, 'node_modules/.bin/tsx'), [join(ROOT, 'src/cli/index.ts'), ...args], {
      env,
      timeout: 1_800_000,
      maxBuffer: 64 * 1024 ** 2,
      encoding: 'utf8',
    });
  try {
    // Fill: 512x512 16-bit instances straight into Orthanc, 2 in flight, until the storage holds `mb` MB.
    const gen = generateInstances({
      patients: 1_000_000,
      studiesPerPatient: 1,
      seriesPerStudy: 1,
      instancesPerSeries: 10,
      rows: 512,
      cols: 512,
      seed: 'bench-backup',
    });
    let stored = 0;
    let instances = 0;
    await Promise.all(
      Array.from({ length: 2 }, async () => {
        while (stored < mb * 1024 ** 2) {
          const b = gen.next().value!.buffer;
          stored += b.length;
          const res = await fetch(`${stack.ORTHANC_URL}/instances`, {
            method: 'POST',
            headers: { authorization: orthancAuth(stack), 'content-type': 'application/dicom' },
            body: b,
          });
          await res.arrayBuffer();
          if (!res.ok) throw new Error(`Orthanc answered ${res.status}`);
          instances++;
        }
      }),
    );
    await exec('sync');
    const storageBytes = await duBytes(storage);

    const backups = join(tmp, 'backups');
    type Manifest = {
      path: string;
      databaseBytes: number;
      storageBytes: number;
      storageFiles: number;
      copiedFiles: number;
      seconds: number;
    };
    let manifest: Manifest | undefined;
    let second: Manifest | undefined;
    const backupS = await timed(async () => {
      const { stdout } = await cli(['backup', '--to', backups, '--json', '--quiet', '--no-prune']);
      manifest = JSON.parse(stdout) as typeof manifest;
    });
    const archiveGb = (manifest!.databaseBytes + manifest!.storageBytes) / 1024 ** 3;
    // Backup names have a one-second resolution.
    await new Promise((r) => setTimeout(r, 1100));
    const incrementalS = await timed(async () => {
      const { stdout } = await cli(['backup', '--to', backups, '--json', '--quiet', '--no-prune']);
      second = JSON.parse(stdout) as Manifest;
    });

    const base = join(tmp, 'baseline');
    mkdirSync(base);
    if (process.getuid?.() === 0) await exec('chown', ['postgres', base]);
    const primary = new URL(stack.DATABASE_URL);
    const baseBackupS = await timed(async () => {
      await asPg('pg_basebackup', [
        ...['-h', '127.0.0.1', '-p', primary.port, '-U', 'aperture', '-D', join(base, 'pg')],
        ...['-X', 'stream', '-c', 'fast'],
      ]);
      await exec('tar', ['-cf', join(base, 'storage.tar'), '-C', storage, '.']);
      await exec('sync');
    });

    const into = join(tmp, 'restored');
    const restoreS = await timed(() => cli(['restore', manifest!.path, '--into', into, '--quiet']));
    const plain = join(tmp, 'plain-restore');
    mkdirSync(join(plain, 'storage'), { recursive: true });
    const baseRestoreS = await timed(async () => {
      await exec('cp', ['-a', join(base, 'pg'), join(plain, 'pg')]);
      await exec('tar', ['-xf', join(base, 'storage.tar'), '-C', join(plain, 'storage')]);
      await exec('sync');
    });

    const perGb = (s: number) => s / archiveGb;
    const rows: BenchRow[] = [
      {
        metric: `backup, full (${instances} instances, ${round(archiveGb)} GB: databases ${round(manifest!.databaseBytes / 1024 ** 2)} MB + storage ${round(manifest!.storageBytes / 1024 ** 2)} MB; ${round(backupS)} s vs ${round(baseBackupS)} s; ${round(manifest!.seconds)} s inside the command)`,
        unit: 's/GB',
        gateway: perGb(backupS),
        orthanc: perGb(baseBackupS),
        ratio: backupS / baseBackupS,
        ratioMeaning: 'aperture backup / pg_basebackup + tar of the storage folder',
      },
      {
        metric: `backup, incremental with nothing new (${second!.copiedFiles} of ${second!.storageFiles} files copied, the rest hard-linked; ${round(incrementalS)} s; ${round(second!.seconds)} s inside the command)`,
        unit: 's/GB',
        gateway: perGb(incrementalS),
        orthanc: perGb(baseBackupS),
        ratio: incrementalS / baseBackupS,
        ratioMeaning: 'aperture backup / full baseline (tar has no incremental here)',
      },
      {
        metric: `restore into a fresh folder (${round(restoreS)} s vs ${round(baseRestoreS)} s)`,
        unit: 's/GB',
        gateway: perGb(restoreS),
        orthanc: perGb(baseRestoreS),
        ratio: restoreS / baseRestoreS,
        ratioMeaning: 'aperture restore / cp -a of the base backup + tar -xf',
      },
    ];
    return {
      suite: 'Backup and restore time per GB',
      setup:
        `The bench stack filled with ${instances} synthetic 512x512 16-bit CT instances (${round(storageBytes / 1024 ** 2)} MB ` +
        `of storage${mb < TARGET_MB ? `; ${TARGET_MB} MB asked, the free disk allowed ${mb} MB` : ''}) posted to Orthanc. ` +
        `\`aperture backup\` / \`restore\` run as the CLI, its start-up (tsx, services) included; the time inside the ` +
        `command is given beside it. The baseline column runs ` +
        `pg_basebackup + tar on the same data in the same run. Same disk for source and destination; 2 shared cores.`,
      rows,
    };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
