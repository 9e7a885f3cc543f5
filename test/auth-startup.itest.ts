import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { bearer, passwordToken } from './helpers/auth';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';
import { freePort } from '../tools/net';

jest.setTimeout(120_000);

describe('authentication switched on and off', () => {
  beforeAll(async () => resetStack());

  describe('a gateway started before its identity provider', () => {
    let gw: TestGateway;
    let issuer: OidcIssuer | undefined;
    let port: number;

    beforeAll(async () => {
      port = await freePort();
      // Discovery ({issuer}/.well-known/openid-configuration) fails until the issuer listens; the gateway keeps trying.
      gw = await startGateway({
        AUTH_ENABLED: 'true',
        OIDC_ISSUER: `http://127.0.0.1:${port}/realms/aperture`,
      });
    });
    afterAll(async () => {
      await gw?.close();
      await issuer?.close();
    });

    it('answers 503 with Retry-After while the issuer is unreachable, then verifies tokens once it is up', async () => {
      const early = await fetch(`${gw.url}/api/projects`, { headers: bearer('a.b.c') });
      expect(early.status).toBe(503);
      expect(early.headers.get('retry-after')).toBe('5');

      issuer = await startOidcIssuer({ port });
      const token = await passwordToken(issuer, 'erin');
      let status = 0;
      for (let i = 0; i < 40 && status !== 200; i++) {
        status = (await fetch(`${gw.url}/api/projects`, { headers: bearer(token) })).status;
        if (status !== 200) await new Promise((r) => setTimeout(r, 500));
      }
      expect(status).toBe(200);
      // Keys are cached: with the issuer gone, a token never seen before (signed in-process) still verifies.
      await issuer.close();
      const fresh = await issuer.userToken('erin');
      expect((await fetch(`${gw.url}/api/projects`, { headers: bearer(fresh) })).status).toBe(200);
    });
  });

  describe('AUTH_ENABLED=false', () => {
    let gw: TestGateway;
    beforeAll(async () => {
      gw = await startGateway({ AUTH_ENABLED: 'false' });
    });
    afterAll(async () => gw?.close());

    it('treats every caller as a global administrator, and still audits', async () => {
      const res = await fetch(`${gw.url}/api/projects`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ id: 'open-project', name: 'Open' }),
      });
      expect(res.status).toBe(201);
      const audit = await fetch(`${gw.url}/api/audit?action=project.create`);
      expect(audit.status).toBe(200);
      expect(await audit.json()).toEqual([
        expect.objectContaining({
          principal: 'auth-disabled',
          principal_kind: 'anonymous',
          project_id: 'open-project',
          outcome: 201,
          method: 'POST',
          route: expect.stringMatching(/^\/api\/projects\/?$/),
        }),
      ]);
    });
  });
});
