import { createApp } from './app';
import { closeAuditExporter, initAuditExporter } from './audit-export/exporter';
import { closeServices, initServices } from './bootstrap';
import { loadConfig } from './config';
import { closeIndexer, initIndexer } from './ingest/change-feed';
import { closeQueues, initQueues } from './jobs/queues';
import { createHttpServer } from './http/server';
import { createLogger } from './logger';

/** The HTTP gateway process. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL);
  const services = await initServices(config, logger);
  // Producer side only (STOW and the change feed enqueue derived work); the jobs run in src/worker.ts.
  initQueues(config, logger);
  const app = createApp(services);
  // Every gateway process runs one; leader election lets only one of them index at a time.
  if (config.INDEXER_ENABLED) initIndexer(services);
  // Forwards the audit trail to syslog / Splunk HEC when configured (reads the table, never holds a request).
  await initAuditExporter(services.db, logger, config);
  // Head size, header/request/socket timeouts and parser errors are set there (src/http/server.ts).
  const server = createHttpServer(app, config, logger);
  server.listen(config.PORT, config.HOST, () => {
    logger.info({ port: config.PORT, host: config.HOST }, 'gateway listening');
  });

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.close();
    server.closeIdleConnections();
    await closeAuditExporter().catch((err) =>
      logger.error({ err: String(err) }, 'error stopping the audit export'),
    );
    await closeIndexer().catch((err) => logger.error({ err: String(err) }, 'error stopping the indexer'));
    await closeQueues().catch((err) => logger.error({ err: String(err) }, 'error closing the job queues'));
    await closeServices().catch((err) => logger.error({ err: String(err) }, 'error during shutdown'));
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
