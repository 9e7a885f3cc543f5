import { MultiBar, Presets, type SingleBar } from 'cli-progress';
import type { Command } from 'commander';
import { existsSync } from 'node:fs';
import { isAbsolute, join, resolve } from 'node:path';
import { loadConfig } from '../../config';
import { clusterDatabaseBytes } from '../../index-db/sites';
import { listBackups, pruneBackups, restoreBackup, runBackup, type Progress } from '../../sites/backup';
import { verifyArchive } from '../../sites/verify';
import { withServices } from '../services';

/** Progress bars on stderr (one per step), quiet when stderr is not a terminal or --quiet. */
function bars(quiet: boolean): { progress: Progress; stop: () => void } {
  if (quiet || !process.stderr.isTTY) return { progress: () => undefined, stop: () => undefined };
  const multi = new MultiBar(
    {
      format: ' {step} [{bar}] {percentage}% | {value}/{total}',
      clearOnComplete: false,
      hideCursor: true,
      stream: process.stderr,
    },
    Presets.shades_classic,
  );
  const byStep = new Map<string, SingleBar>();
  return {
    progress: (step, done, total) => {
      let b = byStep.get(step);
      if (!b) byStep.set(step, (b = multi.create(total, 0, { step: step.padEnd(8) })));
      b.setTotal(total);
      b.update(done, { step: step.padEnd(8) });
    },
    stop: () => multi.stop(),
  };
}

/** `backup`, `backup list`, `backup prune`, `restore`, `verify` (issue 16; see docs/two-sites.md). */
export function register(program: Command): void {
  const backup = program
    .command('backup')
    .description(
      'back up the archive: both databases at one point in time, new storage files, configuration and keys',
    )
    .option('--to <dir>', 'backup folder (default BACKUP_DIR)')
    .option(
      '--no-prune',
      'keep every backup (default: prune by BACKUP_KEEP_DAILY / BACKUP_KEEP_WEEKLY after success)',
    )
    .option('--quiet', 'no progress bars')
    .option('--json', 'print the manifest as JSON')
    .action(async (opts: { to?: string; prune: boolean; quiet?: boolean; json?: boolean }) => {
      const config = loadConfig();
      const dir = resolve(opts.to ?? config.BACKUP_DIR);
      const ui = bars(opts.quiet === true);
      const manifest = await withServices(async ({ db }) =>
        runBackup(
          {
            databaseUrl: config.DATABASE_URL,
            storageDir: resolve(config.ORTHANC_STORAGE_DIR),
            configPaths: config.BACKUP_CONFIG_PATHS.split(',')
              .map((s) => s.trim())
              .filter(Boolean),
          },
          dir,
          {
            pgBin: config.PG_BIN_DIR || undefined,
            minFreeBytes: config.BACKUP_MIN_FREE_BYTES,
            dbBytes: () => clusterDatabaseBytes(db),
            onProgress: ui.progress,
          },
        ),
      ).finally(ui.stop);
      const removed = opts.prune
        ? await pruneBackups(dir, { daily: config.BACKUP_KEEP_DAILY, weekly: config.BACKUP_KEEP_WEEKLY })
        : [];
      if (opts.json)
        console.log(
          JSON.stringify({ ...manifest, path: join(dir, manifest.name), pruned: removed }, null, 2),
        );
      else {
        console.log(
          `backup ${join(dir, manifest.name)}: ${manifest.storageFiles} storage files ` +
            `(${manifest.copiedFiles} new, ${(manifest.copiedBytes / 1024 ** 2).toFixed(1)} MiB copied), ` +
            `databases ${(manifest.databaseBytes / 1024 ** 2).toFixed(1)} MiB, ${manifest.seconds.toFixed(1)} s`,
        );
        if (removed.length) console.log(`pruned: ${removed.join(', ')}`);
      }
    });

  backup
    .command('list')
    .description('complete backups, oldest first')
    .option('--from <dir>', 'backup folder (default BACKUP_DIR)')
    .option('--json', 'print JSON')
    .action(async (opts: { from?: string; json?: boolean }) => {
      const dir = resolve(opts.from ?? loadConfig().BACKUP_DIR);
      const all = await listBackups(dir);
      if (opts.json) console.log(JSON.stringify(all, null, 2));
      else if (!all.length) console.log(`no backups in ${dir}`);
      else
        console.table(
          all.map((b) => ({
            name: b.name,
            files: b.storageFiles,
            new: b.copiedFiles,
            seconds: b.seconds,
            previous: b.previous ?? '',
          })),
        );
    });

  backup
    .command('prune')
    .description('delete backups the retention policy (BACKUP_KEEP_DAILY, BACKUP_KEEP_WEEKLY) does not keep')
    .option('--from <dir>', 'backup folder (default BACKUP_DIR)')
    .action(async (opts: { from?: string }) => {
      const config = loadConfig();
      const removed = await pruneBackups(resolve(opts.from ?? config.BACKUP_DIR), {
        daily: config.BACKUP_KEEP_DAILY,
        weekly: config.BACKUP_KEEP_WEEKLY,
      });
      console.log(removed.length ? `pruned: ${removed.join(', ')}` : 'nothing to prune');
    });

  program
    .command('restore <backup>')
    .description(
      'rebuild a stack folder (pg/, orthanc/storage/, config/) from a backup; then STACK_DIR=<into> scripts/stack.sh up',
    )
    .requiredOption('--into <dir>', 'a new or empty folder')
    .option('--quiet', 'no progress bars')
    .action(async (backupArg: string, opts: { into: string; quiet?: boolean }) => {
      const config = loadConfig();
      const path =
        isAbsolute(backupArg) || backupArg.includes('/')
          ? resolve(backupArg)
          : join(resolve(config.BACKUP_DIR), backupArg);
      const ui = bars(opts.quiet === true);
      const m = await restoreBackup(path, resolve(opts.into), { onProgress: ui.progress }).finally(ui.stop);
      console.log(
        `restored ${m.name} into ${resolve(opts.into)}: ${m.storageFiles} storage files, configuration ${m.configFiles.join(', ') || 'none'}`,
      );
    });

  program
    .command('verify')
    .description(
      'check every archived instance against the index (size and MD5 recorded at ingest), reading the files from ' +
        'ORTHANC_STORAGE_DIR when this machine sees it; exit 2 on differences',
    )
    .option('--json', 'print the report as JSON')
    .option('--quiet', 'no progress bar')
    .action(async (opts: { json?: boolean; quiet?: boolean }) => {
      const ui = bars(opts.quiet === true);
      const report = await withServices(({ db, archive, pacs, config }) =>
        verifyArchive(db, archive, {
          concurrency: config.VERIFY_CONCURRENCY,
          // The files themselves when this machine sees Orthanc's storage folder, else through Orthanc.
          files: existsSync(resolve(config.ORTHANC_STORAGE_DIR))
            ? { pacs, storageDir: resolve(config.ORTHANC_STORAGE_DIR) }
            : undefined,
          onProgress: (done, total) => ui.progress('verify', done, total),
        }),
      ).finally(ui.stop);
      if (opts.json) console.log(JSON.stringify(report, null, 2));
      else {
        console.log(
          `indexed ${report.indexed}, archived ${report.archived}, checked ${report.checked}: ` +
            `${report.ok} ok, ${report.differences.length} different, ${report.unchecked} without checksum`,
        );
        for (const d of report.differences) console.log(`  ${d.problem}\t${d.sopInstanceUid}\t${d.detail}`);
      }
      if (report.differences.length || report.indexed !== report.archived) process.exitCode = 2;
    });
}
