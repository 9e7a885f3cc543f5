import { existsSync, readFileSync } from 'node:fs';
import { z } from 'zod';

const bool = z
  .enum(['true', 'false', '1', '0', 'yes', 'no'])
  .transform((v) => v === 'true' || v === '1' || v === 'yes');
const int = (def: number, min = 0) => z.coerce.number().int().min(min).default(def);

/**
 * Every setting of the gateway and workers, read once from the environment. README.md lists them all;
 * keep that table in step with this schema.
 */
export const configSchema = z.object({
  PORT: int(8080, 1),
  HOST: z.string().default('0.0.0.0'),
  /** Base URL clients use to reach the gateway; when unset it is derived per request (Forwarded / X-Forwarded-* if TRUST_PROXY). */
  PUBLIC_BASE_URL: z.string().url().optional(),
  TRUST_PROXY: bool.default(false),
  LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),

  DATABASE_URL: z.string().default('postgres://aperture@127.0.0.1:55432/aperture'),
  DATABASE_POOL_SIZE: int(20, 1),
  REDIS_URL: z.string().default('redis://127.0.0.1:56379'),

  ORTHANC_URL: z.string().url().default('http://127.0.0.1:58042'),
  ORTHANC_USERNAME: z.string().optional(),
  ORTHANC_PASSWORD: z.string().optional(),
  ORTHANC_TIMEOUT_MS: int(30000, 100),
  ORTHANC_CONNECTIONS: int(32, 1),

  /** STOW-RS limits, enforced before anything reaches Orthanc. */
  STOW_MAX_REQUEST_BYTES: int(4 * 1024 ** 3, 1),
  STOW_MAX_PART_BYTES: int(1024 ** 3, 1),
  STOW_MAX_PARTS: int(10000, 1),
  /** Parts larger than this are spooled to a temporary file instead of memory. */
  STOW_SPOOL_BYTES: int(32 * 1024 ** 2, 0),

  QIDO_DEFAULT_LIMIT: int(100, 1),
  QIDO_MAX_LIMIT: int(1000, 1),

  /** Authentication. AUTH_ENABLED=false makes every caller a global administrator: benchmarks and local hacking only. */
  AUTH_ENABLED: bool.default(true),
  OIDC_ISSUER: z.string().url().optional(),
  OIDC_AUDIENCE: z.string().default('aperture-gateway'),
  OIDC_JWKS_URL: z.string().url().optional(),
  OIDC_ALGORITHMS: z.string().default('RS256,ES256,PS256'),
  OIDC_CLOCK_TOLERANCE_S: int(5, 0),
  GLOBAL_ADMIN_ROLE: z.string().default('aperture-admin'),
  /** Clients (`azp`) accepted even when `aud` lacks OIDC_AUDIENCE (realms without an audience mapper). */
  OIDC_ALLOWED_CLIENTS: z.string().default(''),
  /** A token with an unknown `kid` refetches the JWKS at most once per this window (jose cooldown). */
  OIDC_JWKS_COOLDOWN_MS: int(10_000, 0),
  /** Background JWKS refresh, so that retired keys stop being trusted. */
  OIDC_JWKS_REFRESH_MS: int(10 * 60_000, 1000),
  /** Longest lifetime a share link may be given. */
  SHARE_MAX_TTL_S: int(90 * 86400, 60),
  /** Audit events held in memory while the database is slow or down; beyond this they are dropped (and logged). */
  AUDIT_QUEUE_MAX: int(10_000, 100),

  /** Change-feed indexer (Orthanc /changes → index); runs in the gateway process under leader election. */
  INDEXER_ENABLED: bool.default(true),
  INDEXER_POLL_MS: int(250, 10),
  /** Project that instances land in when no routing rule matches; empty = quarantine. */
  DEFAULT_PROJECT: z.string().default(''),

  /** Rendered resources and thumbnails: largest source frame decoded and largest output image, in pixels. */
  RENDER_MAX_PIXELS: int(64 * 1024 ** 2, 1),
  RENDER_MAX_OUTPUT_PIXELS: int(64 * 1024 ** 2, 1),
  /** Renders running at once in the gateway process (each holds one decoded frame in memory). */
  RENDER_CONCURRENCY: int(4, 1),
  /** Thumbnails fit a square of this many pixels (cached ones are JPEG at this size). */
  THUMBNAIL_SIZE: int(128, 16),
  /** Thumbnail jobs processed at once by each worker process. */
  THUMBNAIL_CONCURRENCY: int(2, 1),
  /** Browser origins allowed to call the gateway (CORS), comma-separated, or `*`; empty = no CORS headers. */
  CORS_ORIGINS: z.string().default(''),

  // Change-feed index lag (issue 8, defect 5).
  /** How long a STOW's claim on an object it is storing keeps the change feed away from it (then the feed indexes). */
  INDEXER_CLAIM_TTL_MS: int(120_000, 1000),
  /** While the feed works through a backlog, deletions are reconciled at most this often (and ≤ 10% of its time). */
  INDEXER_BUSY_SWEEP_MS: int(10_000, 100),
});

export type Config = z.infer<typeof configSchema>;

/** Parses settings, listing every problem at once rather than failing on the first. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const fromFile = readEnvFile(env.APERTURE_ENV_FILE);
  const picked: Record<string, string> = {};
  for (const key of Object.keys(configSchema.shape)) {
    const v = env[key] ?? fromFile[key];
    if (v !== undefined && v !== '') picked[key] = v;
  }
  const result = configSchema.safeParse(picked);
  if (!result.success) {
    const lines = result.error.issues.map((i) => `  ${i.path.join('.')}: ${i.message}`);
    throw new Error(`invalid configuration:\n${lines.join('\n')}`);
  }
  return result.data;
}

/**
 * KEY=value lines of a file such as `.stack/dev/env` (written by scripts/stack.sh), used as defaults under the
 * real environment so that the CLI finds the local stack. Missing file → nothing.
 */
function readEnvFile(path: string | undefined): Record<string, string> {
  if (!path || !existsSync(path)) return {};
  const out: Record<string, string> = {};
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    const m = /^\s*([A-Z][A-Z0-9_]*)=(.*)$/.exec(line);
    if (m) out[m[1]] = m[2].trim();
  }
  return out;
}
