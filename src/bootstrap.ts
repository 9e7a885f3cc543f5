import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { closeAuditTrail, initAuditTrail } from './auth/audit';
import { createAuthenticator } from './auth/authenticate';
import { parseAlgorithms, splitList, TokenVerifier } from './auth/tokens';
import type { Config } from './config';
import { setRetryAfterSeconds } from './errors';
import { migrate } from './index-db/migrate';
import { isInRecovery } from './index-db/sites';
import { closeDb, initDb } from './index-db/pool';
import { closeIndexer, initIndexer } from './ingest/change-feed';
import { closeQueues, initQueues } from './jobs/queues';
import type { Logger } from './logger';
import { closeArchive, initArchive } from './orthanc/archive';
import { closePacs, initPacs, type PacsClient } from './orthanc/client';
import { StoredFileReader } from './orthanc/storage-files';
import { closeRemoteNodes, initRemoteNodes } from './orthanc/remote-nodes';
import { closeFileStore, initFileStore } from './records/file-store';
import type { AuditDetail, AuditedRequest, CoreServices, Services } from './services';

/** Which parts a process opens besides the index and the archive client. */
export interface ServiceParts {
  /** Apply pending migrations first (default true; the advisory lock makes concurrent starters safe). */
  migrate?: boolean;
  /** Token verification and the audit trail (default true: a process that answers HTTP needs them). */
  http?: boolean;
  /** BullMQ producer queues (default true: STOW and the change feed enqueue derived work). */
  queues?: boolean;
  /** The change-feed indexer (default false; the gateway passes INDEXER_ENABLED). Needs the queues. */
  indexer?: boolean;
}

// What initServices opened, newest last, so that closeServices undoes it in reverse order.
const openedBy = new WeakMap<CoreServices, Array<() => Promise<void> | void>>();

/**
 * The one lifecycle of every process (gateway, worker, CLI, tests): opens the database (migrating it), the archive
 * client and the parts asked for, in dependency order. If a step fails, what was already opened is closed again.
 */
export async function initServices(
  config: Config,
  logger: Logger,
  parts?: ServiceParts & { http?: true },
): Promise<Services>;
export async function initServices(
  config: Config,
  logger: Logger,
  parts: ServiceParts & { http: false },
): Promise<CoreServices>;
export async function initServices(
  config: Config,
  logger: Logger,
  parts: ServiceParts = {},
): Promise<Services | CoreServices> {
  const { migrate: doMigrate = true, http = true, queues = true, indexer = false } = parts;
  const closers: Array<() => Promise<void> | void> = [];
  try {
    setRetryAfterSeconds(config.RETRY_AFTER_S);
    const db = initDb(config);
    closers.push(closeDb);
    // sites (issue 16): a standby is read-only and receives the primary's schema by replication.
    if (doMigrate && !(await isInRecovery(db))) {
      const applied = await migrate(db);
      if (applied.length) logger.info({ applied }, 'database migrated');
    }
    const pacs = initPacs(config);
    closers.push(closePacs);
    const archive = initArchive(pacs, storedFileReader(config, pacs, logger));
    closers.push(closeArchive);
    // bridge (issue 14): remote DICOM nodes through the archive, on a client of their own (long DIMSE operations).
    initRemoteNodes(config);
    closers.push(closeRemoteNodes);
    // Research records' non-DICOM files (issue 18): a folder, created when missing.
    await initFileStore(config.RECORDS_FILES_DIR ?? join(__dirname, '..', '.stack', 'records-files'));
    closers.push(closeFileStore);
    const core: CoreServices = { config, db, pacs, archive, logger };
    if (queues) {
      initQueues(config, logger);
      closers.push(closeQueues);
    }
    let services: Services | CoreServices = core;
    if (http) {
      const verifier = startVerifier(config, logger);
      if (verifier) closers.push(() => verifier.close());
      const authenticate = createAuthenticator({
        enabled: config.AUTH_ENABLED,
        db,
        logger,
        verifier,
        mapping: { globalAdminRole: config.GLOBAL_ADMIN_ROLE },
        membershipCacheMs: config.MEMBERSHIP_CACHE_MS,
        runTokenSecret: config.PIPELINE_RUN_TOKEN_SECRET,
      });
      const trail = initAuditTrail(db, logger, config.AUDIT_QUEUE_MAX);
      closers.push(closeAuditTrail);
      const audit = async (request: AuditedRequest, outcome: number, detail?: AuditDetail) =>
        trail.record(request, outcome, detail);
      services = { ...core, authenticate, audit };
    }
    if (indexer) {
      // Every gateway process runs one; leader election lets only one of them index at a time.
      initIndexer(services);
      closers.push(closeIndexer);
    }
    openedBy.set(services, closers);
    return services;
  } catch (err) {
    await runClosers(closers, logger);
    throw err;
  }
}

/** Closes what initServices opened for `services`, in reverse order; each step runs even if an earlier one failed. */
export async function closeServices(services: CoreServices): Promise<void> {
  const closers = openedBy.get(services);
  openedBy.delete(services);
  if (closers) await runClosers(closers, services.logger);
}

async function runClosers(closers: Array<() => Promise<void> | void>, logger: Logger): Promise<void> {
  for (const close of [...closers].reverse()) {
    try {
      await close();
    } catch (err) {
      logger.error({ err: String(err) }, 'error during shutdown');
    }
  }
}

/** The token verifier when authentication is on; its discovery runs in the background. */
function startVerifier(config: Config, logger: Logger): TokenVerifier | undefined {
  if (!config.AUTH_ENABLED) {
    logger.warn('AUTH_ENABLED=false: every caller is a global administrator');
    return undefined;
  }
  if (!config.OIDC_ISSUER)
    throw new Error('invalid configuration:\n  OIDC_ISSUER: required when AUTH_ENABLED=true');
  const verifier = new TokenVerifier(
    {
      issuer: config.OIDC_ISSUER,
      jwksUrl: config.OIDC_JWKS_URL,
      audiences: splitList(config.OIDC_AUDIENCE),
      allowedClients: splitList(config.OIDC_ALLOWED_CLIENTS),
      algorithms: parseAlgorithms(config.OIDC_ALGORITHMS),
      clockToleranceS: config.OIDC_CLOCK_TOLERANCE_S,
      cooldownMs: config.OIDC_JWKS_COOLDOWN_MS,
      refreshMs: config.OIDC_JWKS_REFRESH_MS,
    },
    logger,
  );
  // Discovery runs in the background (the issuer may still be starting); requests wait for it briefly, then 503.
  void verifier.start();
  return verifier;
}

/**
 * Runs `stop` once on SIGTERM or SIGINT (a second signal while stopping is ignored), then exits 0: the one
 * shutdown path of the gateway and the worker. `stop` ends the process's own work; closeServices follows it.
 */
export function stopOnSignals(services: CoreServices, stop: () => Promise<void>): void {
  let stopping = false;
  const onSignal = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    services.logger.info({ signal }, 'shutting down');
    await stop().catch((err) => services.logger.error({ err: String(err) }, 'error during shutdown'));
    await closeServices(services);
    // The last lines ("drained", "shutting down") must reach the log before the process ends.
    await new Promise<void>((resolve) => services.logger.flush(() => resolve()));
    process.exit(0);
  };
  process.on('SIGTERM', () => void onSignal('SIGTERM'));
  process.on('SIGINT', () => void onSignal('SIGINT'));
}

/** The reader of Orthanc's stored files when ARCHIVE_FILE_READS is on and the folder is there (else REST only). */
function storedFileReader(config: Config, pacs: PacsClient, logger: Logger): StoredFileReader | undefined {
  if (!config.ARCHIVE_FILE_READS) return undefined;
  const dir = resolve(config.ORTHANC_STORAGE_DIR);
  if (!existsSync(dir)) {
    logger.warn(
      { dir },
      'ARCHIVE_FILE_READS: ORTHANC_STORAGE_DIR is not there; instances are read through REST',
    );
    return undefined;
  }
  return new StoredFileReader(pacs, dir);
}
