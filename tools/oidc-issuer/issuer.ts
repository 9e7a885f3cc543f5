import { Command } from 'commander';
import { createHash, randomBytes, randomUUID, timingSafeEqual } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type {
  InteractionDetails,
  KoaContextWithOIDC,
  OidcClient,
  OidcToken,
  default as ProviderClass,
} from 'oidc-provider';
import { join } from 'node:path';
import {
  createLocalJWKSet,
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
 * The password grant's refresh tokens are HS512 with a private secret, as in Keycloak; the gateway must refuse them.
 *
 * The browser flow is oidc-provider's (a certified OpenID provider), configured from the same realm file:
 *   GET  /realms/{realm}/protocol/openid-connect/auth        authorization code + PKCE (S256), then the login page
 *   GET|POST /realms/{realm}/login-actions/{uid}             the login page and its answer (realm users' passwords)
 *   POST /realms/{realm}/protocol/openid-connect/token       grant_type authorization_code, and refresh_token for
 *                                                            the (opaque) refresh tokens this flow issued
 *   GET  /realms/{realm}/protocol/openid-connect/logout      RP-initiated logout: ends the SSO session and its tokens
 * It keeps an SSO session in a cookie, as Keycloak does, so that `prompt=none` answers without a form while the
 * session lives and `login_required` once it has ended.
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

// oidc-provider 9 is an ES module: Node 20.19+ loads it through require(esm), jest compiles it (jest.config.js).
// eslint-disable-next-line @typescript-eslint/no-require-imports
const Provider = (require('oidc-provider') as { default: typeof ProviderClass }).default;
type Provider = ProviderClass;

/** Headers of the issuer's own pages. */
const PAGE_HEADERS = {
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
};

/** The resource indicator the browser flow's access tokens are for; their `aud` is the realm's gateway client. */
const GATEWAY_RESOURCE = 'urn:aperture:gateway';

interface SigningKey {
  kid: string;
  privateKey: Awaited<ReturnType<typeof generateKeyPair>>['privateKey'];
  publicJwk: JWK;
  /** The private key as a JWK, for oidc-provider's keystore (the browser flow signs with the same key). */
  privateJwk: JWK;
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
  const privateJwk = { ...(await exportJWK(privateKey)), kid, alg: 'RS256', use: 'sig' };
  return { kid, privateKey, publicJwk, privateJwk, publicPem: await exportSPKI(publicKey) };
}

/** A running issuer. */
export class OidcIssuer {
  readonly realm: RealmExport;
  private keys: SigningKey[] = [];
  private readonly refreshSecret = randomBytes(32);
  /** oidc-provider, rebuilt when keys rotate; sessions and grants live in its (process-wide) memory adapter. */
  private provider?: Provider;
  private readonly cookieKeys = [randomBytes(32).toString('base64url')];
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
    // The browser flow signs with the new key from now on; its sessions and grants stay in the memory adapter.
    this.provider = undefined;
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
      const raw = await this.readBody(req);
      const form = new URLSearchParams(raw);
      if (this.browserGrant(form)) return this.delegate(req, res, rest, url.search, raw);
      return this.json(res, 200, await this.token(req, form));
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
    // The browser flow is oidc-provider's: authorization (and its resume), logout, revocation.
    if (
      rest === '/protocol/openid-connect/auth' ||
      rest.startsWith('/protocol/openid-connect/auth/') ||
      rest === '/protocol/openid-connect/logout' ||
      rest.startsWith('/protocol/openid-connect/logout/') ||
      rest === '/protocol/openid-connect/revoke'
    ) {
      return this.delegate(req, res, rest, url.search);
    }
    const interaction = /^\/login-actions\/([A-Za-z0-9_-]+)$/.exec(rest);
    if (interaction) return this.interaction(req, res, interaction[1]);
    if (this.opts.devHooks && req.method === 'POST' && rest === '/aperture-dev/rotate-keys') {
      return this.json(res, 200, { kid: await this.rotateKeys() });
    }
    throw new OAuthError(404, 'not_found', 'Unable to find matching target resource method');
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

  /** Whether a token request belongs to the browser flow (oidc-provider): a code, or a refresh token it issued. */
  private browserGrant(form: URLSearchParams): boolean {
    const grant = form.get('grant_type');
    if (grant === 'authorization_code') return true;
    if (grant !== 'refresh_token') return false;
    // The password grant's refresh tokens are HS512 JWTs (as Keycloak's); oidc-provider's are opaque.
    return (form.get('refresh_token') ?? '').split('.').length !== 3;
  }

  /** Hands a request to oidc-provider, mounted at /realms/{realm} (the issuer URL), with a body already read. */
  private delegate(
    req: IncomingMessage,
    res: ServerResponse,
    rest: string,
    search: string,
    body?: string,
  ): void {
    const provider = this.browserProvider();
    const r = req as IncomingMessage & { originalUrl?: string; body?: string };
    r.originalUrl = req.url;
    r.url = `${rest}${search}`;
    if (body !== undefined) r.body = body;
    provider.callback()(req, res);
  }

  private browserProvider(): Provider {
    return (this.provider ??= this.buildProvider());
  }

  /**
   * oidc-provider configured as the realm file says: its clients with the standard flow (authorization code + PKCE
   * S256 for public clients), refresh tokens, Keycloak's paths, JWT access tokens for the gateway signed with the
   * issuer's current key, and Keycloak's claims in them (realm_access, resource_access, groups, azp, typ Bearer, sid).
   * Consent is skipped, as for a realm client with consentRequired off; login is the realm users' password form.
   */
  private buildProvider(): Provider {
    const realmClients = (this.realm.clients ?? []).filter(
      (c) => c.enabled !== false && !c.bearerOnly && c.standardFlowEnabled,
    );
    const clients = realmClients.map((c) => {
      const uris = (c.redirectUris ?? []).filter((u) => URL.canParse(u.replace(/\*$/, '')));
      return {
        client_id: c.clientId,
        ...(c.publicClient
          ? { token_endpoint_auth_method: 'none' }
          : { client_secret: c.secret, token_endpoint_auth_method: 'client_secret_basic' }),
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        redirect_uris: uris.length ? uris : [`${this.issuer}/no-redirect`],
      };
    });
    const redirectOk = (clientId: string, uri: string) => {
      const c = realmClientOf(clientId);
      return c !== undefined && this.redirectAllowed(c, uri);
    };
    const realmClientOf = (id: string) => realmClients.find((c) => c.clientId === id);
    const provider = new Provider(this.issuer, {
      clients,
      jwks: { keys: [this.keys[0].privateJwk] },
      cookies: { keys: this.cookieKeys, names: { session: 'KEYCLOAK_SESSION' } },
      routes: {
        authorization: '/protocol/openid-connect/auth',
        token: '/protocol/openid-connect/token',
        end_session: '/protocol/openid-connect/logout',
        revocation: '/protocol/openid-connect/revoke',
        jwks: '/protocol/openid-connect/certs',
        userinfo: '/protocol/openid-connect/userinfo',
      },
      interactions: {
        url: (_ctx: unknown, i: { uid: string }) => `/realms/${this.realm.realm}/login-actions/${i.uid}`,
      },
      pkce: {
        required: (_ctx: unknown, client: OidcClient) => {
          const c = realmClientOf(client.clientId);
          return Boolean(c?.publicClient || c?.attributes?.['pkce.code.challenge.method']);
        },
      },
      // Keycloak puts the profile in every ID token (default client scopes), not only when `profile` is asked for.
      claims: {
        openid: ['sub', 'preferred_username', 'name', 'given_name', 'family_name', 'email', 'email_verified'],
      },
      findAccount: (_ctx: unknown, sub: string) => {
        const user = this.userById(sub);
        if (!user) return undefined;
        return {
          accountId: sub,
          claims: () => {
            const name = [user.firstName, user.lastName].filter(Boolean).join(' ');
            return {
              sub,
              preferred_username: user.username,
              email_verified: user.emailVerified ?? false,
              ...(name ? { name } : {}),
              ...(user.firstName ? { given_name: user.firstName } : {}),
              ...(user.lastName ? { family_name: user.lastName } : {}),
              ...(user.email ? { email: user.email } : {}),
            };
          },
        };
      },
      // consentRequired off: the first authorization of a client grants what it asks for.
      loadExistingGrant: async (ctx: KoaContextWithOIDC) => {
        const { oidc } = ctx;
        const clientId = oidc.client!.clientId;
        const grantId = oidc.result?.consent?.grantId ?? oidc.session?.grantIdFor(clientId);
        if (grantId) {
          const found = await oidc.provider.Grant.find(grantId);
          if (found) return found;
        }
        const grant = new oidc.provider.Grant({ clientId, accountId: oidc.session?.accountId });
        grant.addOIDCScope([...oidc.requestParamScopes].join(' ') || 'openid');
        for (const [resource, rs] of Object.entries(oidc.resourceServers ?? {})) {
          grant.addResourceScope(resource, rs.scope ?? '');
        }
        await grant.save();
        return grant;
      },
      issueRefreshToken: (_ctx: unknown, client: OidcClient) => client.grantTypeAllowed('refresh_token'),
      clientBasedCORS: (_ctx: unknown, origin: string) => this.originAllowed(origin),
      extraTokenClaims: (_ctx: unknown, token: OidcToken) => {
        if (token.kind !== 'AccessToken' || !token.accountId || !token.clientId) return undefined;
        const user = this.userById(token.accountId);
        const client = this.findClient(token.clientId);
        if (!user || !client) return undefined;
        // iss, sub, aud, exp, iat, jti and scope are oidc-provider's; the rest is what Keycloak adds.
        return this.accessClaims(user, client, 'openid', token.sessionUid ?? token.grantId);
      },
      features: {
        devInteractions: { enabled: false },
        userinfo: { enabled: false },
        revocation: { enabled: true },
        resourceIndicators: {
          enabled: true,
          defaultResource: () => GATEWAY_RESOURCE,
          useGrantedResource: () => true,
          getResourceServerInfo: (_ctx: unknown, resource: string) => {
            if (resource !== GATEWAY_RESOURCE) throw new Error('unknown resource');
            return {
              scope: 'openid profile email',
              audience: 'aperture-gateway',
              accessTokenFormat: 'jwt',
              accessTokenTTL: this.accessLifetimeS(),
              jwt: { sign: { alg: 'RS256' } },
            };
          },
        },
        rpInitiatedLogout: {
          enabled: true,
          // Keycloak signs out at once when the application names itself with an ID token hint; the form is
          // oidc-provider's (with its CSRF field), submitted by a script the page's policy allows by nonce.
          logoutSource: (ctx: KoaContextWithOIDC, form: string) => {
            const nonce = randomBytes(16).toString('base64');
            const auto = Boolean(ctx.oidc.params?.id_token_hint);
            ctx.set(
              'Content-Security-Policy',
              `default-src 'none'; style-src 'unsafe-inline'; script-src 'nonce-${nonce}'; frame-ancestors 'none'`,
            );
            ctx.body = this.pageHtml(
              'Sign out',
              `${form}<p>Do you want to sign out?</p>
<button type="submit" form="op.logoutForm" name="logout" value="yes" id="kc-logout">Sign out</button>
${auto ? `<script nonce="${nonce}">var f=document.getElementById('op.logoutForm');var i=document.createElement('input');i.type='hidden';i.name='logout';i.value='yes';f.appendChild(i);f.submit();</script>` : ''}`,
            );
          },
          postLogoutSuccessSource: (ctx: KoaContextWithOIDC) => {
            ctx.body = this.pageHtml('Signed out', '<p>You are signed out.</p>');
          },
        },
      },
      ttl: {
        AccessToken: () => this.accessLifetimeS(),
        IdToken: () => this.accessLifetimeS(),
        AuthorizationCode: 60,
        Interaction: 600,
        RefreshToken: () => this.sessionLifetimeS(),
        Session: () => this.sessionLifetimeS(),
        Grant: () => this.sessionLifetimeS(),
      },
      renderError: (ctx: KoaContextWithOIDC, out: { error: string; error_description?: string }) => {
        for (const [k, v] of Object.entries(PAGE_HEADERS)) ctx.set(k, v);
        ctx.type = 'html';
        ctx.body = this.pageHtml(
          'Cannot sign in',
          `<p role="alert">${escapeHtml(out.error_description ?? out.error)}</p>`,
        );
      },
    });
    // Keycloak's redirect URI rule (exact, or a prefix ending in `*`) and the extra origins of tests and the demo.
    provider.Client.prototype.redirectUriAllowed = function (this: OidcClient, uri: string) {
      return redirectOk(this.clientId, uri);
    };
    provider.Client.prototype.postLogoutRedirectUriAllowed = function (this: OidcClient, uri: string) {
      return redirectOk(this.clientId, uri);
    };
    return provider;
  }

  /** The login page of an interaction (GET) and its answer (POST): the realm users' passwords. */
  private async interaction(req: IncomingMessage, res: ServerResponse, uid: string): Promise<void> {
    const provider = this.browserProvider();
    let details: InteractionDetails;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      return this.page(
        res,
        400,
        'Cannot sign in',
        '<p role="alert">This sign-in has expired. Go back to the application and sign in again.</p>',
      );
    }
    if (details.uid !== uid) {
      return this.page(
        res,
        400,
        'Cannot sign in',
        '<p role="alert">This sign-in has expired. Go back to the application and sign in again.</p>',
      );
    }
    if (details.prompt.name !== 'login') {
      // Consent is granted by loadExistingGrant; any other prompt has nothing to ask a person.
      return provider.interactionFinished(req, res, {}, { mergeWithLastSubmission: true });
    }
    if (req.method === 'GET') return this.loginPage(res, uid, '');
    if (req.method !== 'POST') throw new OAuthError(405, 'invalid_request', 'GET or POST only');
    const form = await this.readForm(req);
    const user = this.findUser(form.get('username') ?? '');
    const stored = user?.credentials?.find((c) => c.type === 'password')?.value;
    if (!user || user.enabled === false || !stored || !sameSecret(form.get('password') ?? '', stored)) {
      return this.loginPage(res, uid, 'Invalid username or password.', 401);
    }
    await provider.interactionFinished(
      req,
      res,
      { login: { accountId: user.id ?? uuidFor(user.username) } },
      { mergeWithLastSubmission: false },
    );
  }

  private userById(sub: string): RealmUser | undefined {
    const user = this.realm.users?.find(
      (u) => !u.serviceAccountClientId && (u.id ?? uuidFor(u.username)) === sub,
    );
    return user && user.enabled !== false ? user : undefined;
  }

  private accessLifetimeS(): number {
    return this.opts.tokenLifetimeS ?? this.realm.accessTokenLifespan ?? 300;
  }

  private sessionLifetimeS(): number {
    return this.realm.ssoSessionIdleTimeout ?? 1800;
  }

  private originAllowed(origin: string): boolean {
    return (
      this.extraOrigins.has(origin) ||
      (this.realm.clients ?? []).some((c) => (c.webOrigins ?? []).includes(origin))
    );
  }
  private loginPage(res: ServerResponse, uid: string, error: string, status = 200): void {
    const body = `
<form method="post" action="${escapeHtml(`${this.issuer}/login-actions/${uid}`)}">
  ${error ? `<p class="error" role="alert">${escapeHtml(error)}</p>` : ''}
  <label>Username <input name="username" id="username" autocomplete="username" required autofocus></label>
  <label>Password <input name="password" id="password" type="password" autocomplete="current-password" required></label>
  <button type="submit" id="kc-login">Sign in</button>
</form>`;
    this.page(res, status, `Sign in to ${this.realm.realm}`, body);
  }

  /** An HTML page without scripts; the policy forbids any, and framing (clickjacking of the password form). No form-action: Chromium applies it to the redirect back to the application too. */
  private page(res: ServerResponse, status: number, title: string, body: string): void {
    const html = this.pageHtml(title, body);
    res.writeHead(status, {
      'Content-Type': 'text/html; charset=utf-8',
      'Content-Length': Buffer.byteLength(html),
      ...PAGE_HEADERS,
    });
    res.end(html);
  }

  private pageHtml(title: string, body: string): string {
    return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<style>body{font-family:system-ui,sans-serif;max-width:22rem;margin:4rem auto}label{display:block;margin:.8rem 0}
input{display:block;width:100%;padding:.4rem}button{padding:.5rem 1.2rem}.error{color:#b00020}</style></head>
<body><h1>${escapeHtml(title)}</h1>${body}</body></html>`;
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
    return new URLSearchParams(await this.readBody(req));
  }

  private async readBody(req: IncomingMessage): Promise<string> {
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
    return Buffer.concat(chunks).toString('utf8');
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

  /** The token endpoint's grants that oidc-provider does not serve: password, client_credentials, and refreshes of
   * the refresh tokens the password grant issued. */
  private async token(req: IncomingMessage, form: URLSearchParams): Promise<Record<string, unknown>> {
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
      return this.tokenResponse(user, client, String(claims.scope ?? ''), String(claims.sid), true);
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
    if (!origin || !this.originAllowed(origin)) return;
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
