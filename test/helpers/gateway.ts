import type { AddressInfo } from 'node:net';
import type { Server } from 'node:http';
import { Pool } from 'pg';
import { createApp } from '../../src/app';
import { createHttpServer } from '../../src/http/server';
import { closeServices, initServices } from '../../src/bootstrap';
import { type Config, loadConfig } from '../../src/config';
import { closeIndexer } from '../../src/ingest/change-feed';
import { createLogger } from '../../src/logger';
import { OrthancClient } from '../../src/orthanc/client';
import type { Services } from '../../src/services';
import { forgetProjectIds } from '../../src/index-db/projects';

/** A gateway listening on an ephemeral port against the test stack. */
export interface TestGateway {
  url: string;
  services: Services;
  config: Config;
  close(): Promise<void>;
}

/** Starts the gateway in this process against the stack global-setup started. */
export async function startGateway(overrides: Record<string, string> = {}): Promise<TestGateway> {
  const config = loadConfig({
    ...process.env,
    AUTH_ENABLED: 'false',
    INDEXER_ENABLED: 'false',
    ...overrides,
  });
  const logger = createLogger(process.env.LOG_LEVEL ?? 'silent');
  const services = await initServices(config, logger, { indexer: config.INDEXER_ENABLED });
  // The production server (src/http/server.ts): its limits and timeouts, and Koa's errors as structured log lines
  // rather than stack traces on stderr.
  const server: Server = createHttpServer(createApp(services), config, logger).listen(0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    services,
    config,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      // Tests also start the indexer on a running gateway (initIndexer(gw.services)); stop it with the gateway.
      await closeIndexer();
      await closeServices(services);
    },
  };
}

/** Direct access to the test archive (Orthanc REST), for checks the gateway must not be trusted with. */
export function orthancDirect(): OrthancClient {
  return new OrthancClient(loadConfig(process.env));
}

/** Orthanc REST base URL and Basic credentials of the test stack. */
export function orthancEndpoint(): { url: string; auth: string } {
  const c = loadConfig(process.env);
  return {
    url: c.ORTHANC_URL,
    auth: 'Basic ' + Buffer.from(`${c.ORTHANC_USERNAME}:${c.ORTHANC_PASSWORD}`).toString('base64'),
  };
}

/**
 * Empties the archive and the index so a test file starts from nothing. Each jest worker has its own stack and runs
 * its files one at a time, so this never pulls data from under another file. Orthanc keeps running between files, so
 * what its C-STORE filter remembers of the last file's arrivals (orthanc-config/aperture-arrivals.py) stays.
 */
export async function resetStack(): Promise<void> {
  const c = loadConfig(process.env);
  const pool = new Pool({ connectionString: c.DATABASE_URL, max: 1 });
  try {
    const tables = await pool.query<{ tablename: string }>(
      "SELECT tablename FROM pg_tables WHERE schemaname = 'public' AND tablename NOT IN ('schema_migrations', 'indexer_state', 'ingest_claims_epoch')",
    );
    if (tables.rows.length) {
      await pool.query(`TRUNCATE ${tables.rows.map((t) => `"${t.tablename}"`).join(', ')} CASCADE`);
      forgetProjectIds();
    }
  } finally {
    await pool.end();
  }
  const { url, auth } = orthancEndpoint();
  const res = await fetch(`${url}/patients`, { headers: { authorization: auth } });
  const ids = (await res.json()) as string[];
  for (const id of ids)
    await fetch(`${url}/patients/${id}`, { method: 'DELETE', headers: { authorization: auth } });
  // The change feed starts over from Orthanc's current position.
  const pool2 = new Pool({ connectionString: c.DATABASE_URL, max: 1 });
  try {
    const last = (await (
      await fetch(`${url}/changes?last`, { headers: { authorization: auth } })
    ).json()) as {
      Last: number;
    };
    await pool2
      .query("UPDATE indexer_state SET last_change = $1 WHERE name = 'orthanc-changes'", [last.Last])
      .catch(() => undefined);
  } finally {
    await pool2.end();
  }
}

/** Paths of the shared sample files. */
export const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? `${__dirname}/../../../shared/dicom-samples`;
