import type { Command } from 'commander';
import { resolve } from 'node:path';
import pino from 'pino';
import { Pool } from 'pg';
import { loadConfig, type Config } from '../../config';
import { OrthancArchive } from '../../orthanc/archive';
import { OrthancClient } from '../../orthanc/client';
import { countIndexedInstances, isInRecovery, promoteStandby } from '../../index-db/sites';
import {
  countMissingFiles,
  runStorageSync,
  syncStoragePass,
  type SyncTarget,
} from '../../sites/storage-sync';
import { storageSyncIndexUrl, storageSyncStateDir } from '../../sites/sync-config';
import { answersAsPrimary } from '../../sites/failback';

/** The sync's connections: this site's replicated Orthanc index, and the source site's Orthanc. */
function syncTarget(config: Config, logger: pino.Logger): { target: SyncTarget; close: () => Promise<void> } {
  if (!config.STORAGE_SYNC_SOURCE_URL)
    throw new Error("STORAGE_SYNC_SOURCE_URL is not set (the source site's Orthanc REST URL)");
  const db = new Pool({
    connectionString: storageSyncIndexUrl(config),
    max: 2,
    connectionTimeoutMillis: 5000,
  });
  db.on('error', () => undefined);
  const source = new OrthancClient({
    ORTHANC_URL: config.STORAGE_SYNC_SOURCE_URL,
    ORTHANC_USERNAME: config.STORAGE_SYNC_SOURCE_USERNAME,
    ORTHANC_PASSWORD: config.STORAGE_SYNC_SOURCE_PASSWORD,
    ORTHANC_TIMEOUT_MS: config.ORTHANC_TIMEOUT_MS,
    ORTHANC_CONNECTIONS: config.STORAGE_SYNC_CONCURRENCY,
  });
  return {
    target: {
      orthancIndex: db,
      source,
      storageDir: resolve(config.ORTHANC_STORAGE_DIR),
      stateDir: storageSyncStateDir(config),
      concurrency: config.STORAGE_SYNC_CONCURRENCY,
      logger,
    },
    close: async () => {
      await source.close();
      await db.end();
    },
  };
}

/** `storage-sync` and `failover` (issue 16; docs/two-sites.md). */
export function register(program: Command): void {
  registerFailover(program);
  program
    .command('storage-sync')
    .description(
      "copy Orthanc's storage files that this (standby) site's replicated index names from the source site, checksummed",
    )
    .option('--once', 'one pass, then exit (2 when a file could not be synced or a corrupt copy was found)')
    .option('--verify', 're-read every copy here against the index (with --once: a verify pass)')
    .option('--full', "with --once: page through the whole index (and prune), not only Orthanc's new changes")
    .option('--json', 'with --once: print the pass report as JSON')
    .action(async (opts: { once?: boolean; verify?: boolean; full?: boolean; json?: boolean }) => {
      const config = loadConfig();
      const logger = pino({ name: 'aperture-storage-sync', level: config.LOG_LEVEL }, pino.destination(2));
      const { target, close } = syncTarget(config, logger);
      try {
        if (opts.once) {
          const report = await syncStoragePass(target, {
            verify: opts.verify === true,
            mode: opts.full ? 'full' : 'changes',
            pruneGraceMs: config.STORAGE_SYNC_PRUNE ? config.STORAGE_SYNC_PRUNE_GRACE_MS : undefined,
            changesLookback: config.STORAGE_SYNC_CHANGES_LOOKBACK,
          });
          if (opts.json) console.log(JSON.stringify(report, null, 2));
          else
            console.log(
              `${report.mode} pass: ${report.indexedFiles} files looked at, ${report.presentFiles} present, ` +
                `${report.copiedFiles} copied (${report.copiedBytes} bytes), ${report.corruptFiles} corrupt copies, ` +
                `${report.failedFiles} not synced, ${report.prunedFiles} pruned, ${report.orphanFiles} orphans in grace`,
            );
          if (report.failedFiles || report.corruptFiles) process.exitCode = 2;
          return;
        }
        const stop = new AbortController();
        for (const sig of ['SIGINT', 'SIGTERM'] as const) process.once(sig, () => stop.abort());
        logger.info({ stateDir: target.stateDir }, 'storage sync started');
        await runStorageSync(target, {
          intervalMs: config.STORAGE_SYNC_INTERVAL_MS,
          verifyEveryMs: config.STORAGE_SYNC_VERIFY_EVERY_MS,
          fullEveryMs: config.STORAGE_SYNC_FULL_EVERY_MS,
          pruneGraceMs: config.STORAGE_SYNC_PRUNE ? config.STORAGE_SYNC_PRUNE_GRACE_MS : undefined,
          changesLookback: config.STORAGE_SYNC_CHANGES_LOOKBACK,
          signal: stop.signal,
        });
      } finally {
        await close();
      }
    });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** What `aperture failover` did and found. */
export interface FailoverReport {
  promoted: boolean;
  wasPrimary: boolean;
  /** The old primary's answer when asked (`--old-primary`): down, or a standby; never a primary (refused). */
  oldPrimary?: 'down' | 'standby';
  /** Storage files the promoted Orthanc index names that are not on this site's disk. */
  storage: { indexedFiles: number; missingFiles: number; missingBytes: number; sample: string[] };
  /** The gateway at this site, asked until it reported the primary role. */
  gateway?: { role: string };
  /** This site's Orthanc on the promoted index, against the Aperture index. */
  orthanc?: { up: boolean; instances?: number; indexedInstances: number };
}

/** `failover`: promote this site (issue 16; the drill in docs/two-sites.md). */
export function registerFailover(program: Command): void {
  program
    .command('failover')
    .description(
      "promote this site's PostgreSQL standby to primary, then check the gateway, storage files and Orthanc here",
    )
    .option(
      '--old-primary <url>',
      "the old primary's postgres:// URL: refuse while it still answers as a primary (fencing)",
    )
    .option('--force', 'promote even though the old primary still answers as a primary (two writers!)')
    .option('--timeout <seconds>', 'wait this long for the promotion, the gateway and Orthanc', '60')
    .option('--gateway-url <url>', "this site's gateway: wait until its /readyz reports the primary role")
    .option(
      '--orthanc',
      "wait for this site's Orthanc (ORTHANC_URL) on the promoted index and compare its count",
    )
    .option('--json', 'print the report as JSON')
    .action(
      async (opts: {
        oldPrimary?: string;
        force?: boolean;
        timeout: string;
        gatewayUrl?: string;
        orthanc?: boolean;
        json?: boolean;
      }) => {
        const config = loadConfig();
        const timeoutS = Math.max(1, Number(opts.timeout) || 60);
        const deadline = Date.now() + timeoutS * 1000;
        const say = (line: string) => {
          if (!opts.json) console.log(line);
        };
        const db = new Pool({ connectionString: config.DATABASE_URL, max: 2, connectionTimeoutMillis: 5000 });
        db.on('error', () => undefined);
        const orthancIndex = new Pool({
          connectionString: storageSyncIndexUrl(config),
          max: 2,
          connectionTimeoutMillis: 5000,
        });
        orthancIndex.on('error', () => undefined);
        try {
          const wasPrimary = !(await isInRecovery(db));
          const report: FailoverReport = {
            promoted: false,
            wasPrimary,
            storage: { indexedFiles: 0, missingFiles: 0, missingBytes: 0, sample: [] },
          };
          if (!wasPrimary) {
            if (opts.oldPrimary) {
              const old = await answersAsPrimary(opts.oldPrimary);
              if (old === true && !opts.force) {
                throw new Error(
                  'the old primary still answers as a primary: stop it (or cut it off) first, so that only one site ' +
                    'takes writes; --force promotes anyway',
                );
              }
              report.oldPrimary = old === undefined ? 'down' : 'standby';
            } else {
              say(
                'warning: --old-primary not given, fencing not checked (make sure the old primary is stopped)',
              );
            }
            if (!(await promoteStandby(db, timeoutS)))
              throw new Error(`promotion did not finish in ${timeoutS} s`);
            report.promoted = true;
            say('promoted: this site is the primary');
          } else {
            say('this site is already the primary: nothing to promote');
          }

          report.storage = await countMissingFiles({
            orthancIndex,
            storageDir: resolve(config.ORTHANC_STORAGE_DIR),
            concurrency: config.STORAGE_SYNC_CONCURRENCY,
          });
          say(
            `storage: ${report.storage.indexedFiles} files indexed, ${report.storage.missingFiles} missing here` +
              (report.storage.missingFiles ? ` (e.g. ${report.storage.sample.slice(0, 3).join(', ')})` : ''),
          );

          if (opts.gatewayUrl) {
            let role = 'unknown';
            while (Date.now() < deadline) {
              const r = await fetch(new URL('/readyz', opts.gatewayUrl), {
                signal: AbortSignal.timeout(5000),
              })
                .then((x) => x.json() as Promise<{ site?: { role?: string } }>)
                .catch(() => undefined);
              role = r?.site?.role ?? 'unknown';
              if (role === 'primary') break;
              await sleep(250);
            }
            report.gateway = { role };
            say(`gateway: ${role}`);
          }

          if (opts.orthanc) {
            const pacs = new OrthancClient(config);
            const indexedInstances = await countIndexedInstances(db);
            let instances: number | undefined;
            try {
              while (instances === undefined && Date.now() < deadline) {
                instances = await new OrthancArchive(pacs)
                  .countInstances(AbortSignal.timeout(5000))
                  .catch(() => undefined);
                if (instances === undefined) await sleep(500);
              }
            } finally {
              await pacs.close();
            }
            report.orthanc = { up: instances !== undefined, instances, indexedInstances };
            say(
              instances === undefined
                ? `orthanc: not answering at ${config.ORTHANC_URL} (start it on the promoted index)`
                : `orthanc: ${instances} instances, the Aperture index ${indexedInstances}`,
            );
          }
          if (opts.json) console.log(JSON.stringify(report, null, 2));
          const orthancBad =
            report.orthanc &&
            (!report.orthanc.up || report.orthanc.instances !== report.orthanc.indexedInstances);
          const gatewayBad = report.gateway && report.gateway.role !== 'primary';
          // Promoted, but this site is not whole yet: the operator is told by the exit code as well.
          if (report.storage.missingFiles || orthancBad || gatewayBad) process.exitCode = 3;
        } finally {
          await orthancIndex.end().catch(() => undefined);
          await db.end().catch(() => undefined);
        }
      },
    );
}
