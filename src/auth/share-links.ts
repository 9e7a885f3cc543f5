import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import { NotFoundError } from '../errors';
import type { Principal, ReadScope } from './access';

/**
 * Share links: read-only, expiring, revocable access to one study, one series or a whole project, for people
 * without an account (a collaborator's viewer, a journal reviewer). The token is 32 random bytes, shown once;
 * only its SHA-256 is stored, so a database dump opens nothing. The prefix tells share tokens from JWTs in an
 * Authorization header and makes leaked tokens easy to spot (secret scanners).
 */
export const SHARE_TOKEN_PREFIX = 'apsh_';
const SHARE_TOKEN_SHAPE = /^apsh_[A-Za-z0-9_-]{43}$/;
const UUID_SHAPE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** A share link as listed (never with its token). */
export interface ShareLink {
  id: string;
  projectId: string;
  studyUid: string | null;
  seriesUid: string | null;
  createdBy: string;
  createdAt: Date;
  expiresAt: Date;
  revokedAt: Date | null;
  description: string;
  status: 'active' | 'expired' | 'revoked';
}

interface ShareRow {
  id: string;
  project_id: string;
  study_uid: string | null;
  series_uid: string | null;
  created_by: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  description: string;
}

/** True when a string has the shape of a share token (cheap check before hashing and a lookup). */
export function looksLikeShareToken(s: string): boolean {
  return s.startsWith(SHARE_TOKEN_PREFIX);
}

/** A fresh share token: prefix + 32 random bytes, base64url. */
export function newShareToken(): string {
  return SHARE_TOKEN_PREFIX + randomBytes(32).toString('base64url');
}

/** The stored form of a token. */
export function hashShareToken(token: string): Buffer {
  return createHash('sha256').update(token, 'utf8').digest();
}

function toShareLink(r: ShareRow, now = Date.now()): ShareLink {
  return {
    id: r.id,
    projectId: r.project_id,
    studyUid: r.study_uid,
    seriesUid: r.series_uid,
    createdBy: r.created_by,
    createdAt: r.created_at,
    expiresAt: r.expires_at,
    revokedAt: r.revoked_at,
    description: r.description,
    status: r.revoked_at ? 'revoked' : r.expires_at.getTime() <= now ? 'expired' : 'active',
  };
}

/** What a new share link grants. */
export interface ShareTarget {
  projectId: string;
  studyUid?: string;
  seriesUid?: string;
}

/**
 * Resolves and checks what a share would grant: the project must hold the study or series (404 otherwise, as
 * for any UID the caller cannot see). A series share also records its study, so study-level queries work.
 */
export async function resolveShareTarget(db: Pool, t: ShareTarget): Promise<ShareTarget> {
  if (t.seriesUid) {
    const r = await db.query<{ study_uid: string }>(
      'SELECT study_uid FROM project_series WHERE project_id = $1 AND series_uid = $2',
      [t.projectId, t.seriesUid],
    );
    const row = r.rows[0];
    if (!row || (t.studyUid && row.study_uid !== t.studyUid)) throw new NotFoundError('series not found');
    return { projectId: t.projectId, studyUid: row.study_uid, seriesUid: t.seriesUid };
  }
  if (t.studyUid) {
    const r = await db.query('SELECT 1 FROM project_studies WHERE project_id = $1 AND study_uid = $2', [
      t.projectId,
      t.studyUid,
    ]);
    if (r.rowCount === 0) throw new NotFoundError('study not found');
    return { projectId: t.projectId, studyUid: t.studyUid };
  }
  return { projectId: t.projectId };
}

/** Creates a share link; returns it with its token, which is never available again. */
export async function createShareLink(
  db: Pool,
  input: ShareTarget & { createdBy: string; expiresInS: number; description?: string },
): Promise<{ link: ShareLink; token: string }> {
  const target = await resolveShareTarget(db, input);
  const token = newShareToken();
  const r = await db.query<ShareRow>(
    `INSERT INTO share_links (id, token_hash, project_id, study_uid, series_uid, created_by, expires_at, description)
     VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8)
     RETURNING id, project_id, study_uid, series_uid, created_by, created_at, expires_at, revoked_at, description`,
    [
      randomUUID(),
      hashShareToken(token),
      target.projectId,
      target.studyUid ?? null,
      target.seriesUid ?? null,
      input.createdBy,
      input.expiresInS,
      input.description ?? '',
    ],
  );
  return { link: toShareLink(r.rows[0]), token };
}

/** The project's share links, newest first (tokens are not stored, so never listed). */
export async function listShareLinks(db: Pool, projectId: string): Promise<ShareLink[]> {
  const r = await db.query<ShareRow>(
    `SELECT id, project_id, study_uid, series_uid, created_by, created_at, expires_at, revoked_at, description
       FROM share_links WHERE project_id = $1 ORDER BY created_at DESC, id`,
    [projectId],
  );
  return r.rows.map((row) => toShareLink(row));
}

/** Revokes a share link of the project; idempotent. 404 when the project has no such link. */
export async function revokeShareLink(db: Pool, projectId: string, id: string): Promise<ShareLink> {
  if (!UUID_SHAPE.test(id)) throw new NotFoundError('share link not found');
  const r = await db.query<ShareRow>(
    `UPDATE share_links SET revoked_at = COALESCE(revoked_at, now())
      WHERE project_id = $1 AND id = $2
      RETURNING id, project_id, study_uid, series_uid, created_by, created_at, expires_at, revoked_at, description`,
    [projectId, id],
  );
  if (!r.rows[0]) throw new NotFoundError('share link not found');
  return toShareLink(r.rows[0]);
}

/**
 * The principal of a share token, or undefined when the token is malformed, unknown, expired or revoked.
 * A share principal holds no roles: it can only read within its one scope.
 */
export async function principalForShareToken(db: Pool, token: string): Promise<Principal | undefined> {
  if (!SHARE_TOKEN_SHAPE.test(token)) return undefined;
  const r = await db.query<{
    id: string;
    project_id: string;
    study_uid: string | null;
    series_uid: string | null;
  }>(
    `SELECT id, project_id, study_uid, series_uid FROM share_links
      WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()`,
    [hashShareToken(token)],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  const scope: ReadScope = { projectId: row.project_id };
  if (row.study_uid) scope.studyUid = row.study_uid;
  if (row.series_uid) scope.seriesUid = row.series_uid;
  return { id: row.id, kind: 'share', globalAdmin: false, projects: new Map(), shareScopes: [scope] };
}
