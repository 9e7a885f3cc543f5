/**
 * Response headers that every answer carries (issue 8, defects 8 and 13). The gateway serves data, never pages, so
 * the policy is the strictest one: nothing may load, nothing may frame it, no referrer leaves (share tokens travel in
 * paths), and nothing with patient data is kept by browser or proxy caches.
 */
import type { Context, Next } from 'koa';

export interface SecurityHeaderOptions {
  /** Strict-Transport-Security max-age in seconds for requests that came over TLS; 0 disables it. */
  hstsMaxAgeS: number;
}

/** Paths whose answers hold no patient data and may be cached normally. */
const NOT_PATIENT_DATA = new Set(['/', '/healthz', '/readyz']);

/**
 * Sets the headers before the rest of the chain runs, so that error answers carry them too; handlers may still
 * replace Cache-Control (metadata keeps its ETag and revalidation, see wado-rs.ts).
 */
export function securityHeaders(opts: SecurityHeaderOptions) {
  return async (ctx: Context, next: Next): Promise<void> => {
    const headers: Record<string, string> = {
      'X-Content-Type-Options': 'nosniff',
      'Content-Security-Policy': "default-src 'none'; frame-ancestors 'none'",
      // Old browsers ignore frame-ancestors; this is their equivalent.
      'X-Frame-Options': 'DENY',
      'Referrer-Policy': 'no-referrer',
      'Cross-Origin-Resource-Policy': 'same-site',
    };
    // ctx.secure honours X-Forwarded-Proto only when TRUST_PROXY is on (Koa's app.proxy).
    if (opts.hstsMaxAgeS > 0 && ctx.secure) {
      headers['Strict-Transport-Security'] = `max-age=${opts.hstsMaxAgeS}; includeSubDomains`;
    }
    if (!NOT_PATIENT_DATA.has(ctx.path)) headers['Cache-Control'] = 'private, no-store';
    ctx.set(headers);
    try {
      await next();
    } catch (err) {
      // Koa's own error answer clears every header and sets only err.headers: ours must survive it.
      if (err && typeof err === 'object') {
        const e = err as { headers?: Record<string, string> };
        Object.defineProperty(e, 'headers', { value: { ...headers, ...e.headers }, configurable: true });
      }
      throw err;
    }
  };
}

/**
 * `Content-Disposition: attachment` with a file name made only of UID characters, so that a browser opening a
 * download link saves it instead of rendering it (polyglot preambles, CVE-2019-11687).
 */
export function setDownloadName(ctx: Context, name: string): void {
  const safe = name.replace(/[^0-9A-Za-z._-]/g, '_').slice(0, 200) || 'download';
  ctx.set('Content-Disposition', `attachment; filename="${safe}"`);
}

/**
 * The policy of the web application's pages (issue 13): scripts and styles only from the gateway itself (the build
 * emits no inline code), images from blob: (thumbnails fetched with the user's token), connections to the gateway
 * and the OIDC issuer only, no framing, no plugins, no <base> rewriting, forms only to the issuer's login.
 */
export function webAppPolicy(issuerOrigin: string | undefined): string {
  const issuer = issuerOrigin ? ` ${issuerOrigin}` : '';
  return [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' blob: data:",
    `connect-src 'self'${issuer}`,
    `form-action 'self'${issuer}`,
    "base-uri 'none'",
    "object-src 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}
