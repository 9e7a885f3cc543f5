import { errors, jwtVerify, SignJWT } from 'jose';
import type { Principal, ReadScope, Role } from './access';

/**
 * Run tokens: the short-lived credential a pipeline run carries (issue 19). The worker that runs a pipeline fetches
 * its inputs and stores its outputs through the gateway's own DICOMweb, like any other client, with a token the
 * gateway's key signs (HS256 over PIPELINE_RUN_TOKEN_SECRET, shared by the gateway and its workers, never by the
 * sandboxed tool). It grants read of exactly the run's input series and STOW into the run's project, nothing else:
 * the authenticator accepts it on the DICOMweb roots only. The prefix tells it from a Keycloak JWT at a glance.
 */
export const RUN_TOKEN_PREFIX = 'aprun_';
const ISSUER = 'aperture-gateway';
const AUDIENCE = 'aperture-run';

/** What a run token grants. */
export interface RunGrant {
  runId: string;
  projectId: string;
  /** The input series, each with its study (so study-level WADO and QIDO within them work). */
  series: ReadonlyArray<{ studyUid: string; seriesUid: string }>;
}

/** DICOMweb paths a run token may open: the project-scoped root and the union root. Nothing under /api. */
const RUN_TOKEN_PATHS = /^\/(projects\/[^/]+\/)?dicom-web(\/|$)/;

/** True when a bearer token has the run-token shape. */
export function looksLikeRunToken(token: string): boolean {
  return token.startsWith(RUN_TOKEN_PREFIX);
}

/** True when a run token may be used on this request path. */
export function runTokenAllowedOn(path: string): boolean {
  return RUN_TOKEN_PATHS.test(path);
}

function key(secret: string): Uint8Array {
  if (Buffer.byteLength(secret) < 32) throw new Error('PIPELINE_RUN_TOKEN_SECRET must be at least 32 bytes');
  return new TextEncoder().encode(secret);
}

/** Signs a run token valid for `ttlS` seconds. */
export async function mintRunToken(secret: string, grant: RunGrant, ttlS: number): Promise<string> {
  const jwt = await new SignJWT({
    prj: grant.projectId,
    ser: grant.series.map((s) => [s.studyUid, s.seriesUid]),
  })
    .setProtectedHeader({ alg: 'HS256', typ: 'aperture-run+jwt' })
    .setIssuer(ISSUER)
    .setAudience(AUDIENCE)
    .setSubject(grant.runId)
    .setIssuedAt()
    .setExpirationTime(`${Math.max(1, Math.floor(ttlS))}s`)
    .sign(key(secret));
  return RUN_TOKEN_PREFIX + jwt;
}

/** Why a run token was refused (a safe message for the 401 challenge). */
export class RunTokenError extends Error {}

/**
 * Verifies a run token and returns its principal: contributor in its project (STOW of results) and readable scopes
 * of exactly its series. Throws RunTokenError for anything else (bad signature, expired, wrong shape).
 */
export async function principalForRunToken(secret: string | undefined, token: string): Promise<Principal> {
  if (!secret) throw new RunTokenError('run tokens are not accepted by this gateway');
  let payload: Record<string, unknown>;
  try {
    ({ payload } = await jwtVerify(token.slice(RUN_TOKEN_PREFIX.length), key(secret), {
      issuer: ISSUER,
      audience: AUDIENCE,
      algorithms: ['HS256'],
      typ: 'aperture-run+jwt',
      requiredClaims: ['exp', 'sub'],
    }));
  } catch (err) {
    throw new RunTokenError(err instanceof errors.JWTExpired ? 'run token expired' : 'invalid run token');
  }
  const prj = payload.prj;
  const ser = payload.ser;
  if (typeof prj !== 'string' || !Array.isArray(ser)) throw new RunTokenError('invalid run token');
  const scopes: ReadScope[] = [];
  for (const s of ser) {
    if (!Array.isArray(s) || typeof s[0] !== 'string' || typeof s[1] !== 'string')
      throw new RunTokenError('invalid run token');
    scopes.push({ projectId: prj, studyUid: s[0], seriesUid: s[1] });
  }
  // shareScopes restrict every read to the input series; the one role lets STOW into the run's project only.
  const roles = new Map<string, ReadonlySet<Role>>([[prj, new Set<Role>(['contributor'])]]);
  return { id: String(payload.sub), kind: 'run', globalAdmin: false, projects: roles, shareScopes: scopes };
}
