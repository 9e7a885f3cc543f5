import type { Command } from 'commander';
import { resolve } from 'node:path';
import { loadConfig } from '../../config';
import { failback } from '../../sites/failback';
import { readSyncStatus, writeSyncStatus } from '../../sites/storage-sync';
import { storageSyncStateDir } from '../../sites/sync-config';

/** `failback`: the old primary becomes a standby of the promoted site (issue 16; docs/two-sites.md). */
export function register(program: Command): void {
  program
    .command('failback')
    .description(
      "turn this (old primary) site's stopped PostgreSQL folder into a standby of the promoted site: pg_rewind, " +
        'else a fresh pg_basebackup; then the storage sync runs the other way',
    )
    .requiredOption('--pgdata <dir>', "this site's PostgreSQL data folder (stopped)")
    .requiredOption('--new-primary <url>', "the promoted site's postgres:// URL (a superuser)")
    .option(
      '--old-primary <url>',
      'where this site answered as a primary: refuse while it still answers (default DATABASE_URL)',
    )
    .option('--name <name>', 'application_name of this standby (for synchronous_standby_names)', 'site1')
    .option('--no-rewind', 'skip pg_rewind: re-seed with a base backup')
    .option('--json', 'print the report as JSON')
    .action(
      async (opts: {
        pgdata: string;
        newPrimary: string;
        oldPrimary?: string;
        name: string;
        rewind: boolean;
        json?: boolean;
      }) => {
        const config = loadConfig();
        const report = await failback({
          pgData: resolve(opts.pgdata),
          newPrimaryUrl: opts.newPrimary,
          oldPrimaryUrl: opts.oldPrimary ?? config.DATABASE_URL,
          name: opts.name,
          noRewind: !opts.rewind,
          pgBin: config.PG_BIN_DIR || undefined,
        });
        // The storage sync now runs here, from the promoted site: its next pass is a full one (and prunes what this
        // site holds that the promoted index does not name, after the grace period).
        const stateDir = storageSyncStateDir(config);
        const status = await readSyncStatus(stateDir);
        if (status) await writeSyncStatus(stateDir, { ...status, changesSeq: null });
        if (opts.json) {
          console.log(JSON.stringify({ ...report, primaryConninfo: undefined }, null, 2));
          return;
        }
        console.log(
          report.method === 'rewind'
            ? `rewound ${opts.pgdata} with pg_rewind (${report.seconds.toFixed(1)} s)`
            : `re-seeded ${opts.pgdata} with pg_basebackup (${report.seconds.toFixed(1)} s); the old folder is ` +
                `${report.keptOldFolder}` +
                (report.rewindError ? `\n  pg_rewind was not possible: ${report.rewindError}` : ''),
        );
        console.log(
          `next: start PostgreSQL on ${opts.pgdata} (it follows the promoted site as "${opts.name}"), then at the ` +
            `promoted site ALTER SYSTEM SET synchronous_standby_names = '${opts.name}' and reload for synchronous ` +
            `replication; run \`aperture storage-sync\` here with STORAGE_SYNC_SOURCE_URL = the promoted site's Orthanc`,
        );
      },
    );
}
