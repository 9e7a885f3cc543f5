import pino from 'pino';
import { closeServices, initServices } from '../bootstrap';
import { loadConfig } from '../config';
import type { CoreServices } from '../services';

/**
 * Runs one CLI command inside the common lifecycle (index and archive client; no HTTP parts, no queues) and
 * closes it again, whatever the command did. Log lines go to stderr so that stdout stays the command's output
 * (`projects list --json` pipes into jq).
 */
export async function withServices<T>(
  fn: (services: CoreServices) => Promise<T>,
  parts: { migrate?: boolean } = {},
): Promise<T> {
  const config = loadConfig();
  const logger = pino({ name: 'aperture-cli', level: config.LOG_LEVEL }, pino.destination(2));
  const services = await initServices(config, logger, { ...parts, http: false, queues: false });
  try {
    return await fn(services);
  } finally {
    await closeServices(services);
  }
}
