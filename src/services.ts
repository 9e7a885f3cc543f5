import type { Context } from 'koa';
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

/** Everything the HTTP app needs, built once by main.ts (or by a test). */
export interface Services {
  config: Config;
  db: Pool;
  pacs: PacsClient;
  /** The archive in DICOM verbs (src/orthanc/archive.ts); what retrieval, ingest and jobs should use. */
  archive: Archive;
  logger: Logger;
  /** Turns a request into a principal, or throws UnauthorizedError. */
  authenticate(ctx: Context): Promise<Principal>;
  /** Records an audit event; never throws into the request. */
  audit?(ctx: Context, outcome: number, detail?: AuditDetail): Promise<void>;
}
