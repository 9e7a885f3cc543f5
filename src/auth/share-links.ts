import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import { NotFoundError } from '../errors';
import {
  findActiveShareLink,
  insertShareLink,
  listShareLinkRows,
  projectHasStudy,
  revokeShareLinkRow,
  type ShareLinkRow,
  studyOfProjectSeries,
} from '../index-db/share-links';
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

function toShareLink(r: ShareLinkRow, now = Date.now()): ShareLink {
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
    const studyUid = await studyOfProjectSeries(db, t.projectId, t.seriesUid);
    if (!studyUid || (t.studyUid && studyUid !== t.studyUid)) throw new NotFoundError('series not found');
    return { projectId: t.projectId, studyUid, seriesUid: t.seriesUid };
  }
  if (t.studyUid) {
    if (!(await projectHasStudy(db, t.projectId, t.studyUid))) throw new NotFoundError('study not found');
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
  const row = await insertShareLink(db, {
    id: randomUUID(),
    tokenHash: hashShareToken(token),
    projectId: target.projectId,
    studyUid: target.studyUid ?? null,
    seriesUid: target.seriesUid ?? null,
    createdBy: input.createdBy,
    expiresInS: input.expiresInS,
    description: input.description ?? '',
  });
  return { link: toShareLink(row), token };
}

/** The project's share links, newest first (tokens are not stored, so never listed). */
export async function listShareLinks(db: Pool, projectId: string): Promise<ShareLink[]> {
  return (await listShareLinkRows(db, projectId)).map((row) => toShareLink(row));
}

/** Revokes a share link of the project; idempotent. 404 when the project has no such link. */
export async function revokeShareLink(db: Pool, projectId: string, id: string): Promise<ShareLink> {
  if (!UUID_SHAPE.test(id)) throw new NotFoundError('share link not found');
  const row = await revokeShareLinkRow(db, projectId, id);
  if (!row) throw new NotFoundError('share link not found');
  return toShareLink(row);
}

/**
 * The principal of a share token, or undefined when the token is malformed, unknown, expired or revoked.
 * A share principal holds no roles: it can only read within its one scope.
 */
export async function principalForShareToken(db: Pool, token: string): Promise<Principal | undefined> {
  if (!SHARE_TOKEN_SHAPE.test(token)) return undefined;
  const row = await findActiveShareLink(db, hashShareToken(token));
  if (!row) return undefined;
  const scope: ReadScope = { projectId: row.project_id };
  if (row.study_uid) scope.studyUid = row.study_uid;
  if (row.series_uid) scope.seriesUid = row.series_uid;
  return { id: row.id, kind: 'share', globalAdmin: false, projects: new Map(), shareScopes: [scope] };
}
