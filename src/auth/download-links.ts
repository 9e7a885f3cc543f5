/**
 * Short-lived, single-use download links (web, issue 13). A signed-in user asks for a link to one ZIP it may already
 * fetch with its token; the browser then saves the gateway's streamed answer through a plain `<a download>`, with no
 * bearer token in any URL and no copy of the archive in browser memory. The link's token is 32 random bytes, stored
 * only as its SHA-256, bound to one path and media type, valid for DOWNLOAD_LINK_TTL_S seconds and used once; the
 * request it opens runs through the same routes and access checks as the original caller (a snapshot of its identity
 * and roles, identifiers only).
 */
import { createHash, randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import { requireUid } from '../dicom/uid';
import { BadRequestError, ForbiddenError } from '../errors';
import { consumeDownloadLink, insertDownloadLink } from '../index-db/download-links';
import type { Principal, Role } from './access';

const PROJECT = '[a-z0-9](?:[a-z0-9-]*[a-z0-9])?';
/** A UID's path segment: any segment here, the one UID rule (requireUid, below) decides. */
const UIDP = '[^/]+';
const UUIDP = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';
/**
 * What a link may open: a study or series ZIP (WADO-RS), a cohort archive, or a research subject's (or record's)
 * non-DICOM files, as a ZIP or one file, or a record type's export. Nothing else.
 */
const DOWNLOADABLE: Array<{ re: RegExp; accept: string }> = [
  {
    re: new RegExp(`^/projects/${PROJECT}/dicom-web/studies/(${UIDP})(?:/series/(${UIDP}))?$`),
    accept: 'application/zip',
  },
  { re: new RegExp(`^/dicom-web/studies/(${UIDP})(?:/series/(${UIDP}))?$`), accept: 'application/zip' },
  {
    re: /^\/api\/cohorts\/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\/archive$/,
    accept: 'application/zip',
  },
  {
    re: new RegExp(`^/api/projects/${PROJECT}/subjects/${UUIDP}(?:/records/${UUIDP})?/files\\.zip$`),
    accept: 'application/zip',
  },
  { re: new RegExp(`^/api/projects/${PROJECT}/subjects/${UUIDP}/files/${UUIDP}$`), accept: '*/*' },
  {
    re: new RegExp(
      `^/api/projects/${PROJECT}/record-types/[A-Za-z][A-Za-z0-9_]{0,63}/export\\.(?:csv|xlsx)$`,
    ),
    accept: '*/*',
  },
];

/** The path prefix of download links. */
export const DOWNLOAD_PREFIX = '/download/';

interface StoredPrincipal {
  id: string;
  kind: Principal['kind'];
  globalAdmin: boolean;
  projects: Array<[string, Role[]]>;
  clientId?: string;
  username?: string;
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** Makes a link to `path` for `p`; 400 for a path that is no downloadable ZIP, 403 for share-link principals. */
export async function createDownloadLink(
  db: Pool,
  p: Principal,
  path: string,
  ttlS: number,
): Promise<{ url: string; expires_at: string }> {
  if (p.kind === 'share' || p.shareScopes)
    throw new ForbiddenError('a share link cannot make download links');
  const match = DOWNLOADABLE.find((d) => d.re.exec(path));
  const uids = match ? (match.re.exec(path) ?? []).slice(1).filter(Boolean) : [];
  // A ZIP's path with a malformed UID in it: the one UID rule's 400, naming where it is.
  for (const u of uids) requireUid(u, 'UID in "path"');
  if (!match || path.length > 300)
    throw new BadRequestError(
      'path must be a study or series ZIP, a cohort archive, or research files or records',
    );
  const token = randomBytes(32).toString('base64url');
  const stored: StoredPrincipal = {
    id: p.id,
    kind: p.kind,
    globalAdmin: p.globalAdmin,
    projects: [...p.projects].map(([id, roles]) => [id, [...roles]]),
    clientId: p.clientId,
    username: p.username,
  };
  const expires = await insertDownloadLink(db, {
    tokenSha256: sha256(token),
    principal: stored,
    path,
    accept: match.accept,
    ttlS,
  });
  return { url: `${DOWNLOAD_PREFIX}${token}`, expires_at: expires.toISOString() };
}

/** Uses a link: the principal, path and media type it opens, or undefined (unknown, expired or used). */
export async function redeemDownloadLink(
  db: Pool,
  token: string,
): Promise<{ principal: Principal; path: string; accept: string } | undefined> {
  if (!/^[A-Za-z0-9_-]{43}$/.test(token)) return undefined;
  const row = await consumeDownloadLink(db, sha256(token));
  if (!row) return undefined;
  const s = row.principal as StoredPrincipal;
  return {
    principal: {
      id: s.id,
      kind: s.kind,
      globalAdmin: s.globalAdmin,
      projects: new Map(s.projects.map(([id, roles]) => [id, new Set(roles)])),
      clientId: s.clientId,
      username: s.username,
    },
    path: row.path,
    accept: row.accept,
  };
}
