import type { ServerResponse } from 'node:http';
import type { Pool } from 'pg';
import type { Principal } from './auth/access';
import type { Config } from './config';
import type { Logger } from './logger';
import type { Archive } from './orthanc/archive';
import type { PacsClient } from './orthanc/client';

/** An audit record as handlers describe what they did. No PHI: identifiers only. */
export interface AuditDetail {
  action: string;
  projectId?: string;
  studyUid?: string;
  seriesUid?: string;
  sopInstanceUid?: string;
  bytes?: number;
  detail?: Record<string, unknown>;
}

/**
 * What authentication reads of a request: its path and headers. A Koa context is one; naming only these
 * keeps the services (and whatever a worker builds from them) free of the HTTP framework.
 */
export interface RequestHead {
  readonly path: string;
  get(header: string): string;
}

/** What the audit trail reads of a request and its response (a Koa context is one). */
export interface AuditedRequest extends RequestHead {
  readonly method: string;
  readonly ip: string;
  readonly query: Record<string, string | string[] | undefined>;
  /** Route parameters, set by the router once it matched. */
  readonly params?: Record<string, string>;
  /** The route pattern that matched (set by @koa/router); the raw URL is never recorded. */
  readonly _matchedRoute?: unknown;
  readonly state: { principal?: Principal } & Record<string, unknown>;
  readonly res: ServerResponse;
}

/** What every process opens (gateway, worker, CLI): the index, the archive client, configuration, logging. */
export interface CoreServices {
  config: Config;
  db: Pool;
  pacs: PacsClient;
  /** The archive in DICOM verbs (src/orthanc/archive.ts); what retrieval, ingest and jobs should use. */
  archive: Archive;
  logger: Logger;
}

/** Everything the HTTP app needs, built once by initServices (or by a test). */
export interface Services extends CoreServices {
  /** Turns a request into a principal, or throws UnauthorizedError. */
  authenticate(request: RequestHead): Promise<Principal>;
  /** Records an audit event; never throws into the request. */
  audit?(request: AuditedRequest, outcome: number, detail?: AuditDetail): Promise<void>;
}
