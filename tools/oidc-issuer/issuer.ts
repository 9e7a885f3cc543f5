import { Command } from 'commander';
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import {
  createLocalJWKSet,
  decodeJwt,
  exportJWK,
  exportSPKI,
  generateKeyPair,
  type JWK,
  type JWTPayload,
  jwtVerify,
  SignJWT,
} from 'jose';

/**
 * A Keycloak-compatible OIDC issuer for local runs and tests, driven by the same realm file Keycloak imports
 * (keycloak/realm-export.json): its users, passwords, groups, realm roles, clients, secrets and protocol mappers.
 *
 * Keycloak's paths and answers, so that a script written against Keycloak works unchanged:
 *   GET  /realms/{realm}/.well-known/openid-configuration   discovery
 *   GET  /realms/{realm}/protocol/openid-connect/certs      JWKS (current key, plus retired ones kept after rotation)
 *   POST /realms/{realm}/protocol/openid-connect/token      grants: password, client_credentials, refresh_token
 *   GET  /realms/{realm}/protocol/openid-connect/userinfo
 *   GET  /realms/{realm}                                    realm summary (public key), as Keycloak answers
 * Access tokens are RS256 JWTs with Keycloak's claim shapes: iss, sub (user id from the realm file), aud (the
 * audience mappers' clients, plus `account`), azp, exp, iat, jti, typ "Bearer", sid, acr, realm_access.roles,
 * resource_access, scope, email_verified, preferred_username, name, email, and `groups` (group mapper, full paths).
 * Refresh tokens are HS512 with a private secret, as in Keycloak; the gateway must refuse them.
 *
 *   GET  /realms/{realm}/protocol/openid-connect/auth        browser login page, authorization code + PKCE (S256)
 *   POST /realms/{realm}/protocol/openid-connect/auth        the login form's answer: code to the redirect URI
 *   GET  /realms/{realm}/protocol/openid-connect/logout      ends the browser session and its refresh tokens
 * The browser flow keeps an SSO session in a cookie, as Keycloak does, so that `prompt=none` answers without a form
 * while the session lives and `login_required` once it has ended.
 * Keys live in memory and are generated at start; `rotateKeys()` (or POST /realms/{realm}/aperture-dev/rotate-keys
 * when started with --dev-hooks) adds a new signing key and keeps the old one published, as Keycloak does.
 */

interface RealmUser {
  id?: string;
  username: string;
  enabled?: boolean;
  email?: string;
  emailVerified?: boolean;
  firstName?: string;
  lastName?: string;
  credentials?: Array<{ type: string; value?: string }>;
  realmRoles?: string[];
  groups?: string[];
  serviceAccountClientId?: string;
}

interface ProtocolMapper {
  name: string;
  protocolMapper: string;
  config?: Record<string, string>;
}

interface RealmClient {
  clientId: string;
  enabled?: boolean;
  publicClient?: boolean;
  bearerOnly?: boolean;
  secret?: string;
  directAccessGrantsEnabled?: boolean;
  serviceAccountsEnabled?: boolean;
  webOrigins?: string[];
  redirectUris?: string[];
  standardFlowEnabled?: boolean;
  attributes?: Record<string, string>;
  protocolMappers?: ProtocolMapper[];
}

/** The parts of a Keycloak realm export the issuer uses. */
export interface RealmExport {
  realm: string;
  accessTokenLifespan?: number;
  ssoSessionIdleTimeout?: number;
  roles?: { realm?: Array<{ name: string; composite?: boolean; composites?: { realm?: string[] } }> };
  clients?: RealmClient[];
  users?: RealmUser[];
}

/** Default location of the realm file: the single source for Keycloak and this issuer. */
export const DEFAULT_REALM_FILE = join(__dirname, '../../keycloak/realm-export.json');

/** Reads a realm export. */
export function loadRealm(file = DEFAULT_REALM_FILE): RealmExport {
  return JSON.parse(readFileSync(file, 'utf8')) as RealmExport;
}

/** Options of an issuer. */
export interface IssuerOptions {
  port?: number;
  host?: string;
  realmFile?: string;
  realm?: RealmExport;
  /** Base URL in `iss` (default http://{host}:{port}); fixed so tokens do not depend on the Host header. */
  publicUrl?: string;
  /** Overrides the realm's accessTokenLifespan (seconds). */
  tokenLifetimeS?: number;
  /** Exposes POST /realms/{realm}/aperture-dev/rotate-keys. */
  devHooks?: boolean;
  /** Origins accepted as redirect URIs and CORS origins besides the realm's (tests run gateways on free ports). */
  allowedOrigins?: string[];
}

/** A pending authorization code: single use, short-lived, bound to its client, redirect URI and PKCE challenge. */
interface PendingCode {
  clientId: string;
  redirectUri: string;
  username: string;
  scope: string;
  sid: string;
  nonce?: string;
  codeChallenge?: string;
  expiresAt: number;
}

/** Authorization codes live this long (Keycloak: 60 s). */
const CODE_LIFETIME_MS = 60_000;
const SESSION_COOKIE = 'APERTURE_ISSUER_SESSION';

interface SigningKey {
  kid: string;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  publicJwk: JWK;
  publicPem: string;
}

class OAuthError extends Error {
  constructor(
    readonly status: number,
    readonly error: string,
    readonly description: string,
  ) {
    super(description);
  }
}

/** Keycloak's built-in default realm role composite, when the realm file does not spell it out. */
const DEFAULT_ROLE_COMPOSITES = ['offline_access', 'uma_authorization'];
const ACCOUNT_ROLES = ['manage-account', 'manage-account-links', 'view-profile'];

function sameSecret(a: string, b: string): boolean {
  const ha = createHash('sha256').update(a).digest();
  const hb = createHash('sha256').update(b).digest();
  return timingSafeEqual(ha, hb);
}

async function newKey(): Promise<SigningKey> {
  const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
  const kid = randomBytes(16).toString('base64url');
  const publicJwk = { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, publicJwk, publicPem: await exportSPKI(publicKey) };
}

/** A running issuer. */
export class OidcIssuer {
  readonly realm: RealmExport;
  private keys: SigningKey[] = [];
  private readonly refreshSecret = randomBytes(32);
  private readonly codes = new Map<string, PendingCode>();
  /** Browser sessions: cookie value -> session id and user; ended sessions also refuse their refresh tokens. */
  private readonly sessions = new Map<string, { sid: string; username: string }>();
  private readonly endedSessions = new Set<string>();
  private readonly extraOrigins = new Set<string>();
  private server?: Server;
  private baseUrl = '';

  constructor(private opts: IssuerOptions = {}) {
    this.realm = opts.realm ?? loadRealm(opts.realmFile);
    for (const o of opts.allowedOrigins ?? []) this.allowOrigin(o);
  }

  /** Accepts redirect URIs and CORS requests from this origin too (a gateway started after the issuer). */
  allowOrigin(origin: string): void {
    this.extraOrigins.add(new URL(origin).origin);
  }

  /** Generates the first key and listens. */
  async start(): Promise<this> {
    this.keys = [await newKey()];
    this.server = createServer((req, res) => {
      this.handle(req, res).catch((err: unknown) => {
        if (err instanceof OAuthError) {
          this.json(res, err.status, { error: err.error, error_description: err.description });
        } else {
          this.json(res, 500, { error: 'server_error', error_description: (err as Error).message });
        }
      });
    });
    const host = this.opts.host ?? '127.0.0.1';
    this.server.listen(this.opts.port ?? 0, host);
    await new Promise<void>((resolve, reject) => {
      this.server!.once('listening', resolve);
      this.server!.once('error', reject);
    });
    const { port } = this.server.address() as AddressInfo;
    this.baseUrl = (this.opts.publicUrl ?? `http://${host}:${port}`).replace(/\/+$/, '');
    return this;
  }

  /** Stops listening. */
  async close(): Promise<void> {
    const s = this.server;
    if (!s) return;
    this.server = undefined;
    s.closeAllConnections();
    await new Promise<void>((r) => s.close(() => r()));
  }

  /** Base URL, e.g. http://127.0.0.1:8180. */
  get url(): string {
    return this.baseUrl;
  }

  /** The `iss` of this realm's tokens: `{url}/realms/{realm}`, what OIDC_ISSUER must be set to. */
  get issuer(): string {
    return `${this.baseUrl}/realms/${this.realm.realm}`;
  }

  /** The key id tokens are signed with now. */
  get currentKid(): string {
    return this.keys[0].kid;
  }

  /** The current public key as PEM (tests use it to forge HS256 tokens "signed" with it). */
  get currentPublicKeyPem(): string {
    return this.keys[0].publicPem;
  }

  /** Signs with a new key from now on; older keys stay published (Keycloak keeps them passive) unless dropped. */
  /** Changes the lifetime of access tokens minted from now on (tests of token expiry and refresh). */
  setTokenLifetime(seconds: number): void {
    this.opts.tokenLifetimeS = seconds;
  }

  async rotateKeys(opts: { dropOld?: boolean } = {}): Promise<string> {
    const key = await newKey();
    this.keys = opts.dropOld ? [key] : [key, ...this.keys];
    return key.kid;
  }

  /** Signs any payload with the current key (tests shape bad tokens with it). */
  async sign(payload: JWTPayload, header: { kid?: string } = {}): Promise<string> {
    const key = this.keys[0];
    return new SignJWT(payload)
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: header.kid ?? key.kid })
      .sign(key.privateKey);
  }

  /** An access token for a realm user, as the password grant would issue it (no password needed). */
  async userToken(
    username: string,
    opts: { clientId?: string; scope?: string; overrides?: JWTPayload } = {},
  ) {
    const user = this.findUser(username);
    if (!user) throw new Error(`no user '${username}' in the realm file`);
    const client = this.findClient(opts.clientId ?? 'aperture-viewer');
    if (!client) throw new Error(`no client '${opts.clientId}' in the realm file`);
    return this.sign({ ...this.accessClaims(user, client, opts.scope, randomUUID()), ...opts.overrides });
  }

  /** An access token for a client's service account, as the client_credentials grant would issue it. */
  async serviceToken(clientId = 'aperture-scripts', overrides: JWTPayload = {}): Promise<string> {
    const client = this.findClient(clientId);
    if (!client) throw new Error(`no client '${clientId}' in the realm file`);
    return this.sign({
      ...this.accessClaims(this.serviceAccount(client), client, undefined, undefined),
      ...overrides,
    });
  }

  /** The claims Keycloak would put in an access token for this user and client. */
  accessClaims(
    user: RealmUser,
    client: RealmClient,
    requestedScope: string | undefined,
    sid: string | undefined,
  ) {
    const now = Math.floor(Date.now() / 1000);
    const realmRoles = this.realmRolesOf(user);
    const aud = new Set<string>();
    for (const m of client.protocolMappers ?? []) {
      if (m.protocolMapper === 'oidc-audience-mapper' && m.config?.['access.token.claim'] !== 'false') {
        const a = m.config?.['included.client.audience'];
        if (a) aud.add(a);
      }
    }
    // Default roles carry account-client roles, which makes Keycloak add `account` to aud.
    aud.add('account');
    const isService = user.serviceAccountClientId !== undefined;
    const scope = scopeClaim(requestedScope);
    const claims: Record<string, unknown> = {
      exp: now + (this.opts.tokenLifetimeS ?? this.realm.accessTokenLifespan ?? 300),
      iat: now,
      jti: randomUUID(),
      iss: this.issuer,
      aud: aud.size === 1 ? [...aud][0] : [...aud],
      sub: user.id ?? uuidFor(user.username),
      typ: 'Bearer',
      azp: client.clientId,
    };
    if (sid) claims.sid = sid;
    Object.assign(claims, {
      acr: '1',
      'allowed-origins': client.webOrigins ?? [],
      realm_access: { roles: realmRoles },
      resource_access: { account: { roles: ACCOUNT_ROLES } },
      scope,
    });
    if (isService) {
      Object.assign(claims, {
        clientHost: '127.0.0.1',
        email_verified: false,
        preferred_username: user.username,
        clientAddress: '127.0.0.1',
        client_id: client.clientId,
      });
    } else {
      const name = [user.firstName, user.lastName].filter(Boolean).join(' ');
      Object.assign(claims, {
        email_verified: user.emailVerified ?? false,
        ...(name ? { name } : {}),
        preferred_username: user.username,
        ...(user.firstName ? { given_name: user.firstName } : {}),
        ...(user.lastName ? { family_name: user.lastName } : {}),
        ...(user.email ? { email: user.email } : {}),
      });
    }
    const groups = groupsClaim(client, user);
    if (groups) claims[groups.claim] = groups.value;
    return claims;
  }

  private findUser(username: string): RealmUser | undefined {
    const u = username.toLowerCase();
    return this.realm.users?.find((x) => x.username.toLowerCase() === u && !x.serviceAccountClientId);
  }

  private findClient(clientId: string): RealmClient | undefined {
    return this.realm.clients?.find((c) => c.clientId === clientId);
  }

  private serviceAccount(client: RealmClient): RealmUser {
    return (
      this.realm.users?.find((u) => u.serviceAccountClientId === client.clientId) ?? {
        username: `service-account-${client.clientId}`,
        serviceAccountClientId: client.clientId,
        realmRoles: [`default-roles-${this.realm.realm}`],
      }
    );
  }

  private realmRolesOf(user: RealmUser): string[] {
    const defs = new Map((this.realm.roles?.realm ?? []).map((r) => [r.name, r]));
    const out = new Set<string>();
    const visit = (name: string) => {
      if (out.has(name)) return;
      out.add(name);
      const def = defs.get(name);
      if (def?.composites?.realm) def.composites.realm.forEach(visit);
      else if (!def && name === `default-roles-${this.realm.realm}`) DEFAULT_ROLE_COMPOSITES.forEach(visit);
    };
    (user.realmRoles ?? []).forEach(visit);
    return [...out];
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://x');
    const prefix = `/realms/${this.realm.realm}`;
    const path = url.pathname;
    this.cors(req, res);
    if (req.method === 'OPTIONS') {
      res.writeHead(204).end();
      return;
    }
    if (!path.startsWith(prefix)) throw new OAuthError(404, 'not_found', 'Realm does not exist');
    const rest = path.slice(prefix.length);
    if (req.method === 'GET' && rest === '/.well-known/openid-configuration')
      return this.json(res, 200, this.discovery());
    if (req.method === 'GET' && rest === '/protocol/openid-connect/certs') {
      res.setHeader('Cache-Control', 'no-cache');
      return this.json(res, 200, { keys: this.keys.map((k) => k.publicJwk) });
    }
    if (req.method === 'POST' && rest === '/protocol/openid-connect/token') {
      return this.json(res, 200, await this.token(req));
    }
    if (rest === '/protocol/openid-connect/userinfo') return this.json(res, 200, await this.userinfo(req));
    if (req.method === 'GET' && rest === '') {
      return this.json(res, 200, {
        realm: this.realm.realm,
        public_key: this.keys[0].publicPem.replace(/-----[A-Z ]+-----|\s/g, ''),
        'token-service': `${this.issuer}/protocol/openid-connect`,
        'account-service': `${this.issuer}/account`,
        'tokens-not-before': 0,
      });
    }
    if (rest === '/protocol/openid-connect/auth' && req.method === 'GET') {
      return this.authorize(req, res, url.searchParams);
    }
    if (rest === '/protocol/openid-connect/auth' && req.method === 'POST') {
      return this.login(req, res);
    }
    if (rest === '/protocol/openid-connect/logout') return this.logout(req, res, url.searchParams);
    if (this.opts.devHooks && req.method === 'POST' && rest === '/aperture-dev/rotate-keys') {
      return this.json(res, 200, { kid: await this.rotateKeys() });
    }
    throw new OAuthError(404, 'not_found', 'Unable to find matching target resource method');
  }

  /** The authorization request's parameters, checked as Keycloak checks them; throws a page-worthy error. */
  private authRequest(q: URLSearchParams): { client: RealmClient; redirectUri: string } {
    const client = this.findClient(q.get('client_id') ?? '');
    if (!client || client.enabled === false || client.bearerOnly) {
      throw new OAuthError(400, 'invalid_request', 'Client not found.');
    }
    const redirectUri = q.get('redirect_uri') ?? '';
    if (!this.redirectAllowed(client, redirectUri)) {
      throw new OAuthError(400, 'invalid_request', 'Invalid parameter: redirect_uri');
    }
    return { client, redirectUri };
  }

  /** Keycloak's redirect URI rule (exact, or a prefix ending in `*`), plus the extra origins' own paths. */
  private redirectAllowed(client: RealmClient, uri: string): boolean {
    let parsed: URL;
    try {
      parsed = new URL(uri);
    } catch {
      return false;
    }
    if (parsed.hash) return false;
    if (this.extraOrigins.has(parsed.origin)) return true;
    return (client.redirectUris ?? []).some((r) =>
      r.endsWith('*') ? uri.startsWith(r.slice(0, -1)) : uri === r,
    );
  }

  private sessionOf(req: IncomingMessage): { sid: string; username: string } | undefined {
    const cookie = (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim())
      .find((c) => c.startsWith(`${SESSION_COOKIE}=`));
    return cookie ? this.sessions.get(cookie.slice(SESSION_COOKIE.length + 1)) : undefined;
  }

  /** GET /auth: the login page, or a code at once when the browser already has a session. */
  private authorize(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void {
    let checked: { client: RealmClient; redirectUri: string };
    try {
      checked = this.authRequest(q);
    } catch (err) {
      return this.page(res, 400, 'Cannot sign in', `<p>${escapeHtml((err as Error).message)}</p>`);
    }
    const { client, redirectUri } = checked;
    const back = (params: Record<string, string>) => this.redirectBack(res, redirectUri, q, params);
    if (q.get('response_type') !== 'code') return back({ error: 'unsupported_response_type' });
    if (!client.standardFlowEnabled) {
      return back({
        error: 'unauthorized_client',
        error_description: 'Client is not allowed to initiate browser login',
      });
    }
    const method = q.get('code_challenge_method');
    const challenge = q.get('code_challenge') ?? undefined;
    const pkceRequired = client.attributes?.['pkce.code.challenge.method'];
    if (
      (challenge || pkceRequired) &&
      (method !== 'S256' || !challenge || !/^[A-Za-z0-9_-]{43}$/.test(challenge))
    ) {
      return back({
        error: 'invalid_request',
        error_description: 'Missing parameter: code_challenge_method',
      });
    }
    const session = this.sessionOf(req);
    const prompt = q.get('prompt') ?? '';
    if (session && prompt !== 'login') return this.issueCode(res, q, redirectUri, session);
    if (prompt === 'none') return back({ error: 'login_required' });
    return this.loginPage(res, q, '');
  }

  /** POST /auth: the login form; the original request travels in hidden fields and is checked again. */
  private async login(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const form = await this.readForm(req);
    const q = new URLSearchParams(form.get('request') ?? '');
    let redirectUri: string;
    try {
      ({ redirectUri } = this.authRequest(q));
    } catch (err) {
      return this.page(res, 400, 'Cannot sign in', `<p>${escapeHtml((err as Error).message)}</p>`);
    }
    const user = this.findUser(form.get('username') ?? '');
    const stored = user?.credentials?.find((c) => c.type === 'password')?.value;
    if (!user || user.enabled === false || !stored || !sameSecret(form.get('password') ?? '', stored)) {
      return this.loginPage(res, q, 'Invalid username or password.', 401);
    }
    const cookie = randomBytes(24).toString('base64url');
    const session = { sid: randomUUID(), username: user.username };
    this.sessions.set(cookie, session);
    res.setHeader(
      'Set-Cookie',
      `${SESSION_COOKIE}=${cookie}; Path=/realms/${this.realm.realm}; HttpOnly; SameSite=Lax`,
    );
    this.issueCode(res, q, redirectUri, session);
  }

  private issueCode(
    res: ServerResponse,
    q: URLSearchParams,
    redirectUri: string,
    session: { sid: string; username: string },
  ): void {
    const code = randomBytes(32).toString('base64url');
    const now = Date.now();
    for (const [k, v] of this.codes) if (v.expiresAt < now) this.codes.delete(k);
    this.codes.set(code, {
      clientId: q.get('client_id') ?? '',
      redirectUri,
      username: session.username,
      scope: q.get('scope') ?? 'openid',
      sid: session.sid,
      nonce: q.get('nonce') ?? undefined,
      codeChallenge: q.get('code_challenge') ?? undefined,
      expiresAt: now + CODE_LIFETIME_MS,
    });
    this.redirectBack(res, redirectUri, q, { code, session_state: session.sid });
  }

  private redirectBack(
    res: ServerResponse,
    redirectUri: string,
    q: URLSearchParams,
    params: Record<string, string>,
  ): void {
    const target = new URL(redirectUri);
    const state = q.get('state');
    for (const [k, v] of Object.entries({ ...params, ...(state ? { state } : {}), iss: this.issuer })) {
      target.searchParams.set(k, v);
    }
    res.writeHead(302, { Location: target.toString(), 'Cache-Control': 'no-store' }).end();
  }

  /** GET /logout: ends the browser session (its refresh tokens stop working) and returns to the application. */
  private logout(req: IncomingMessage, res: ServerResponse, q: URLSearchParams): void {
    const cookieSession = this.sessionOf(req);
    for (const [k, v] of this.sessions) {
      if (v === cookieSession) {
        this.sessions.delete(k);
        this.endedSessions.add(v.sid);
      }
    }
    res.setHeader(
      'Set-Cookie',
      `${SESSION_COOKIE}=; Path=/realms/${this.realm.realm}; Max-Age=0; HttpOnly; SameSite=Lax`,
    );
    const back = q.get('post_logout_redirect_uri');
    const client = this.findClient(q.get('client_id') ?? this.hintedClient(q.get('id_token_hint')) ?? '');
    if (back && client && this.redirectAllowed(client, back)) {
      res.writeHead(302, { Location: back, 'Cache-Control': 'no-store' }).end();
      return;
    }
    this.page(res, 200, 'Signed out', '<p>You are signed out.</p>');
  }

  /**
   * The client an ID token hint names (Keycloak accepts it in place of client_id). Read without verification: it only
   * picks whose redirect URIs the post-logout redirect is checked against, and a forged hint gains nothing.
   */
  private hintedClient(idToken: string | null): string | undefined {
    if (!idToken) return undefined;
    try {
      const azp = decodeJwt(idToken).azp;
      return typeof azp === 'string' ? azp : undefined;
    } catch {
      return undefined;
    }
  }

  private loginPage(res: ServerResponse, q: URLSearchParams, error: string, status = 200): void {
    const body = `
<form method="post" action="${escapeHtml(`${this.issuer}/protocol/openid-connect/auth`)}">
  ${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
  <input type="hidden" name="request" value="${escapeHtml(q.toString())}">
  <label>Username <input name="username" id="username" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
  <button type="submit" id="kc-login">Sign in</button>
</form>`;
    this.page(res, status, `Sign in to ${this.realm.realm}`, body);
  }

  /** An HTML page without scripts; the policy forbids any, and framing (clickjacking of the password form). No form-action: Chromium applies it to the redirect back to the application too. */
  private page(res: ServerResponse, status: number, title: string, body: string): void {
    const html = `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto}label{display:block;margin:.8rem 0}
input{display:block;width:100%;padding:.4rem}button{padding:.5rem 1.2rem}.error{color:#b00020}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
    res.writeHead(status, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Length': Buffer.byteLength(html),
      'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cache-Control': 'no-store',
    });
    res.end(html);
  }

  private discovery() {
    const oidc = `${this.issuer}/protocol/openid-connect`;
    return {
      issuer: this.issuer,
      authorization_endpoint: `${oidc}/auth`,
      token_endpoint: `${oidc}/token`,
      introspection_endpoint: `${oidc}/token/introspect`,
      userinfo_endpoint: `${oidc}/userinfo`,
      end_session_endpoint: `${oidc}/logout`,
      jwks_uri: `${oidc}/certs`,
      grant_types_supported: ['authorization_code', 'password', 'client_credentials', 'refresh_token'],
      response_types_supported: ['code'],
      subject_types_supported: ['public', 'pairwise'],
      id_token_signing_alg_values_supported: ['RS256'],
      token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post'],
      code_challenge_methods_supported: ['S256'],
      scopes_supported: ['openid', 'profile', 'email', 'roles', 'web-origins', 'offline_access'],
      claims_supported: [
        'aud',
        'sub',
        'iss',
        'auth_time',
        'name',
        'given_name',
        'family_name',
        'preferred_username',
        'email',
        'acr',
      ],
    };
  }

  private async readForm(req: IncomingMessage): Promise<URLSearchParams> {
    const type = req.headers['content-type'] ?? '';
    if (!type.startsWith('application/x-www-form-urlencoded')) {
      throw new OAuthError(400, 'invalid_request', 'Content-Type must be application/x-www-form-urlencoded');
    }
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const c of req) {
      size += (c as Buffer).length;
      if (size > 64 * 1024) throw new OAuthError(413, 'invalid_request', 'request too large');
      chunks.push(c as Buffer);
    }
    return new URLSearchParams(Buffer.concat(chunks).toString('utf8'));
  }

  /** Client authentication as Keycloak does it: Basic header or client_id/client_secret in the form. */
  private authenticateClient(req: IncomingMessage, form: URLSearchParams): RealmClient {
    let clientId = form.get('client_id') ?? undefined;
    let secret = form.get('client_secret') ?? undefined;
    const auth = req.headers.authorization;
    if (auth?.toLowerCase().startsWith('basic ')) {
      const decoded = Buffer.from(auth.slice(6).trim(), 'base64').toString('utf8');
      const i = decoded.indexOf(':');
      if (i > 0) {
        clientId = decodeURIComponent(decoded.slice(0, i));
        secret = decodeURIComponent(decoded.slice(i + 1));
      }
    }
    if (!clientId)
      throw new OAuthError(401, 'invalid_client', 'Invalid client or Invalid client credentials');
    const client = this.findClient(clientId);
    if (!client || client.enabled === false) {
      throw new OAuthError(401, 'invalid_client', 'Invalid client or Invalid client credentials');
    }
    if (client.bearerOnly) throw new OAuthError(400, 'invalid_client', 'Bearer-only not allowed');
    if (!client.publicClient) {
      if (!secret || !client.secret || !sameSecret(secret, client.secret)) {
        throw new OAuthError(401, 'unauthorized_client', 'Invalid client or Invalid client credentials');
      }
    }
    return client;
  }

  private async token(req: IncomingMessage): Promise<Record<string, unknown>> {
    const form = await this.readForm(req);
    const grant = form.get('grant_type');
    if (!grant) throw new OAuthError(400, 'invalid_request', 'Missing form parameter: grant_type');
    const client = this.authenticateClient(req, form);
    const scope = form.get('scope') ?? undefined;
    if (grant === 'password') {
      if (!client.directAccessGrantsEnabled) {
        throw new OAuthError(400, 'unauthorized_client', 'Client not allowed for direct access grants');
      }
      const user = this.findUser(form.get('username') ?? '');
      const password = form.get('password') ?? '';
      const stored = user?.credentials?.find((c) => c.type === 'password')?.value;
      if (!user || user.enabled === false || !stored || !sameSecret(password, stored)) {
        throw new OAuthError(401, 'invalid_grant', 'Invalid user credentials');
      }
      return this.tokenResponse(user, client, scope, randomUUID(), true);
    }
    if (grant === 'client_credentials') {
      if (client.publicClient) {
        throw new OAuthError(
          401,
          'unauthorized_client',
          'Public client not allowed to retrieve service account',
        );
      }
      if (!client.serviceAccountsEnabled) {
        throw new OAuthError(401, 'unauthorized_client', 'Client not enabled to retrieve service account');
      }
      return this.tokenResponse(this.serviceAccount(client), client, scope, undefined, false);
    }
    if (grant === 'refresh_token') {
      const rt = form.get('refresh_token') ?? '';
      let claims: JWTPayload;
      try {
        ({ payload: claims } = await jwtVerify(rt, this.refreshSecret, {
          issuer: this.issuer,
          algorithms: ['HS512'],
        }));
      } catch {
        throw new OAuthError(400, 'invalid_grant', 'Invalid refresh token');
      }
      if (claims.typ !== 'Refresh' || claims.azp !== client.clientId) {
        throw new OAuthError(400, 'invalid_grant', 'Invalid refresh token');
      }
      const user = this.realm.users?.find((u) => (u.id ?? uuidFor(u.username)) === claims.sub);
      if (!user || user.enabled === false)
        throw new OAuthError(400, 'invalid_grant', 'Invalid refresh token');
      if (claims.sid && this.endedSessions.has(String(claims.sid))) {
        throw new OAuthError(400, 'invalid_grant', 'Session not active');
      }
      return this.tokenResponse(user, client, String(claims.scope ?? ''), String(claims.sid), true);
    }
    if (grant === 'authorization_code') {
      const code = this.codes.get(form.get('code') ?? '');
      // Single use whatever the outcome, as RFC 6749 §4.1.2 asks.
      if (code) this.codes.delete(form.get('code') ?? '');
      if (!code || code.expiresAt < Date.now() || code.clientId !== client.clientId) {
        throw new OAuthError(400, 'invalid_grant', 'Code not valid');
      }
      if (form.get('redirect_uri') !== code.redirectUri) {
        throw new OAuthError(400, 'invalid_grant', 'Incorrect redirect_uri');
      }
      if (code.codeChallenge) {
        const verifier = form.get('code_verifier') ?? '';
        const computed = createHash('sha256').update(verifier).digest('base64url');
        if (!/^[A-Za-z0-9._~-]{43,128}$/.test(verifier) || !sameSecret(computed, code.codeChallenge)) {
          throw new OAuthError(400, 'invalid_grant', 'PKCE verification failed: Code mismatch');
        }
      }
      const user = this.findUser(code.username);
      if (!user || user.enabled === false) throw new OAuthError(400, 'invalid_grant', 'Code not valid');
      return this.tokenResponse(user, client, code.scope, code.sid, true, code.nonce);
    }
    throw new OAuthError(400, 'unsupported_grant_type', 'Unsupported grant_type');
  }

  private async tokenResponse(
    user: RealmUser,
    client: RealmClient,
    scope: string | undefined,
    sid: string | undefined,
    withRefresh: boolean,
    nonce?: string,
  ): Promise<Record<string, unknown>> {
    const claims = this.accessClaims(user, client, scope, sid);
    const out: Record<string, unknown> = {
      access_token: await this.sign(claims),
      expires_in: (claims.exp as number) - (claims.iat as number),
      refresh_expires_in: 0,
      token_type: 'Bearer',
    };
    const now = claims.iat as number;
    if (withRefresh) {
      const refreshLifetime = this.realm.ssoSessionIdleTimeout ?? 1800;
      out.refresh_expires_in = refreshLifetime;
      out.refresh_token = await new SignJWT({
        exp: now + refreshLifetime,
        iat: now,
        jti: randomUUID(),
        iss: this.issuer,
        aud: this.issuer,
        sub: claims.sub as string,
        typ: 'Refresh',
        azp: client.clientId,
        sid,
        scope: claims.scope as string,
      })
        .setProtectedHeader({ alg: 'HS512', typ: 'JWT', kid: 'refresh' })
        .sign(this.refreshSecret);
    }
    if (String(claims.scope).split(' ').includes('openid')) {
      out.id_token = await this.sign({
        exp: claims.exp as number,
        iat: now,
        jti: randomUUID(),
        iss: this.issuer,
        aud: client.clientId,
        sub: claims.sub as string,
        typ: 'ID',
        azp: client.clientId,
        ...(sid ? { sid } : {}),
        ...(nonce ? { nonce } : {}),
        preferred_username: claims.preferred_username,
        email_verified: claims.email_verified,
      });
    }
    out['not-before-policy'] = 0;
    if (sid) out.session_state = sid;
    out.scope = claims.scope;
    return out;
  }

  private async userinfo(req: IncomingMessage): Promise<Record<string, unknown>> {
    const m = /^Bearer\s+(\S+)$/i.exec(req.headers.authorization ?? '');
    if (!m) throw new OAuthError(401, 'invalid_token', 'Token not provided');
    const jwks = createLocalJWKSet({ keys: this.keys.map((k) => k.publicJwk) });
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(m[1], jwks, { issuer: this.issuer, algorithms: ['RS256'] }));
    } catch {
      throw new OAuthError(401, 'invalid_token', 'Token verification failed');
    }
    const keep = [
      'sub',
      'email_verified',
      'name',
      'preferred_username',
      'given_name',
      'family_name',
      'email',
      'groups',
    ];
    return Object.fromEntries(Object.entries(claims).filter(([k]) => keep.includes(k)));
  }

  private cors(req: IncomingMessage, res: ServerResponse): void {
    const origin = req.headers.origin;
    if (!origin) return;
    const allowed =
      this.extraOrigins.has(origin) ||
      (this.realm.clients ?? []).some((c) => (c.webOrigins ?? []).includes(origin));
    if (!allowed) return;
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Access-Control-Allow-Credentials', 'true');
    res.setHeader('Access-Control-Allow-Headers', 'Authorization, Content-Type');
    res.setHeader('Vary', 'Origin');
  }

  private json(res: ServerResponse, status: number, body: unknown): void {
    if (res.headersSent) return;
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  }
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** Keycloak's scope claim: the default client scopes, plus `openid` when asked for. */
function scopeClaim(requested: string | undefined): string {
  const asked = new Set((requested ?? '').split(/\s+/).filter(Boolean));
  const out = asked.has('openid') ? ['openid'] : [];
  out.push('profile', 'email');
  if (asked.has('offline_access')) out.push('offline_access');
  return out.join(' ');
}

/** The groups claim as the client's group-membership mapper would build it (full paths or last segments). */
function groupsClaim(client: RealmClient, user: RealmUser): { claim: string; value: string[] } | undefined {
  const mapper = client.protocolMappers?.find((m) => m.protocolMapper === 'oidc-group-membership-mapper');
  if (!mapper || mapper.config?.['access.token.claim'] === 'false') return undefined;
  const fullPath = mapper.config?.['full.path'] !== 'false';
  const value = (user.groups ?? []).map((g) => (fullPath ? g : (g.split('/').pop() ?? g)));
  return { claim: mapper.config?.['claim.name'] ?? 'groups', value };
}

/** A stable UUID for a realm user without an id (Keycloak would generate a random one at import). */
function uuidFor(name: string): string {
  const h = createHash('sha1').update(`aperture-realm-user:${name}`).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-5${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** Starts an issuer (tests: `await startOidcIssuer()` on an ephemeral port). */
export async function startOidcIssuer(opts: IssuerOptions = {}): Promise<OidcIssuer> {
  return new OidcIssuer(opts).start();
}

async function cli(argv: string[]): Promise<void> {
  const program = new Command()
    .name('oidc-issuer')
    .description('Keycloak-compatible OIDC issuer for local runs, from keycloak/realm-export.json')
    .option('--port <port>', 'port to listen on', '8180')
    .option('--host <host>', 'address to bind', '127.0.0.1')
    .option('--realm-file <file>', 'realm export to serve', DEFAULT_REALM_FILE)
    .option('--public-url <url>', 'base URL in the tokens (default http://{host}:{port})')
    .option('--token-lifetime <seconds>', "access token lifetime (default: the realm's accessTokenLifespan)")
    .option('--print-tokens', 'print a ready-to-use access token for each demo user and service account')
    .option('--dev-hooks', 'expose POST /realms/{realm}/aperture-dev/rotate-keys')
    .option(
      '--allow-origin <origins...>',
      'extra origins for redirect URIs and CORS (a web app on another port)',
    )
    .parse(argv);
  const o = program.opts<{
    port: string;
    host: string;
    realmFile: string;
    publicUrl?: string;
    tokenLifetime?: string;
    printTokens?: boolean;
    devHooks?: boolean;
    allowOrigin?: string[];
  }>();
  const issuer = await startOidcIssuer({
    port: Number(o.port),
    host: o.host,
    realmFile: o.realmFile,
    publicUrl: o.publicUrl,
    tokenLifetimeS: o.tokenLifetime ? Number(o.tokenLifetime) : undefined,
    devHooks: o.devHooks,
    allowedOrigins: o.allowOrigin,
  });
  const tokenUrl = `${issuer.issuer}/protocol/openid-connect/token`;
  const lines = [
    `OIDC issuer for realm '${issuer.realm.realm}' listening on ${issuer.url}`,
    '',
    'Gateway settings:',
    `  AUTH_ENABLED=true OIDC_ISSUER=${issuer.issuer}`,
    '',
    'Get a token (same requests as against Keycloak):',
    `  curl -s ${tokenUrl} -d grant_type=password -d client_id=aperture-viewer -d username=alice -d password=alice-demo`,
    `  curl -s ${tokenUrl} -d grant_type=client_credentials -u aperture-scripts:aperture-scripts-demo-secret`,
  ];
  if (o.printTokens) {
    lines.push('', 'Access tokens (valid for the token lifetime):');
    for (const u of issuer.realm.users ?? []) {
      if (u.serviceAccountClientId) continue;
      lines.push(`  ${u.username}: ${await issuer.userToken(u.username)}`);
    }
    for (const c of issuer.realm.clients ?? []) {
      if (c.serviceAccountsEnabled)
        lines.push(`  ${c.clientId} (service account): ${await issuer.serviceToken(c.clientId)}`);
    }
  }
  console.log(lines.join('\n'));
  const stop = () => void issuer.close().then(() => process.exit(0));
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

if (require.main === module) {
  cli(process.argv).catch((err: unknown) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(1);
  });
}
