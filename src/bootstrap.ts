import { closeAuditTrail, initAuditTrail } from './auth/audit';
import { createAuthenticator } from './auth/authenticate';
import { parseAlgorithms, splitList, TokenVerifier } from './auth/tokens';
import type { Config } from './config';
import { setRetryAfterSeconds } from './errors';
import { migrate } from './index-db/migrate';
import { closeDb, initDb } from './index-db/pool';
import type { Logger } from './logger';
import { closeArchive, initArchive } from './orthanc/archive';
import { closePacs, initPacs } from './orthanc/client';
import type { AuditDetail, Services } from './services';

/** Opens the database (migrating it) and the archive client, and wires authentication. */
export async function initServices(config: Config, logger: Logger): Promise<Services> {
  setRetryAfterSeconds(config.RETRY_AFTER_S);
  const db = initDb(config);
  const applied = await migrate(db);
  if (applied.length) logger.info({ applied }, 'database migrated');
  const pacs = initPacs(config);
  const archive = initArchive(pacs);
  if (config.AUTH_ENABLED) {
    if (!config.OIDC_ISSUER)
      throw new Error('invalid configuration:\n  OIDC_ISSUER: required when AUTH_ENABLED=true');
    verifier = new TokenVerifier(
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
  } else {
    logger.warn('AUTH_ENABLED=false: every caller is a global administrator');
  }
  const authenticate = createAuthenticator({
    enabled: config.AUTH_ENABLED,
    db,
    logger,
    verifier,
    mapping: { globalAdminRole: config.GLOBAL_ADMIN_ROLE },
    membershipCacheMs: config.MEMBERSHIP_CACHE_MS,
  });
  const trail = initAuditTrail(db, logger, config.AUDIT_QUEUE_MAX);
  const audit = async (ctx: Parameters<Services['authenticate']>[0], outcome: number, detail?: AuditDetail) =>
    trail.record(ctx, outcome, detail);
  return { config, db, pacs, archive, logger, authenticate, audit };
}

let verifier: TokenVerifier | undefined;

/** Closes what initServices opened, in reverse order. */
export async function closeServices(): Promise<void> {
  await closeAuditTrail();
  verifier?.close();
  verifier = undefined;
  closeArchive();
  await closePacs();
  await closeDb();
}
