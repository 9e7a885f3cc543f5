import { createHash, randomBytes } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader } from 'jose';
import { bearer, passwordToken, startAuthStack, type AuthStack } from './helpers/auth';
import { resetStack } from './helpers/gateway';

/**
 * The local issuer's browser flow (oidc-provider, driven by keycloak/realm-export.json) as an application meets it:
 * authorization code + PKCE, refresh, SSO session, logout, key rotation, and the tokens it issues opening the real
 * gateway with the roles the realm's groups give. The browser tests (web.itest.ts) log in through the same flow with
 * Chromium; this file checks the protocol's refusals, which a person clicking through never sees.
 */

const APP = 'http://127.0.0.1:9/app/';
const CLIENT = 'aperture-viewer';

/** A browser in miniature: a cookie jar and manual redirects, so each step of the flow can be looked at. */
class Agent {
  private readonly jar = new Map<string, string>();

  constructor(private readonly base: string) {}

  async go(url: string, init: RequestInit = {}): Promise<Response> {
    const cookie = [...this.jar].map(([k, v]) => `${k}=${v}`).join('; ');
    const res = await fetch(new URL(url, this.base), {
      ...init,
      redirect: 'manual',
      headers: { ...(init.headers as Record<string, string>), ...(cookie ? { cookie } : {}) },
    });
    for (const c of res.headers.getSetCookie()) {
      const [kv] = c.split(';');
      const i = kv.indexOf('=');
      const value = kv.slice(i + 1);
      if (value === '' || /max-age=0|expires=thu, 01 jan 1970/i.test(c)) this.jar.delete(kv.slice(0, i));
      else this.jar.set(kv.slice(0, i), value);
    }
    return res;
  }

  /** Follows redirects until one leaves the issuer (to the application), or a page is shown. */
  async follow(res: Response): Promise<{ res: Response; location?: URL }> {
    for (let hops = 0; hops < 10; hops++) {
      const to = res.headers.get('location');
      if (!to || res.status < 300 || res.status >= 400) return { res };
      const next = new URL(to, this.base);
      if (next.href.startsWith(APP)) return { res, location: next };
      res = await this.go(next.href);
    }
    throw new Error('too many redirects');
  }
}

function pkce() {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

describe('local issuer: the browser flow is oidc-provider, configured from the realm file', () => {
  let stack: AuthStack;
  let auth: string;
  let token: string;

  const authorize = (agent: Agent, params: Record<string, string>) =>
    agent.go(
      `${auth}?${new URLSearchParams({
        client_id: CLIENT,
        redirect_uri: APP,
        response_type: 'code',
        scope: 'openid',
        state: 'st-1',
        ...params,
      }).toString()}`,
    );

  /** Logs `user` in through the login page; returns the application's redirect (code, state, iss). */
  async function login(agent: Agent, user: string, challenge: string, password = `${user}-demo`) {
    const first = await authorize(agent, { code_challenge: challenge, code_challenge_method: 'S256' });
    expect(first.status).toBe(303);
    const loginUrl = new URL(first.headers.get('location')!, stack.issuer.url).href;
    expect(loginUrl).toMatch(/\/realms\/aperture\/login-actions\/[A-Za-z0-9_-]+$/);
    const page = await agent.go(loginUrl);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('id="kc-login"');
    const posted = await agent.go(loginUrl, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ username: user, password }).toString(),
    });
    return agent.follow(posted);
  }

  const exchange = (agent: Agent, form: Record<string, string>) =>
    agent.go(token, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ client_id: CLIENT, ...form }).toString(),
    });

  beforeAll(async () => {
    await resetStack();
    stack = await startAuthStack({ OIDC_JWKS_COOLDOWN_MS: '0' });
    stack.issuer.allowOrigin(APP);
    auth = `${stack.issuer.issuer}/protocol/openid-connect/auth`;
    token = `${stack.issuer.issuer}/protocol/openid-connect/token`;
    const carol = await passwordToken(stack.issuer, 'carol');
    for (const id of ['demo', 'lung-study']) {
      const res = await fetch(`${stack.gw.url}/api/projects`, {
        method: 'POST',
        headers: bearer(carol, { 'content-type': 'application/json' }),
        body: JSON.stringify({ id, name: id }),
      });
      expect(res.status).toBe(201);
    }
  });
  afterAll(async () => stack?.close());

  it("alice's code + PKCE token carries Keycloak's claims and opens the gateway with her groups' roles", async () => {
    const agent = new Agent(stack.issuer.url);
    const { verifier, challenge } = pkce();
    const { location } = await login(agent, 'alice', challenge);
    expect(location?.searchParams.get('state')).toBe('st-1');
    expect(location?.searchParams.get('iss')).toBe(stack.issuer.issuer);
    const res = await exchange(agent, {
      grant_type: 'authorization_code',
      code: location!.searchParams.get('code')!,
      redirect_uri: APP,
      code_verifier: verifier,
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Record<string, string>;
    expect(Object.keys(body)).toEqual(expect.arrayContaining(['access_token', 'id_token', 'refresh_token']));
    const claims = decodeJwt(body.access_token);
    expect(claims).toMatchObject({
      iss: stack.issuer.issuer,
      aud: 'aperture-gateway',
      typ: 'Bearer',
      azp: CLIENT,
      preferred_username: 'alice',
      groups: ['/projects/demo/reader', '/projects/lung-study/curator'],
      realm_access: { roles: expect.arrayContaining(['default-roles-aperture']) },
      resource_access: { account: { roles: expect.arrayContaining(['view-profile']) } },
    });
    expect(typeof claims.sid).toBe('string');
    expect(decodeProtectedHeader(body.access_token)).toMatchObject({
      alg: 'RS256',
      kid: stack.issuer.currentKid,
    });
    expect(decodeJwt(body.id_token)).toMatchObject({ aud: CLIENT, preferred_username: 'alice' });

    const projects = await fetch(`${stack.gw.url}/api/projects`, { headers: bearer(body.access_token) });
    expect(projects.status).toBe(200);
    const rows = (await projects.json()) as Array<{ id: string; roles: string[] }>;
    expect(rows.map((p) => [p.id, p.roles])).toEqual([
      ['demo', ['reader']],
      ['lung-study', ['curator']],
    ]);
  });

  it('refuses a wrong PKCE verifier, and a code is good for one exchange only', async () => {
    const agent = new Agent(stack.issuer.url);
    const { verifier, challenge } = pkce();
    const { location } = await login(agent, 'erin', challenge);
    const code = location!.searchParams.get('code')!;
    const attempt = (codeVerifier: string) =>
      exchange(agent, {
        grant_type: 'authorization_code',
        code,
        redirect_uri: APP,
        code_verifier: codeVerifier,
      });
    const wrong = await attempt(pkce().verifier);
    expect(wrong.status).toBe(400);
    expect(((await wrong.json()) as { error: string }).error).toBe('invalid_grant');
    expect((await attempt(verifier)).status).toBe(200);
    const again = await attempt(verifier);
    expect(again.status).toBe(400);
    expect(((await again.json()) as { error: string }).error).toBe('invalid_grant');
  });

  it('sends the public client back with invalid_request when it asks without a PKCE challenge', async () => {
    const agent = new Agent(stack.issuer.url);
    const { location } = await agent.follow(await authorize(agent, {}));
    expect(location?.searchParams.get('error')).toBe('invalid_request');
    expect(location?.searchParams.get('error_description')).toMatch(/PKCE/);
    expect(location?.searchParams.has('code')).toBe(false);
  });

  it('shows an error page, and redirects nowhere, for a redirect URI the realm does not list', async () => {
    const agent = new Agent(stack.issuer.url);
    const res = await agent.go(
      `${auth}?${new URLSearchParams({
        client_id: CLIENT,
        redirect_uri: 'http://evil.example/cb',
        response_type: 'code',
        scope: 'openid',
        code_challenge: pkce().challenge,
        code_challenge_method: 'S256',
      }).toString()}`,
    );
    expect(res.status).toBe(400);
    expect(res.headers.get('location')).toBeNull();
    expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    expect(await res.text()).toContain('role="alert"');
  });

  it('refuses a wrong password on the login page and issues no code', async () => {
    const agent = new Agent(stack.issuer.url);
    const { res, location } = await login(agent, 'alice', pkce().challenge, 'not-her-password');
    expect(location).toBeUndefined();
    expect(res.status).toBe(401);
    expect(await res.text()).toContain('Invalid username or password.');
  });

  it('keeps an SSO session (prompt=none), refreshes, and logout ends both the session and its refresh token', async () => {
    const agent = new Agent(stack.issuer.url);
    const first = pkce();
    const { location } = await login(agent, 'bob', first.challenge);
    const tokens = (await (
      await exchange(agent, {
        grant_type: 'authorization_code',
        code: location!.searchParams.get('code')!,
        redirect_uri: APP,
        code_verifier: first.verifier,
      })
    ).json()) as Record<string, string>;

    // The session answers a silent request with a code, no login page.
    const silent = pkce();
    const quiet = await agent.follow(
      await authorize(agent, {
        prompt: 'none',
        code_challenge: silent.challenge,
        code_challenge_method: 'S256',
      }),
    );
    expect(quiet.location?.searchParams.has('code')).toBe(true);

    const refreshed = await exchange(agent, {
      grant_type: 'refresh_token',
      refresh_token: tokens.refresh_token,
    });
    expect(refreshed.status).toBe(200);
    const next = (await refreshed.json()) as Record<string, string>;
    expect(decodeJwt(next.access_token)).toMatchObject({ preferred_username: 'bob', typ: 'Bearer' });
    const ok = await fetch(`${stack.gw.url}/api/projects`, { headers: bearer(next.access_token) });
    expect(ok.status).toBe(200);

    // RP-initiated logout with an ID token hint: oidc-provider's form, then back to the application.
    const logout = await agent.go(
      `${stack.issuer.issuer}/protocol/openid-connect/logout?${new URLSearchParams({
        id_token_hint: next.id_token,
        post_logout_redirect_uri: APP,
      }).toString()}`,
    );
    expect(logout.status).toBe(200);
    const html = await logout.text();
    const action = /<form [^>]*action="([^"]+)"/.exec(html)?.[1];
    const xsrf = /name="xsrf" value="([^"]+)"/.exec(html)?.[1];
    expect(action && xsrf).toBeTruthy();
    const confirmed = await agent.follow(
      await agent.go(action!.replace(/&amp;/g, '&'), {
        method: 'POST',
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ xsrf: xsrf!, logout: 'yes' }).toString(),
      }),
    );
    expect(confirmed.location?.href).toBe(APP);

    const after = pkce();
    const ended = await agent.follow(
      await authorize(agent, {
        prompt: 'none',
        code_challenge: after.challenge,
        code_challenge_method: 'S256',
      }),
    );
    expect(ended.location?.searchParams.get('error')).toBe('login_required');
    const stale = await exchange(agent, { grant_type: 'refresh_token', refresh_token: next.refresh_token });
    expect(stale.status).toBe(400);
    expect(((await stale.json()) as { error: string }).error).toBe('invalid_grant');
  });

  it('signs with the new key after rotation, and the gateway takes the new token', async () => {
    const kid = await stack.issuer.rotateKeys();
    const agent = new Agent(stack.issuer.url);
    const { verifier, challenge } = pkce();
    const { location } = await login(agent, 'dave', challenge);
    const body = (await (
      await exchange(agent, {
        grant_type: 'authorization_code',
        code: location!.searchParams.get('code')!,
        redirect_uri: APP,
        code_verifier: verifier,
      })
    ).json()) as Record<string, string>;
    expect(decodeProtectedHeader(body.access_token).kid).toBe(kid);
    const res = await fetch(`${stack.gw.url}/api/projects`, { headers: bearer(body.access_token) });
    expect(res.status).toBe(200);
    expect(((await res.json()) as Array<{ id: string }>).map((p) => p.id)).toEqual(['lung-study']);
  });
});
