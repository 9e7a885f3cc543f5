import Koa from 'koa';
import type { AddressInfo } from 'node:net';
import { securityHeaders, setDownloadName, webAppPolicy } from './security-headers';

async function serve(app: Koa, path: string, headers: Record<string, string> = {}) {
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    const { port } = server.address() as AddressInfo;
    return await fetch(`http://127.0.0.1:${port}${path}`, { headers });
  } finally {
    server.close();
  }
}

function app(opts = { hstsMaxAgeS: 100 }, proxy = false) {
  const a = new Koa({ proxy });
  a.use(securityHeaders(opts));
  a.use((ctx) => {
    if (ctx.path === '/boom') ctx.throw(400, 'bad');
    if (ctx.path === '/file') setDownloadName(ctx, '1.2.3/"evil".dcm');
    ctx.body = { ok: true };
  });
  return a;
}

describe('security headers', () => {
  it('sends nosniff, a no-framing CSP, no referrer and no-store on patient data', async () => {
    const res = await serve(app(), '/dicom-web/studies');
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('cache-control')).toBe('private, no-store');
    expect(res.headers.get('strict-transport-security')).toBeNull();
  });

  it('keeps them on error answers', async () => {
    const res = await serve(app(), '/boom');
    expect(res.status).toBe(400);
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
    expect(res.headers.get('cache-control')).toBe('private, no-store');
  });

  it('leaves health checks cacheable', async () => {
    const res = await serve(app(), '/healthz');
    expect(res.headers.get('cache-control')).toBeNull();
    expect(res.headers.get('x-content-type-options')).toBe('nosniff');
  });

  it('sends HSTS only when a trusted proxy says the request came over TLS', async () => {
    const proxied = await serve(app({ hstsMaxAgeS: 100 }, true), '/x', { 'x-forwarded-proto': 'https' });
    expect(proxied.headers.get('strict-transport-security')).toBe('max-age=100; includeSubDomains');
    const untrusted = await serve(app({ hstsMaxAgeS: 100 }, false), '/x', { 'x-forwarded-proto': 'https' });
    expect(untrusted.headers.get('strict-transport-security')).toBeNull();
    const off = await serve(app({ hstsMaxAgeS: 0 }, true), '/x', { 'x-forwarded-proto': 'https' });
    expect(off.headers.get('strict-transport-security')).toBeNull();
  });

  it('names downloads as attachments with UID characters only', async () => {
    const res = await serve(app(), '/file');
    expect(res.headers.get('content-disposition')).toBe('attachment; filename="1.2.3__evil_.dcm"');
  });

  it('gives the web application scripts from itself only, connections to the issuer, and no framing', () => {
    const policy = webAppPolicy('http://issuer.example:8180');
    const d = Object.fromEntries(policy.split('; ').map((x) => [x.split(' ')[0], x.split(' ').slice(1)]));
    expect(d['default-src']).toEqual(["'none'"]);
    expect(d['script-src']).toEqual(["'self'"]);
    expect(d['connect-src']).toEqual(["'self'", 'http://issuer.example:8180']);
    expect(d['frame-ancestors']).toEqual(["'none'"]);
    expect(d['base-uri']).toEqual(["'none'"]);
    expect(policy).not.toContain('unsafe');
    expect(webAppPolicy(undefined)).toContain("connect-src 'self';");
  });
});
