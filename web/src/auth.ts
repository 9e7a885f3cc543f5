import { UserManager, WebStorageStateStore, type User } from 'oidc-client-ts';

/** What the gateway tells the application about its login (GET /web-config.json). */
export interface WebConfig {
  authEnabled: boolean;
  issuer?: string;
  clientId: string;
  /** Whether the gateway serves the OHIF viewer under /viewer. */
  viewer?: boolean;
}

let manager: UserManager | undefined;
let current: User | null = null;
const listeners = new Set<(u: User | null) => void>();

/** Calls `fn` whenever the signed-in user (or their token, after a silent refresh) changes. */
export function onUserChange(fn: (u: User | null) => void): () => void {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function publish(u: User | null): void {
  current = u;
  for (const fn of listeners) fn(u);
}

/**
 * Sets up the OIDC client (authorization code + PKCE) and finishes a login when the issuer has just redirected back.
 * Tokens live in sessionStorage: a closed tab forgets them, and they never appear in a URL.
 */
export async function initAuth(cfg: WebConfig): Promise<User | null> {
  if (!cfg.authEnabled || !cfg.issuer) return null;
  manager = new UserManager({
    authority: cfg.issuer,
    client_id: cfg.clientId,
    redirect_uri: `${location.origin}/`,
    post_logout_redirect_uri: `${location.origin}/`,
    response_type: 'code',
    scope: 'openid',
    // Refreshes with the refresh token before the access token expires: no iframe, no second login.
    automaticSilentRenew: true,
    userStore: new WebStorageStateStore({ store: sessionStorage }),
  });
  manager.events.addUserLoaded((u) => publish(u));
  manager.events.addUserUnloaded(() => publish(null));
  manager.events.addSilentRenewError(() => publish(null));
  const params = new URLSearchParams(location.search);
  if (params.has('state') && (params.has('code') || params.has('error'))) {
    try {
      const u = await manager.signinRedirectCallback();
      const back = typeof u.state === 'string' ? u.state : '';
      history.replaceState(null, '', `/${back}`);
      publish(u);
      return u;
    } catch (err) {
      history.replaceState(null, '', '/');
      throw err;
    }
  }
  const u = await manager.getUser();
  publish(u && !u.expired ? u : null);
  return current;
}

/** Sends the browser to the issuer's login page; it comes back to the page it left. */
export async function login(): Promise<void> {
  await manager?.signinRedirect({ state: location.hash });
}

/** Ends the session at the issuer too, so the next login asks for a password again. */
export async function logout(): Promise<void> {
  if (!manager) return;
  const u = current;
  await manager.removeUser();
  await manager.signoutRedirect({ id_token_hint: u?.id_token });
}

/** The current access token, refreshed first when it is about to expire. */
export async function accessToken(): Promise<string | undefined> {
  if (!manager) return undefined;
  if (current && (current.expires_in ?? 0) < 10) {
    try {
      publish(await manager.signinSilent());
    } catch {
      publish(null);
    }
  }
  return current?.access_token;
}

export function currentUser(): User | null {
  return current;
}
