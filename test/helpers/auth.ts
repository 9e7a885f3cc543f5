import { decodeJwt, generateKeyPair, type JWTPayload, SignJWT } from 'jose';
import { type OidcIssuer, startOidcIssuer } from '../../tools/oidc-issuer/issuer';
import { startGateway, type TestGateway } from './gateway';

/** An in-process Keycloak-compatible issuer and a gateway that trusts it. */
export interface AuthStack {
  issuer: OidcIssuer;
  gw: TestGateway;
  close(): Promise<void>;
}

/** Starts the issuer (realm file keycloak/realm-export.json) and a gateway with AUTH_ENABLED=true against it. */
export async function startAuthStack(overrides: Record<string, string> = {}): Promise<AuthStack> {
  const issuer = await startOidcIssuer();
  const gw = await startGateway({ AUTH_ENABLED: 'true', OIDC_ISSUER: issuer.issuer, ...overrides });
  return {
    issuer,
    gw,
    async close() {
      await gw.close();
      await issuer.close();
    },
  };
}

/** `Authorization: Bearer …` headers. */
export function bearer(token: string, extra: Record<string, string> = {}): Record<string, string> {
  return { authorization: `Bearer ${token}`, ...extra };
}

/** A token from the issuer's token endpoint with the password grant, exactly as a script would ask Keycloak. */
export async function passwordToken(
  issuer: OidcIssuer,
  username: string,
  password = `${username}-demo`,
  clientId = 'aperture-viewer',
): Promise<string> {
  const res = await fetch(`${issuer.issuer}/protocol/openid-connect/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ grant_type: 'password', client_id: clientId, username, password }),
  });
  if (res.status !== 200) throw new Error(`token endpoint answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

/** A service-account token with the client credentials grant (Basic client authentication). */
export async function clientCredentialsToken(
  issuer: OidcIssuer,
  clientId = 'aperture-scripts',
  secret = 'aperture-scripts-demo-secret',
): Promise<string> {
  const res = await fetch(`${issuer.issuer}/protocol/openid-connect/token`, {
    method: 'POST',
    headers: {
      'content-type': 'application/x-www-form-urlencoded',
      authorization: 'Basic ' + Buffer.from(`${clientId}:${secret}`).toString('base64'),
    },
    body: new URLSearchParams({ grant_type: 'client_credentials' }),
  });
  if (res.status !== 200) throw new Error(`token endpoint answered ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { access_token: string }).access_token;
}

const b64url = (s: string) => Buffer.from(s).toString('base64url');

/** Replaces one character in the middle of a JWS part, so the part still decodes but no longer matches. */
function flipChar(part: string): string {
  const i = Math.floor(part.length / 2);
  return part.slice(0, i) + (part[i] === 'A' ? 'B' : 'A') + part.slice(i + 1);
}

/**
 * Tokens that must never open the gateway, each built from a valid token of `username` with one defect.
 * Keys name the defect (used as test titles).
 */
export async function forgedTokens(issuer: OidcIssuer, username: string): Promise<Record<string, string>> {
  const valid = await issuer.userToken(username);
  const claims = decodeJwt(valid) as JWTPayload & Record<string, unknown>;
  const now = Math.floor(Date.now() / 1000);
  const [h, p, s] = valid.split('.');
  const foreign = await generateKeyPair('RS256');
  const escalated = { ...claims, realm_access: { roles: ['aperture-admin'] } };
  return {
    expired: await issuer.sign({ ...claims, iat: now - 900, exp: now - 600 }),
    'not yet valid': await issuer.sign({ ...claims, nbf: now + 600 }),
    'wrong issuer': await issuer.sign({ ...claims, iss: 'http://127.0.0.1:1/realms/aperture' }),
    'wrong audience': await issuer.sign({ ...claims, aud: 'account', azp: 'some-other-client' }),
    'alg none': `${b64url(JSON.stringify({ alg: 'none', typ: 'JWT' }))}.${p}.`,
    'HS256 signed with the public key': await new SignJWT(claims)
      .setProtectedHeader({ alg: 'HS256', typ: 'JWT', kid: issuer.currentKid })
      .sign(new TextEncoder().encode(issuer.currentPublicKeyPem)),
    'unknown kid': await new SignJWT(claims)
      .setProtectedHeader({ alg: 'RS256', typ: 'JWT', kid: 'not-a-key-of-this-realm' })
      .sign(foreign.privateKey),
    'tampered signature': `${h}.${p}.${flipChar(s)}`,
    'tampered payload (admin role added)': `${h}.${b64url(JSON.stringify(escalated))}.${s}`,
    'ID token instead of an access token': await issuer.sign({
      ...claims,
      typ: 'ID',
      aud: 'aperture-gateway',
    }),
    'no exp': await issuer.sign(Object.fromEntries(Object.entries(claims).filter(([k]) => k !== 'exp'))),
  };
}
