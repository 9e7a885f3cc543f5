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
  /** Loopback by default so that a local run is not reachable from the network; compose sets 0.0.0.0. */
  HOST: z.string().default('127.0.0.1'),
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
  /**
   * Read whole stored instances from Orthanc's StorageDirectory (ORTHANC_STORAGE_DIR) instead of its REST API, where
   * the gateway sees that folder (src/orthanc/storage-files.ts). The local stack turns it on; compose and the
   * manifests leave it off (the gateway would need Orthanc's volume mounted read-only). Off, or a file that is
   * compressed, missing or of another size: REST, as before.
   */
  ARCHIVE_FILE_READS: bool.default(false),

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
  /** Renders waiting for one of those turns at most; beyond, 503 with Retry-After. */
  RENDER_QUEUE: int(64, 0),
  /** Thumbnails fit a square of this many pixels (cached ones are JPEG at this size). */
  THUMBNAIL_SIZE: int(128, 16),
  /** Thumbnail jobs processed at once by each worker process. */
  THUMBNAIL_CONCURRENCY: int(2, 1),
  /** Browser origins allowed to call the gateway (CORS), comma-separated, or `*`; empty = no CORS headers. */
  CORS_ORIGINS: z.string().default(''),

  // Outages (issue 8, resilience): how a dependency that is down is detected and answered.
  /** Retry-After (seconds) of the 503 answered while PostgreSQL, Orthanc or Redis is down. */
  RETRY_AFTER_S: int(5, 1),
  /** Each dependency check of /readyz gives up after this long, and the dependency counts as down. */
  READINESS_TIMEOUT_MS: int(1000, 50),
  /** Longest wait for a new PostgreSQL connection; past it the request answers 503 instead of hanging. */
  DATABASE_CONNECT_TIMEOUT_MS: int(5000, 100),
  /** Behaviour under load (issue 8, defect 15). */
  /** Finished WADO-RS metadata answers kept in memory (LRU, bytes); one answer above 1/8 of it is not kept; 0 = off. */
  METADATA_CACHE_BYTES: int(32 * 1024 ** 2, 0),
  // -- HTTP exposure, request limits and timeouts (issue 8: src/main.ts, src/http/) --
  /** Largest request head (request line + headers) Node accepts; beyond it the connection gets a 431 explaining it. */
  HTTP_MAX_HEADER_BYTES: int(128 * 1024, 16 * 1024),
  /** Bearer tokens longer than this are refused with 401 before any parsing. */
  AUTH_MAX_TOKEN_BYTES: int(16 * 1024, 1024),
  /** Time a client has to send the whole request head. */
  HTTP_HEADERS_TIMEOUT_MS: int(30_000, 1000),
  /** Time a client has to send a whole request, body included (STOW answers what it stored by then). */
  HTTP_REQUEST_TIMEOUT_MS: int(60 * 60_000, 1000),
  /** A request body that sends nothing for this long is cut off (STOW answers 408 with what it stored). */
  HTTP_BODY_IDLE_TIMEOUT_MS: int(30_000, 100),
  /** A connection with no traffic either way for this long is closed (slow readers and writers alike). */
  HTTP_SOCKET_TIMEOUT_MS: int(120_000, 1000),
  // ops: graceful shutdown (src/http/drain.ts). On SIGTERM /readyz answers 503 "draining" for SHUTDOWN_GRACE_MS while
  // requests are still served (set it above the load balancer's health-check interval x fall count), then the gateway
  // stops accepting and waits up to SHUTDOWN_TIMEOUT_MS for the requests in flight.
  SHUTDOWN_GRACE_MS: int(0, 0),
  SHUTDOWN_TIMEOUT_MS: int(25_000, 100),
  /** Most frame numbers in one Retrieve Frames request (400 beyond). */
  WADO_MAX_FRAMES: int(1000, 1),
  /** Requests per second each principal (token subject, share link, or client address) may sustain; 0 = no limit. */
  RATE_LIMIT_PER_S: int(1000, 0),
  /** Requests a principal may send in a burst above the sustained rate. */
  RATE_LIMIT_BURST: int(2000, 1),
  /** Requests of one principal in progress at once (streaming answers count until they end); 0 = no limit. */
  CONCURRENCY_LIMIT: int(64, 0),
  /** Strict-Transport-Security max-age sent on requests that arrived over TLS (directly or via a trusted proxy); 0 = none. */
  HSTS_MAX_AGE_S: int(365 * 86400, 0),
  // Change-feed index lag (issue 8, defect 5).
  /** How long a STOW's claim on an object it is storing keeps the change feed away from it (then the feed indexes). */
  INDEXER_CLAIM_TTL_MS: int(120_000, 1000),
  /** While the feed works through a backlog, deletions are reconciled at most this often (and ≤ 10% of its time). */
  INDEXER_BUSY_SWEEP_MS: int(10_000, 100),
  /** How long a hole in Orthanc's change log is re-read for a change that committed late (concurrent writers). */
  INDEXER_GAP_WAIT_MS: int(30_000, 100),
  /** Least interval between two idle comparisons that index what the change log never showed (the backstop). */
  INDEXER_RECONCILE_MS: int(60_000, 100),
  // Ingest: C-STORE re-arrivals of archived objects (issue 15, defect 2).
  /** Address the leading indexer serves Orthanc's C-STORE filter on (orthanc-config/aperture-arrivals.py). */
  ARRIVAL_HOOK_HOST: z.string().default('127.0.0.1'),
  /** Its port; 0 = any free port (it is registered with Orthanc, never configured there). */
  ARRIVAL_HOOK_PORT: int(0, 0),
  /** URL Orthanc reaches it by, when not http://ARRIVAL_HOOK_HOST:port (another container, say). */
  ARRIVAL_HOOK_URL: z.string().url().optional(),
  // Research cohorts and project memberships (issue 10).
  /** Roles granted by memberships kept in Aperture are reused per subject this long at most (ms); 0 = every request. */
  MEMBERSHIP_CACHE_MS: int(2000, 0),
  /**
   * Instances a cohort worker reads, de-identifies and stores at once. Each lane holds one source object and its output
   * in memory (at most twice COHORT_MAX_OBJECT_BYTES). 8 kept a 2-core machine's Orthanc busiest in bench/ (4: the
   * archive waits between stores; 16: Orthanc and PostgreSQL contend and every step slows).
   */
  COHORT_CONCURRENCY: int(8, 1),
  /** Most source instances one cohort may hold (400 beyond). */
  COHORT_MAX_INSTANCES: int(100_000, 1),
  /** Largest source object a cohort reads into memory to de-identify it (bytes); larger ones fail as too_large. */
  COHORT_MAX_OBJECT_BYTES: int(512 * 1024 * 1024, 1024),

  // deid (issue 10, Clean Pixel Data): a site's own burned-in annotation rules, applied with the vendored ones.
  /** JSON file of extra pixel rules (format of src/dicom/deid/pixel-rules.json); empty = the vendored rules only. */
  DEID_PIXEL_RULES_FILE: z.string().default(''),

  // -- Operations (issue 17): Prometheus metrics (src/http/metrics.ts) and audit export (src/audit-export/) --
  /** Collects Prometheus metrics and serves them at /metrics; false = no instrumentation at all. */
  METRICS_ENABLED: bool.default(true),
  /** Bearer token /metrics requires; empty = /metrics answers only clients on the loopback interface. */
  METRICS_TOKEN: z.string().default(''),
  /** Audit trail forwarded as DICOM audit messages over syslog (RFC 5424): `tcp://host:port` or `tls://host:port`. */
  AUDIT_SYSLOG_URL: z.string().default(''),
  /** PEM file of the CA that signed the syslog server's certificate (tls://); empty = the system's CAs. */
  AUDIT_SYSLOG_CA_FILE: z.string().default(''),
  /** Splunk HTTP Event Collector endpoint (e.g. https://splunk:8088/services/collector/event); empty = off. */
  AUDIT_HEC_URL: z.string().default(''),
  /** Splunk HEC token (sent as `Authorization: Splunk <token>`). */
  AUDIT_HEC_TOKEN: z.string().default(''),
  /** AuditSourceID of the exported messages (PS3.15 A.5.2.1); empty = the host name. */
  AUDIT_SOURCE_ID: z.string().default(''),
  /** Audit events read and sent per batch; the backlog waits in PostgreSQL, not in memory. */
  AUDIT_EXPORT_BATCH: int(200, 1),
  /** How often the exporter looks for new audit events. */
  AUDIT_EXPORT_INTERVAL_MS: int(1000, 50),
  /** Longest back-off between retries while a destination is down. */
  AUDIT_EXPORT_MAX_BACKOFF_MS: int(60_000, 100),
  // Web application (issue 13).
  /** Issuer URL the browser logs in at, when it differs from OIDC_ISSUER (an internal name the browser cannot reach). */
  WEB_OIDC_ISSUER: z.string().url().optional(),
  /** The realm's public client the web application logs in with (authorization code + PKCE). */
  WEB_OIDC_CLIENT_ID: z.string().min(1).default('aperture-viewer'),
  /** Folder of the built web application (vite build output); default dist/web of the checkout. */
  WEB_DIST_DIR: z.string().optional(),

  // In-process codecs (issue 11): the decode thread pool and its bounds.
  /** Decode threads; 0 = all cores but one. */
  CODEC_THREADS: int(0, 0),
  /** Frames waiting for a decode thread at most; beyond, requests answer 503 with Retry-After. */
  CODEC_QUEUE: int(64, 0),
  /** Largest decoded frame (rows x columns x samples x bytes per sample), checked before decoding. */
  CODEC_MAX_FRAME_BYTES: int(256 * 1024 ** 2, 1),

  // Viewer (issue 13): the published OHIF build served under /viewer.
  /** OHIF's dist/ folder; default .stack/ohif-3.13.2/package/dist (fetched by scripts/viewer.ts). Missing: no viewer. */
  VIEWER_DIST_DIR: z.string().optional(),

  // pipelines (issue 19): Boutiques tools run as sandboxed jobs on authorised copies (src/pipelines/).
  /** Key of run tokens (HS256), shared by the gateway and its workers; unset: no runs can fetch or store. */
  PIPELINE_RUN_TOKEN_SECRET: z.string().min(32).optional(),
  /** Lifetime of a run token; a run longer than this cannot store its results. */
  PIPELINE_RUN_TOKEN_TTL_S: int(3600, 60),
  /** The gateway base URL the worker fetches inputs from and stores results to (its own DICOMweb). */
  PIPELINE_GATEWAY_URL: z.string().url().default('http://127.0.0.1:8080'),
  /** Private working folders of runs (one per run, mode 0700, removed afterwards); default os.tmpdir()/aperture-runs. */
  PIPELINE_WORK_DIR: z.string().optional(),
  /** Runs one worker process executes at once. */
  PIPELINE_CONCURRENCY: int(2, 1),
  /** Wall-clock limit of one tool run; the sandbox is killed past it. */
  PIPELINE_TIMEOUT_S: int(3600, 1),
  /** CPU seconds a tool may use (RLIMIT_CPU). */
  PIPELINE_CPU_S: int(3600, 1),
  /**
   * Memory of a tool run (a descriptor's suggested-resources.ram can only lower it): its cgroup's memory.max when
   * PIPELINE_CGROUP_DIR gives one, else its address space (RLIMIT_AS).
   */
  PIPELINE_MEMORY_BYTES: int(4 * 1024 ** 3, 64 * 1024 ** 2),
  /** CPU cores of a tool run (cgroup cpu.max; lowered by suggested-resources.cpu-cores); only with a cgroup. */
  PIPELINE_CPU_CORES: z.coerce.number().positive().default(1),
  /**
   * A delegated cgroup v2 folder (memory and cpu controllers, writable, no process of its own) under which each run
   * gets a cgroup with memory.max, cpu.max and pids.max; unset = rlimits only (src/pipelines/cgroups.ts).
   */
  PIPELINE_CGROUP_DIR: z.string().optional(),
  /**
   * Kernel limits of tool runs: `auto` takes PIPELINE_CGROUP_DIR (cgroup v2) when it works, else the worker's own
   * cgroup v1 memory (with pids and cpu when mounted) hierarchies, else rlimits; `v2`/`v1` only that; `off` rlimits.
   */
  PIPELINE_CGROUP: z.enum(['auto', 'v2', 'v1', 'off']).default('auto'),
  /** Processes and threads a tool run may have at once (cgroup pids.max). */
  PIPELINE_PIDS_MAX: int(4096, 8),
  /**
   * Where tools run: `host` (bubblewrap in the worker, the default) or `kubernetes` (a Job per run from the
   * descriptor's docker image, submitted with the in-cluster account or the kubeconfig; src/pipelines/k8s-executor.ts).
   */
  PIPELINE_EXECUTOR: z.enum(['host', 'kubernetes']).default('host'),
  /** Bytes of stdout and of stderr kept per run (the rest is cut, and the cut noted). */
  PIPELINE_LOG_MAX_BYTES: int(1024 * 1024, 1024),
  /** Input series per run, and instances over all of them. */
  PIPELINE_MAX_INPUT_SERIES: int(20, 1),
  PIPELINE_MAX_INPUT_INSTANCES: int(5000, 1),
  /** Size of the working folder's outputs a run may leave (checked before anything is stored). */
  PIPELINE_MAX_OUTPUT_BYTES: int(2 * 1024 ** 3, 1024),
  /** Largest descriptor accepted by the registry. */
  PIPELINE_MAX_DESCRIPTOR_BYTES: int(256 * 1024, 1024),
  // stow
  /** STOW-RS: parts archived ahead of the index, written to it in one statement per this many (and at the end). */
  STOW_INDEX_BATCH: int(100, 1),
  /** STOW-RS: parts parsed and being archived at once within one request. */
  STOW_PIPELINE_DEPTH: int(4, 1),
  // web (issue 13): the jobs dashboard.
  /** Most jobs one GET /api/jobs/list answers. */
  JOBS_LIST_MAX_LIMIT: int(200, 1),
  /** Jobs read per queue and state (newest first) before a listing filters by project and pages. */
  JOBS_LIST_SCAN: int(1000, 1),
  /** Seconds a single-use download link (POST /api/download-links) stays valid. */
  DOWNLOAD_LINK_TTL_S: int(60, 5),
  // bridge (issue 14): remote DICOM nodes, query/retrieve into projects, watchers (src/bridge/).
  /** Seconds a DIMSE operation with a remote node (echo, C-FIND, one study's C-MOVE or C-GET) may take. */
  BRIDGE_DIMSE_TIMEOUT_S: int(600, 1),
  /** C-FIND answers kept per query (the node is asked for all; more are cut and reported as truncated). */
  BRIDGE_QUERY_MAX_ANSWERS: int(1000, 1),
  /** Studies one retrieve or one watcher run may ask for. */
  BRIDGE_MAX_STUDIES: int(500, 1),
  /** After a node reported a C-MOVE complete: how long to wait for the change feed to index its arrivals. */
  BRIDGE_INDEX_WAIT_MS: int(120_000, 100),
  /** Shortest watcher interval. */
  BRIDGE_WATCHER_MIN_INTERVAL_S: int(60, 1),
  /** Retrieves run at once by one worker process (each also needs a free association slot of its node). */
  BRIDGE_WORKER_CONCURRENCY: int(4, 1),
  /** Folder for C-GET's received files while the gateway parses and stores them; default the OS temp folder. */
  BRIDGE_CGET_DIR: z.string().optional(),
  // records (issue 18): research records, spreadsheet import, non-DICOM files.
  /** Folder of the non-DICOM file store (content-addressed, fsync'd); default .stack/records-files of the checkout. */
  RECORDS_FILES_DIR: z.string().optional(),
  /** Largest non-DICOM file (one upload part or one ZIP entry). */
  RECORDS_FILE_MAX_BYTES: int(2 * 1024 ** 3, 1),
  /** Most files in one upload (parts plus ZIP entries). */
  RECORDS_UPLOAD_MAX_FILES: int(1000, 1),
  /** Largest spreadsheet accepted by an import. */
  RECORDS_IMPORT_MAX_BYTES: int(100 * 1024 ** 2, 1),
  /** Most data rows in one import. */
  RECORDS_IMPORT_MAX_ROWS: int(100_000, 1),
  /** Rows checked and written per transaction during an import. */
  RECORDS_IMPORT_BATCH: int(500, 1),
  /** Largest page of a subject search. */
  RECORDS_SEARCH_MAX_LIMIT: int(1000, 1),
  /** Most records read for one summary or for the records of one cohort download. */
  RECORDS_MAX_SUMMARY_ROWS: int(100_000, 1),
  /** How long the bytes of a deleted file (and a blob's last write) wait before the sweep may remove them. */
  RECORDS_BLOB_GRACE_MS: int(86_400_000, 0),
  /** How often each worker process sweeps deleted files' bytes; 0 turns the sweep off. */
  RECORDS_BLOB_SWEEP_MS: int(3_600_000, 0),
  // sites (issue 16): backups, verify.
  /** Folder of `aperture backup`'s backups (one sub-folder each). */
  BACKUP_DIR: z.string().default('.stack/backups'),
  /** Orthanc's StorageDirectory, read by `aperture backup` (the stack's: $STACK_DIR/orthanc/storage). */
  ORTHANC_STORAGE_DIR: z.string().default('.stack/dev/orthanc/storage'),
  /** Comma-separated configuration and key files kept with each backup (orthanc.json, credentials, env file). */
  BACKUP_CONFIG_PATHS: z.string().default(''),
  /** Retention: the newest backup of each of the last N days, and of each of the last N ISO weeks. */
  BACKUP_KEEP_DAILY: int(7, 0),
  BACKUP_KEEP_WEEKLY: int(4, 0),
  /** Free space a backup or restore leaves on its disk beyond what it writes; less answers a clear error first. */
  BACKUP_MIN_FREE_BYTES: int(256 * 1024 ** 2, 0),
  /** PostgreSQL client tools (pg_basebackup); empty = the newest /usr/lib/postgresql/N/bin. */
  PG_BIN_DIR: z.string().default(''),
  /** Instances `aperture verify` reads at once. */
  VERIFY_CONCURRENCY: int(4, 1),
  /** How long a site's role (primary, or read-only standby by pg_is_in_recovery()) is trusted before asking again. */
  SITE_ROLE_CACHE_MS: int(2000, 0),
  // Storage sync to a standby site (`aperture storage-sync`, src/sites/storage-sync.ts, docs/two-sites.md).
  /** Orthanc REST of the site the files come from (the primary's); empty = no sync. */
  STORAGE_SYNC_SOURCE_URL: z.string().default(''),
  STORAGE_SYNC_SOURCE_USERNAME: z.string().optional(),
  STORAGE_SYNC_SOURCE_PASSWORD: z.string().optional(),
  /** This site's Orthanc index (the replicated `orthanc` database); empty = DATABASE_URL's server, database orthanc. */
  STORAGE_SYNC_INDEX_URL: z.string().default(''),
  /** status.json and corrupt copies; empty = `<ORTHANC_STORAGE_DIR>-sync`. Read by /metrics and /readyz. */
  STORAGE_SYNC_STATE_DIR: z.string().default(''),
  /** Pause between two passes of the sync loop. */
  STORAGE_SYNC_INTERVAL_MS: int(2000, 10),
  /** A pass that re-reads every copy (0 = never in the loop; `storage-sync --verify` still does). */
  STORAGE_SYNC_VERIFY_EVERY_MS: int(24 * 3600 * 1000, 0),
  /** Files fetched at once. */
  STORAGE_SYNC_CONCURRENCY: int(4, 1),
  /** A pass over the whole index (and pruning) this often; passes between read only Orthanc's new changes (0 = always full). */
  STORAGE_SYNC_FULL_EVERY_MS: int(3600 * 1000, 0),
  /** Full passes delete files the index no longer names (deleted at the source site) once orphans this long. */
  STORAGE_SYNC_PRUNE: bool.default(true),
  STORAGE_SYNC_PRUNE_GRACE_MS: int(24 * 3600 * 1000, 0),
  /** Change log entries an incremental pass reads again before its watermark (transactions that commit late). */
  STORAGE_SYNC_CHANGES_LOOKBACK: int(1000, 0),
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
