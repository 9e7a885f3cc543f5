import type { Pool } from 'pg';
import type { Logger } from '../logger';
import { membershipGeneration, rolesOfSubject } from '../index-db/memberships';
import { type Principal, UNAUTHENTICATED_ADMIN, withGrantedRoles } from './access';
import { type ClaimsMapping, principalFromClaims } from './claims';
import { looksLikeRunToken, principalForRunToken, RunTokenError, runTokenAllowedOn } from './run-tokens';
import { looksLikeShareToken, principalForShareToken } from './share-links';
import { bearerChallenge, invalidToken, type TokenVerifier } from './tokens';
import { UnauthorizedError } from '../errors';
import type { RequestHead } from '../services';

/** `/share/{token}/dicom-web/...`: viewers that cannot send headers carry the share token in the path. */
export const SHARE_PATH = /^\/share\/([^/]+)\/dicom-web(?:\/|$)/;

/** Verified bearer tokens kept this long at most (and never past their `exp`), so that a retired key stops working soon. */
const TOKEN_CACHE_TTL_MS = 60_000;
const TOKEN_CACHE_MAX = 10_000;

/** What authentication needs. */
export interface AuthenticatorDeps {
  enabled: boolean;
  db: Pool;
  logger: Logger;
  verifier?: TokenVerifier;
  mapping: ClaimsMapping;
  /** How long the roles of memberships kept in Aperture are reused per subject (ms); 0 reads them every request. */
  membershipCacheMs?: number;
  /** Key of pipeline run tokens (PIPELINE_RUN_TOKEN_SECRET); without it run tokens are refused. */
  runTokenSecret?: string;
}

/**
 * Memberships read for a subject are reused this briefly, so a viewer's burst of requests costs one query while a
 * grant or revocation made in any gateway process takes effect within the bound.
 */
const MEMBERSHIP_CACHE_MAX = 10_000;

/**
 * Builds `services.authenticate`: request → Principal, or UnauthorizedError with an RFC 6750 challenge.
 * Order: a share token in the path (`/share/{token}/dicom-web`) defines that root, so it wins; otherwise the
 * `Authorization: Bearer` header, holding either a share token (`apsh_` prefix) or a JWT access token.
 * Verified JWTs are cached briefly (keyed by the token itself) so that a viewer's hundred frame requests cost
 * one signature check; share tokens are looked up every time so that revocation takes effect at once.
 */
export function createAuthenticator(deps: AuthenticatorDeps): (request: RequestHead) => Promise<Principal> {
  if (!deps.enabled) return async () => UNAUTHENTICATED_ADMIN;
  const { verifier } = deps;
  if (!verifier) throw new Error('authentication is enabled but no token verifier is configured');
  const cache = new Map<string, { principal: Principal; until: number }>();
  const membershipTtl = deps.membershipCacheMs ?? 2000;
  const grantsCache = new Map<
    string,
    { grants: Promise<Awaited<ReturnType<typeof rolesOfSubject>>>; until: number; generation: number }
  >();

  // The JWT cache holds what the token says; memberships are added on every request so they never outlive their bound.
  const withMemberships = async (p: Principal): Promise<Principal> => {
    if (p.kind !== 'user' && p.kind !== 'service') return p;
    const key = `${p.kind}\u0000${p.id}\u0000${p.username ?? ''}`;
    const now = Date.now();
    let hit = grantsCache.get(key);
    const gen = membershipGeneration();
    if (!hit || hit.until <= now || hit.generation !== gen) {
      if (grantsCache.size >= MEMBERSHIP_CACHE_MAX) grantsCache.clear();
      const grants = rolesOfSubject(deps.db, p.id, p.username);
      hit = { grants, until: now + membershipTtl, generation: gen };
      grantsCache.set(key, hit);
      grants.catch(() => grantsCache.delete(key));
    }
    return withGrantedRoles(p, await hit.grants);
  };

  const fromShareToken = async (token: string): Promise<Principal> => {
    const p = await principalForShareToken(deps.db, token);
    if (!p) throw invalidToken('unknown, expired or revoked share link');
    return p;
  };

  const fromJwt = async (token: string): Promise<Principal> => {
    const now = Date.now();
    const hit = cache.get(token);
    if (hit && hit.until > now) return hit.principal;
    if (hit) cache.delete(token);
    const claims = await verifier.verify(token);
    const principal = principalFromClaims(claims, deps.mapping);
    const until = Math.min(now + TOKEN_CACHE_TTL_MS, (claims.exp ?? 0) * 1000);
    if (cache.size >= TOKEN_CACHE_MAX) {
      // Oldest insertions first (Map order); dropping a slice keeps this O(1) amortised.
      let n = TOKEN_CACHE_MAX / 10;
      for (const k of cache.keys()) {
        cache.delete(k);
        if (--n <= 0) break;
      }
    }
    cache.set(token, { principal, until });
    return principal;
  };

  // Run tokens open the DICOMweb roots only (inputs by WADO-RS, results by STOW-RS), never the API.
  const fromRunToken = async (token: string, path: string): Promise<Principal> => {
    if (!runTokenAllowedOn(path)) throw invalidToken('a run token opens the DICOMweb roots only');
    try {
      return await principalForRunToken(deps.runTokenSecret, token);
    } catch (err) {
      if (err instanceof RunTokenError) throw invalidToken(err.message);
      throw err;
    }
  };

  return async (request: RequestHead): Promise<Principal> => {
    const shareInPath = SHARE_PATH.exec(request.path);
    if (shareInPath) {
      let token: string;
      try {
        token = decodeURIComponent(shareInPath[1]);
      } catch {
        throw invalidToken('malformed share link');
      }
      return fromShareToken(token);
    }
    const header = request.get('authorization');
    if (!header) throw new UnauthorizedError('authentication required', bearerChallenge());
    const m = /^Bearer[ ]+([A-Za-z0-9\-._~+/]+=*)\s*$/i.exec(header);
    if (!m) {
      if (!/^Bearer(\s|$)/i.test(header))
        throw new UnauthorizedError('authentication required', bearerChallenge());
      throw invalidToken('malformed Authorization header');
    }
    const token = m[1];
    if (looksLikeRunToken(token)) return fromRunToken(token, request.path);
    return looksLikeShareToken(token) ? fromShareToken(token) : withMemberships(await fromJwt(token));
  };
}
