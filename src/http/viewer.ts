/**
 * The published OHIF viewer (npm `@ohif/app`, its prebuilt dist/, issue 13) served by the gateway under `/viewer`,
 * same origin as the web application so that it reuses the user's session: its configuration is a function that
 * hands OHIF's userAuthenticationService the access token the web application keeps in sessionStorage (no second
 * login, no token in a URL). The DICOMweb root is the project's, named by `?project=` when the web app opens it.
 *
 * OHIF's build assumes it lives at `/` (index.html and webpack's public path say "/"), so those few strings are
 * rewritten once at start; every file is listed at start, so no request path reaches the file system.
 */
import { createHash } from 'node:crypto';
import type { Context, Next } from 'koa';
import { createReadStream, existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { extname, join, relative, sep } from 'node:path';
import type { Config } from '../config';

/** The OHIF release scripts/viewer.ts fetches into .stack/ (`npx tsx scripts/viewer.ts` once, or npm test). */
const DEFAULT_DIST = join(__dirname, '../../.stack/ohif-3.13.2/package/dist');
const BASE = '/viewer';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff': 'font/woff',
  '.woff2': 'font/woff2',
};

/** The viewer's dist/ folder when it is there, else undefined (the web app then shows no viewer link). */
export function viewerDist(config: Config): string | undefined {
  const dir = config.VIEWER_DIST_DIR ?? DEFAULT_DIST;
  return existsSync(join(dir, 'index.html')) ? dir : undefined;
}

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

/**
 * OHIF's runtime configuration object as JavaScript source, with one DICOMweb data source (the gateway): `basename` and
 * `root` are JavaScript expressions. Shared by the gateway's /viewer and the standalone viewer (scripts/viewer.ts).
 */
export function ohifConfig(basename: string, root: string): string {
  return `{
  routerBasename: ${basename},
  extensions: [],
  modes: [],
  customizationService: {},
  showStudyList: true,
  maxNumberOfWebWorkers: 2,
  showWarningMessageForCrossOrigin: false,
  showCPUFallbackMessage: false,
  showLoadingIndicator: true,
  strictZSpacingForVolumeViewport: true,
  defaultDataSourceName: 'aperture',
  investigationalUseDialog: { option: 'never' },
  dataSources: [
    {
      namespace: '@ohif/extension-default.dataSourcesModule.dicomweb',
      sourceName: 'aperture',
      configuration: {
        friendlyName: 'Aperture gateway',
        name: 'aperture',
        qidoRoot: ${root},
        wadoRoot: ${root},
        wadoUriRoot: ${root},
        qidoSupportsIncludeField: true,
        imageRendering: 'wadors',
        thumbnailRendering: 'thumbnail',
        thumbnailRequestStrategy: 'fetch',
        enableStudyLazyLoad: true,
        supportsFuzzyMatching: true,
        supportsWildcard: true,
        staticWado: false,
        singlepart: 'bulkdata,video',
        bulkDataURI: { enabled: true },
        omitQuotationForMultipartRequest: true,
      },
    },
  ],
}`;
}

/**
 * OHIF's configuration, evaluated in the page: a function (OHIF 3 calls it with its services) so that the
 * Authorization header is read from the web app's oidc-client-ts session at each request, picking up refreshed
 * tokens. The project id (not PHI) is kept in sessionStorage because OHIF's own navigation drops unknown parameters.
 */
export const APP_CONFIG = `(() => {
  const q = new URLSearchParams(location.search);
  const asked = q.get('project');
  if (asked && /^[A-Za-z0-9._-]{1,64}$/.test(asked)) sessionStorage.setItem('aperture.viewer.project', asked);
  const project = sessionStorage.getItem('aperture.viewer.project');
  const root = location.origin + (project ? '/projects/' + encodeURIComponent(project) : '') + '/dicom-web';
  const token = () => {
    for (let i = 0; i < sessionStorage.length; i++) {
      const key = sessionStorage.key(i);
      if (!key || !key.startsWith('oidc.user:')) continue;
      try {
        const user = JSON.parse(sessionStorage.getItem(key) || '{}');
        if (user.access_token) return user.access_token;
      } catch (e) {}
    }
    return undefined;
  };
  // The viewer tab keeps the session alive itself (the web app's oidc-client-ts does not run here): shortly before the
  // access token expires it is exchanged with the refresh token at the issuer's token endpoint, and the stored
  // oidc-client-ts user is updated in place, so OHIF's next request and the web app (back in this tab) both use it.
  const userKey = () => {
    for (let i = 0; i < sessionStorage.length; i++) {
      const key = sessionStorage.key(i);
      if (key && key.startsWith('oidc.user:')) return key;
    }
    return undefined;
  };
  const claims = (jwt) => {
    try {
      return JSON.parse(atob(jwt.split('.')[1].replace(/-/g, '+').replace(/_/g, '/')));
    } catch (e) {
      return {};
    }
  };
  let tokenEndpoint;
  let refreshing = false;
  const refresh = async () => {
    const key = userKey();
    if (!key || refreshing) return;
    let user;
    try {
      user = JSON.parse(sessionStorage.getItem(key) || '{}');
    } catch (e) {
      return;
    }
    if (!user.refresh_token || !user.access_token) return;
    const c = claims(user.access_token);
    const lifetime = c.exp && c.iat ? c.exp - c.iat : 300;
    const margin = Math.min(60, Math.max(2, lifetime * 0.3));
    const left = (user.expires_at || 0) - Date.now() / 1000;
    if (left > margin) return;
    // The key is "oidc.user:{authority}:{client_id}"; the authority is a URL and holds colons itself.
    const rest = key.slice('oidc.user:'.length);
    const authority = rest.slice(0, rest.lastIndexOf(':'));
    const clientId = rest.slice(rest.lastIndexOf(':') + 1);
    refreshing = true;
    try {
      if (!tokenEndpoint) {
        const d = await fetch((authority.endsWith('/') ? authority.slice(0, -1) : authority) + '/.well-known/openid-configuration');
        tokenEndpoint = (await d.json()).token_endpoint;
      }
      const r = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { 'Content-Type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'refresh_token', refresh_token: user.refresh_token, client_id: clientId }),
      });
      if (!r.ok) return;
      const t = await r.json();
      if (!t.access_token) return;
      sessionStorage.setItem(key, JSON.stringify({
        ...user,
        access_token: t.access_token,
        refresh_token: t.refresh_token || user.refresh_token,
        id_token: t.id_token || user.id_token,
        token_type: t.token_type || user.token_type,
        scope: t.scope || user.scope,
        expires_at: Math.floor(Date.now() / 1000) + Number(t.expires_in || 0),
      }));
    } catch (e) {
      // The issuer is unreachable for now: try again at the next tick; requests answer 401 meanwhile.
    } finally {
      refreshing = false;
    }
  };
  setInterval(() => void refresh(), 2000);
  void refresh();
  window.config = async ({ servicesManager }) => {
    // OHIF registers its services right after this function returns, and asks for a header only later, per request.
    const install = () => {
      const auth = servicesManager.services.userAuthenticationService;
      if (!auth) return setTimeout(install, 0);
      auth.setServiceImplementation({
        getAuthorizationHeader: () => {
          const t = token();
          return t ? { Authorization: 'Bearer ' + t } : {};
        },
      });
    };
    setTimeout(install, 0);
    return ${ohifConfig(`'${BASE}'`, 'root')};
  };
})();
`;

/**
 * The viewer page's own policy (the web app's is stricter): OHIF's index.html carries two small inline scripts
 * (allowed by hash only), its codecs are WebAssembly ('wasm-unsafe-eval', not 'unsafe-eval'), it decodes in workers
 * it may start from blob: URLs, and React/cornerstone set inline styles. Connections stay same-origin.
 */
export function viewerPolicy(inlineScriptHashes: string[], issuerOrigin?: string): string {
  const hashes = inlineScriptHashes.map((h) => ` 'sha256-${h}'`).join('');
  // The issuer's origin: the viewer tab refreshes the session's token there (see APP_CONFIG).
  const issuer = issuerOrigin ? ` ${issuerOrigin}` : '';
  return [
    "default-src 'none'",
    `script-src 'self' 'wasm-unsafe-eval'${hashes}`,
    "worker-src 'self' blob:",
    "style-src 'self' 'unsafe-inline'",
    "img-src 'self' blob: data:",
    "font-src 'self' data:",
    `connect-src 'self'${issuer}`,
    "manifest-src 'self'",
    "base-uri 'none'",
    "object-src 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
}

function issuerOriginOf(issuer: string | undefined): string | undefined {
  try {
    return issuer ? new URL(issuer).origin : undefined;
  } catch {
    return undefined;
  }
}

/** The middleware; when the viewer is not installed, `/viewer` falls through to the API's 404. */
export function viewer(config: Config) {
  const dist = viewerDist(config);
  if (!dist) return (_ctx: Context, next: Next) => next();
  const files = new Map<string, string>();
  for (const f of filesUnder(dist)) {
    if (TYPES[extname(f)]) files.set(`${BASE}/${relative(dist, f).split(sep).join('/')}`, f);
  }
  // Rewritten copies: OHIF's build names "/" as its public path; a service worker would cache patient data.
  const rewritten = new Map<string, Buffer>();
  const index = readFileSync(join(dist, 'index.html'), 'utf8')
    .replace(/<script[^>]*src="\/init-service-worker\.js"[^>]*><\/script>/, '')
    .replace(/<link rel="manifest"[^>]*>/, '')
    .replaceAll('window.PUBLIC_URL="/"', `window.PUBLIC_URL="${BASE}/"`)
    .replace(/(href|src)="\/(?!\/)/g, `$1="${BASE}/`);
  const hashes = [...index.matchAll(/<script>([\s\S]*?)<\/script>/g)].map((m) =>
    createHash('sha256').update(m[1]).digest('base64'),
  );
  const policy = viewerPolicy(hashes, issuerOriginOf(config.WEB_OIDC_ISSUER ?? config.OIDC_ISSUER));
  for (const [path, f] of files) {
    if (extname(f) === '.js') {
      const text = readFileSync(f, 'utf8');
      const root = '__webpack_require__.p = "/"';
      if (text.includes(root))
        rewritten.set(path, Buffer.from(text.replaceAll(root, `__webpack_require__.p = "${BASE}/"`)));
    } else if (extname(f) === '.css') {
      const text = readFileSync(f, 'utf8');
      if (text.includes('url(/')) rewritten.set(path, Buffer.from(text.replaceAll('url(/', `url(${BASE}/`)));
    }
  }
  const indexBody = Buffer.from(index);
  const configBody = Buffer.from(APP_CONFIG);

  // Not async: a request it passes on (nearly all) costs no promise of its own.
  return (ctx: Context, next: Next): Promise<void> | undefined => {
    if (ctx.method !== 'GET' && ctx.method !== 'HEAD') return next();
    if (ctx.path !== BASE && !ctx.path.startsWith(`${BASE}/`)) return next();
    ctx.set('Content-Security-Policy', policy);
    if (ctx.path === `${BASE}/app-config.js`) {
      ctx.set('Cache-Control', 'no-cache');
      ctx.type = TYPES['.js'];
      ctx.body = configBody;
      return;
    }
    const file = files.get(ctx.path);
    if (file && ctx.path !== `${BASE}/index.html`) {
      // Revalidated: the release is pinned but may be replaced in place.
      ctx.set('Cache-Control', 'no-cache');
      ctx.type = TYPES[extname(file)];
      ctx.body = rewritten.get(ctx.path) ?? createReadStream(file);
      return;
    }
    // Client-side routes (/viewer/viewer?StudyInstanceUIDs=...) are answered by the app itself.
    if (extname(ctx.path) && ctx.path !== `${BASE}/index.html`) return next();
    ctx.set('Cache-Control', 'no-cache');
    ctx.type = TYPES['.html'];
    ctx.body = indexBody;
  };
}
