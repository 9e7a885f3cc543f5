/**
 * Serves the built web application (web/, issue 13) at `/`. Only the files the build produced are served, from a
 * list read at start, so no request path ever reaches the file system. These answers hold no patient data (the
 * application fetches that with the user's token), so they come before authentication.
 */
import type { Context, Next } from 'koa';
import { createReadStream, existsSync, readdirSync, readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import type { Config } from '../config';
import { webAppPolicy } from './security-headers';
import { viewerDist } from './viewer';

const TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.woff2': 'font/woff2',
};

/** The default build output: dist/web of the checkout, from src/http (tsx) and from dist/http (built) alike. */
const DEFAULT_DIST = join(__dirname, '../../dist/web');

/** Whether a request is a browser navigation (an API client asking for `/` keeps the JSON summary). */
function wantsPage(ctx: Context): boolean {
  return ctx.accepts('application/json', 'text/html') === 'text/html' && /text\/html/.test(ctx.get('Accept'));
}

/** The middleware; it passes every other request on untouched. */
export function webApp(config: Config) {
  const dir = config.WEB_DIST_DIR ?? DEFAULT_DIST;
  const indexFile = join(dir, 'index.html');
  const index = existsSync(indexFile) ? readFileSync(indexFile) : undefined;
  const assets = new Map<string, string>();
  if (existsSync(join(dir, 'assets'))) {
    for (const name of readdirSync(join(dir, 'assets'))) {
      if (TYPES[extname(name)]) assets.set(`/assets/${name}`, join(dir, 'assets', name));
    }
  }
  const issuer = config.WEB_OIDC_ISSUER ?? config.OIDC_ISSUER;
  const policy = webAppPolicy(issuer ? new URL(issuer).origin : undefined);
  const webConfig = JSON.stringify({
    authEnabled: config.AUTH_ENABLED,
    issuer: config.AUTH_ENABLED ? issuer : undefined,
    clientId: config.WEB_OIDC_CLIENT_ID,
    viewer: viewerDist(config) !== undefined,
  });

  // Not async: a request it passes on (nearly all) costs no promise of its own.
  return (ctx: Context, next: Next): Promise<void> | undefined => {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return next();
    if (ctx.path === '/web-config.json') {
      ctx.set('Cache-Control', 'no-cache');
      ctx.type = 'application/json';
      ctx.body = webConfig;
      return;
    }
    if (index && (ctx.path === '/' || ctx.path === '/index.html') && wantsPage(ctx)) {
      ctx.set('Content-Security-Policy', policy);
      // Revalidated every time: a new build must replace the page that names the hashed assets.
      ctx.set('Cache-Control', 'no-cache');
      ctx.type = 'text/html; charset=utf-8';
      ctx.body = index;
      return;
    }
    const file = assets.get(ctx.path);
    if (file) {
      ctx.set('Content-Security-Policy', policy);
      // The build puts a content hash in every asset name.
      ctx.set('Cache-Control', 'public, max-age=31536000, immutable');
      ctx.type = TYPES[extname(file)];
      ctx.body = createReadStream(file);
      return;
    }
    return next();
  };
}
