import { createApp } from './app';
import { closeAuditExporter, initAuditExporter } from './audit-export/exporter';
import { initServices, stopOnSignals } from './bootstrap';
import { loadConfig } from './config';
import { drainServer } from './http/drain';
import { createHttpServer } from './http/server';
import { createLogger } from './logger';

/** The HTTP gateway process. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.LOG_LEVEL);
  // Producer queues only (STOW and the change feed enqueue derived work); the jobs run in src/worker.ts.
  const services = await initServices(config, logger, { indexer: config.INDEXER_ENABLED });
  const app = createApp(services);
  // Forwards the audit trail to syslog / Splunk HEC when configured (reads the table, never holds a request).
  await initAuditExporter(services.db, logger, config);
  // Head size, header/request/socket timeouts and parser errors are set there (src/http/server.ts).
  const server = createHttpServer(app, config, logger);
  server.listen(config.PORT, config.HOST, () => {
    logger.info({ port: config.PORT, host: config.HOST }, 'gateway listening');
  });

  stopOnSignals(services, async () => {
    // Out of rotation, then stop accepting, then wait for the requests in flight; the services close after this.
    await drainServer(
      server,
      { graceMs: config.SHUTDOWN_GRACE_MS, timeoutMs: config.SHUTDOWN_TIMEOUT_MS },
      logger,
    );
    await closeAuditExporter().catch((err) =>
      logger.error({ err: String(err) }, 'error stopping the audit export'),
    );
  });
}

main().catch((err) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
