import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload } from 'jose';
import { AppError, UnauthorizedError } from '../errors';
import type { Logger } from '../logger';

/**
 * Verification of Keycloak (or any OIDC) access tokens, locally, against the realm's JWKS.
 *
 * - Keys: `createRemoteJWKSet`, fetched once at start (after discovery) and then only when a token names a `kid`
 *   the cached set does not hold (key rotation) or on a slow background timer (to drop retired keys). jose
 *   refuses to refetch within `cooldownDuration` of the last fetch, so a flood of tokens with invented `kid`s
 *   costs the issuer at most one request per cooldown; the price is that a key rotated in within that window is
 *   only trusted once it has passed (OIDC_JWKS_COOLDOWN_MS). `cacheMaxAge` is infinite on purpose: jose would
 *   otherwise refetch inline on the first request after expiry and fail every request while Keycloak is down,
 *   although the keys it already holds are still good. No request ever waits on Keycloak for a known key.
 * - Claims: issuer, `exp`/`nbf` with a small clock tolerance, allowed asymmetric algorithms only (never `none`
 *   or HS*: an HS256 token "signed" with the public key must not pass), `typ` Bearer when present (Keycloak also
 *   signs ID tokens with the same key; they must not open the API), and the audience rule below.
 * - Audience: Keycloak puts the requesting client in `azp` and, unless an audience mapper adds more, only
 *   `account` in `aud`. A token is accepted when `aud` contains one of OIDC_AUDIENCE (the realm file adds
 *   `aperture-gateway` with an audience mapper), or when `azp` is one of OIDC_ALLOWED_CLIENTS (for realms where
 *   an audience mapper cannot be added; empty by default, since any token the realm issues to that client then
 *   opens the gateway).
 */

/** Algorithms a deployment may allow; symmetric ones and `none` are refused at start. */
const ASYMMETRIC_ALGORITHMS = new Set([
  'RS256',
  'RS384',
  'RS512',
  'PS256',
  'PS384',
  'PS512',
  'ES256',
  'ES384',
  'ES512',
  'EdDSA',
]);

/** Settings of the verifier (from config; tests pass their own). */
export interface TokenVerifierOptions {
  issuer: string;
  /** JWKS URL; when unset it is read from the issuer's discovery document. */
  jwksUrl?: string;
  audiences: readonly string[];
  allowedClients: readonly string[];
  algorithms: readonly string[];
  clockToleranceS: number;
  cooldownMs: number;
  refreshMs: number;
  /** How long a request waits for discovery to finish before answering 503. */
  startupWaitMs?: number;
}

/** The claims of a verified access token (Keycloak shape; everything optional beyond what was checked). */
export interface AccessClaims extends JWTPayload {
  sub: string;
  azp?: string;
  typ?: string;
  preferred_username?: string;
  groups?: unknown;
  realm_access?: { roles?: unknown };
  scope?: string;
}

/** Parses OIDC_ALGORITHMS; throws for `none`, HS* or anything unknown. */
export function parseAlgorithms(list: string): string[] {
  const algs = list
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
  if (algs.length === 0) throw new Error('OIDC_ALGORITHMS is empty');
  for (const alg of algs) {
    if (!ASYMMETRIC_ALGORITHMS.has(alg)) {
      throw new Error(
        `OIDC_ALGORITHMS: '${alg}' is not allowed (asymmetric algorithms only: RS*, PS*, ES*, EdDSA)`,
      );
    }
  }
  return algs;
}

/** Splits a comma-separated setting into its non-empty items. */
export function splitList(s: string): string[] {
  return s
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
}

/**
 * The RFC 6750 §3 challenge. Without `error` it is the bare challenge for a request that carried no token
 * (RFC 6750 §3.1: no error code then).
 */
export function bearerChallenge(error?: 'invalid_token' | 'invalid_request', description?: string): string {
  let v = 'Bearer realm="aperture"';
  if (error) v += `, error="${error}"`;
  if (description) v += `, error_description="${description.replace(/["\\]/g, "'")}"`;
  return v;
}

/** A 401 for a token that is present but unusable. */
export function invalidToken(description: string): UnauthorizedError {
  return new UnauthorizedError(
    `invalid token: ${description}`,
    bearerChallenge('invalid_token', description),
  );
}

/** The identity provider could not be reached yet (discovery at start): 503, the client may retry. */
export class AuthUnavailableError extends AppError {
  constructor() {
    super(503, 'auth_unavailable', 'the identity provider is not reachable yet', { 'Retry-After': '5' });
  }
}

type KeySet = ReturnType<typeof createRemoteJWKSet>;

/** Verifies access tokens locally; construct once per process, `start()` it, `close()` at shutdown. */
export class TokenVerifier {
  private keys?: KeySet;
  private ready?: Promise<void>;
  private timer?: NodeJS.Timeout;
  private closed = false;
  private readonly audiences: Set<string>;
  private readonly allowedClients: Set<string>;
  private readonly algorithms: string[];

  constructor(
    private readonly opts: TokenVerifierOptions,
    private readonly logger: Logger,
  ) {
    this.audiences = new Set(opts.audiences);
    this.allowedClients = new Set(opts.allowedClients);
    this.algorithms = opts.algorithms.map((a) => a);
    for (const a of this.algorithms) {
      if (!ASYMMETRIC_ALGORITHMS.has(a)) throw new Error(`algorithm '${a}' is not allowed`);
    }
    if (this.audiences.size === 0 && this.allowedClients.size === 0) {
      throw new Error('token verification needs OIDC_AUDIENCE or OIDC_ALLOWED_CLIENTS');
    }
  }

  /** Starts discovery and the first key fetch in the background, retrying with backoff until the issuer answers. */
  start(): Promise<void> {
    if (!this.ready) {
      this.ready = this.discoverWithRetry();
      this.ready.catch(() => undefined);
    }
    return this.ready;
  }

  /** Verifies a compact JWS access token and returns its claims; throws 401 (invalid_token) or 503. */
  async verify(token: string): Promise<AccessClaims> {
    const keys = this.keys ?? (await this.waitForKeys());
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer: this.opts.issuer,
        algorithms: this.algorithms,
        clockTolerance: this.opts.clockToleranceS,
        requiredClaims: ['exp', 'sub'],
      }));
    } catch (err) {
      throw this.explain(err);
    }
    // jose checks `iat` only with maxTokenAge; a token "issued" in the future (a skewed or compromised signer, or
    // one minted ahead to outlive a revocation) is refused beyond the same tolerance as nbf/exp.
    if (payload.iat !== undefined && payload.iat > Date.now() / 1000 + this.opts.clockToleranceS) {
      throw invalidToken('token issued in the future');
    }
    if (payload.typ !== undefined && String(payload.typ).toLowerCase() !== 'bearer') {
      throw invalidToken(`token type '${String(payload.typ)}' is not an access token`);
    }
    const aud =
      typeof payload.aud === 'string' ? [payload.aud] : Array.isArray(payload.aud) ? payload.aud : [];
    const azp = (payload as { azp?: unknown }).azp;
    const audienceOk = aud.some((a) => this.audiences.has(a));
    const clientOk = typeof azp === 'string' && this.allowedClients.has(azp);
    if (!audienceOk && !clientOk) throw invalidToken('token audience not accepted');
    return payload as AccessClaims;
  }

  /** Stops the background refresh and any pending discovery retry. */
  close(): void {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
  }

  private async waitForKeys(): Promise<KeySet> {
    const ready = this.start();
    const wait = this.opts.startupWaitMs ?? 5000;
    let t: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((r) => {
      t = setTimeout(() => r('timeout'), wait);
    });
    const outcome = await Promise.race([
      ready.then(
        () => 'ok' as const,
        () => 'failed' as const,
      ),
      timeout,
    ]);
    if (t) clearTimeout(t);
    if (outcome !== 'ok' || !this.keys) throw new AuthUnavailableError();
    return this.keys;
  }

  private explain(err: unknown): AppError {
    if (err instanceof errors.JWTExpired) return invalidToken('token expired');
    if (err instanceof errors.JWTClaimValidationFailed) {
      if (err.claim === 'nbf') return invalidToken('token not yet valid');
      if (err.claim === 'iss') return invalidToken('unexpected issuer');
      if (err.claim === 'iat' && err.reason === 'check_failed')
        return invalidToken('token issued in the future');
      return invalidToken(`invalid or missing '${err.claim}' claim`);
    }
    if (err instanceof errors.JOSEAlgNotAllowed) return invalidToken('signing algorithm not allowed');
    if (err instanceof errors.JWSSignatureVerificationFailed)
      return invalidToken('signature verification failed');
    if (err instanceof errors.JWKSNoMatchingKey) return invalidToken('unknown signing key');
    if (err instanceof errors.JWKSMultipleMatchingKeys) return invalidToken('ambiguous signing key');
    if (err instanceof errors.JOSEError) {
      // JWSInvalid, JWTInvalid, JOSENotSupported, JWKSTimeout...: say no more than "malformed" to the client.
      if (err instanceof errors.JWKSTimeout) this.logger.warn('JWKS refresh timed out');
      return invalidToken('malformed token');
    }
    // The issuer could not be reached while looking for a new key: the token cannot be trusted now.
    this.logger.warn({ err: (err as Error).message }, 'JWKS refresh failed');
    return invalidToken('signing key not available');
  }

  private async discoverWithRetry(): Promise<void> {
    let delay = 500;
    for (let attempt = 1; ; attempt++) {
      if (this.closed) throw new Error('token verifier closed');
      try {
        const jwksUrl = this.opts.jwksUrl ?? (await this.discoverJwksUrl());
        const keys = createRemoteJWKSet(new URL(jwksUrl), {
          cooldownDuration: this.opts.cooldownMs,
          cacheMaxAge: Infinity,
        });
        await keys.reload();
        this.keys = keys;
        this.timer = setInterval(() => {
          keys
            .reload()
            .catch((err: Error) => this.logger.warn({ err: err.message }, 'JWKS background refresh failed'));
        }, this.opts.refreshMs);
        this.timer.unref();
        this.logger.info({ jwksUrl, keys: keys.jwks()?.keys.length ?? 0 }, 'token verification ready');
        return;
      } catch (err) {
        this.logger.warn(
          { attempt, err: (err as Error).message, retryInMs: delay },
          'identity provider not reachable yet',
        );
        await new Promise((r) => setTimeout(r, delay).unref());
        delay = Math.min(delay * 2, 30_000);
      }
    }
  }

  /** Reads `jwks_uri` from `{issuer}/.well-known/openid-configuration`, checking it is the issuer we trust. */
  private async discoverJwksUrl(): Promise<string> {
    const url = `${this.opts.issuer.replace(/\/+$/, '')}/.well-known/openid-configuration`;
    const res = await fetch(url, {
      signal: AbortSignal.timeout(5000),
      headers: { accept: 'application/json' },
    });
    if (res.status !== 200) throw new Error(`discovery answered ${res.status}`);
    const doc = (await res.json()) as { issuer?: unknown; jwks_uri?: unknown };
    if (doc.issuer !== this.opts.issuer) {
      // OIDC Discovery §4.3: the document must name the issuer it was fetched for.
      throw new Error(
        `discovery document names issuer '${String(doc.issuer)}', expected '${this.opts.issuer}'`,
      );
    }
    if (typeof doc.jwks_uri !== 'string') throw new Error('discovery document has no jwks_uri');
    return doc.jwks_uri;
  }
}
