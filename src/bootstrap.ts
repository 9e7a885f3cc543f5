import type { Context } from 'koa';
import { UNAUTHENTICATED_ADMIN, type Principal } from './auth/access';
import type { Config } from './config';
import { UnauthorizedError } from './errors';
import { migrate } from './index-db/migrate';
import { closeDb, initDb } from './index-db/pool';
import type { Logger } from './logger';
import { closePacs, initPacs } from './orthanc/client';
import type { Services } from './services';

/** Opens the database (migrating it) and the archive client, and wires authentication. */
export async function initServices(config: Config, logger: Logger): Promise<Services> {
  const db = initDb(config);
  const applied = await migrate(db);
  if (applied.length) logger.info({ applied }, 'database migrated');
  const pacs = initPacs(config);
  const authenticate = async (_ctx: Context): Promise<Principal> => {
    if (!config.AUTH_ENABLED) return UNAUTHENTICATED_ADMIN;
    throw new UnauthorizedError();
  };
  if (!config.AUTH_ENABLED) logger.warn('AUTH_ENABLED=false: every caller is a global administrator');
  return { config, db, pacs, logger, authenticate };
}

/** Closes what initServices opened, in reverse order. */
export async function closeServices(): Promise<void> {
  await closePacs();
  await closeDb();
}
