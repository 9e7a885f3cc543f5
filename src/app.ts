import type { Principal } from './auth/access';
import cors from '@koa/cors';
import Router, { type RouterMiddleware } from '@koa/router';
import Koa, { type Context, type Middleware, type Next } from 'koa';
import { randomUUID } from 'node:crypto';
import { auditRouter } from './api/audit';
import { cohortsRouter } from './api/cohorts';
import { deidentifier } from './cohorts/deidentifier';
import { refuseWritesOnStandby } from './http/standby';
import { jobsRouter } from './api/jobs';
import { downloadLinksRouter } from './api/download-links';
import { downloadLinks } from './http/download-links';
import { membershipsRouter } from './api/memberships';
import { pipelinesRouter } from './api/pipelines';
import { nodesRouter } from './api/nodes';
import { projectsRouter } from './api/projects';
import { cohortRecordsRouter, recordsRouter } from './api/records';
import { routingRouter } from './api/routing';
import { sharesRouter } from './api/shares';
import { dicomwebRouter } from './dicomweb/routes';
import { wadoUriRouter } from './dicomweb/wado-uri';
import { AppError, asDependencyError, errorMiddleware, loggablePath, retryAfterS } from './errors';
import { checkReadiness } from './readiness';

import { metricsMiddleware } from './http/metrics';
import { rateLimit } from './http/rate-limit';
import { securityHeaders } from './http/security-headers';
import { boundedTokens } from './http/token-size';
import { isDraining } from './http/drain';
import { viewer } from './http/viewer';
import { webApp } from './http/web-app';
import { runWithLogContext } from './logger';
import type { AuditDetail, Services } from './services';

/** A caller's X-Request-Id is kept when it is a plain token (it goes into every log line); otherwise a new one. */
const REQUEST_ID = /^[A-Za-z0-9._:@-]{1,128}$/;
export function requestIdOf(given: string): string {
  return REQUEST_ID.test(given) ? given : randomUUID();
}

/** Paths answered without authentication. */
const PUBLIC_PATHS = new Set(['/', '/healthz', '/readyz']);

/**
 * Builds the Koa application: error mapping, request log, authentication, audit, then the routers.
 * It never listens itself (main.ts and tests do).
 */
export function createApp(services: Services): Koa {
  const app = new Koa({ proxy: services.config.TRUST_PROXY });
  const { logger } = services;

  // Outermost: the request id is set before anything can log or refuse, so every log line written for this request
  // (the error middleware's included) and every answer carry it.
  app.use(async (ctx: Context, next: Next) => {
    const started = process.hrtime.bigint();
    const id = requestIdOf(ctx.get('x-request-id'));
    ctx.set('X-Request-Id', id);
    try {
      await runWithLogContext({ req: id }, next);
    } finally {
      // Path only: query strings can carry patient names.
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      const path = loggablePath(ctx.path);
      logger.debug({ req: id, method: ctx.method, path, status: ctx.status, ms }, 'request');
    }
  });
  // So that every answer carries them, refusals included.
  app.use(securityHeaders({ hstsMaxAgeS: services.config.HSTS_MAX_AGE_S }));
  app.use(errorMiddleware(logger));
  // While the process drains for shutdown, keep-alive connections are closed after each answer, so that clients
  // and load balancers open their next request elsewhere.
  app.use((ctx: Context, next: Next) => {
    if (isDraining()) ctx.set('Connection', 'close');
    return next();
  });

  // Before authentication: /metrics has its own bearer token (METRICS_TOKEN); every other request is timed.
  app.use(metricsMiddleware(services));

  // Browser viewers served from other origins (OHIF): CORS preflights are answered here, before authentication.
  const corsOrigins = services.config.CORS_ORIGINS.split(',')
    .map((o) => o.trim())
    .filter(Boolean);
  if (corsOrigins.length) {
    app.use(
      cors({
        origin: (ctx) =>
          corsOrigins.includes('*') ? '*' : corsOrigins.includes(ctx.get('Origin')) ? ctx.get('Origin') : '',
        allowMethods: 'GET,HEAD,POST,PUT,DELETE,OPTIONS',
        exposeHeaders:
          'Warning,Content-Type,Content-Length,Content-Location,Content-Range,ETag,Location,X-Request-Id,Retry-After',
        maxAge: 600,
      }),
    );
  }

  app.use(webApp(services.config));
  app.use(viewer(services.config));
  // web: a single-use download link becomes the request it was made for, with the principal that made it.
  app.use(downloadLinks(services));

  // services.authenticate is read per request: tests and the bootstrap may set it after the app is built.
  const authenticate = boundedTokens(
    (ctx) => services.authenticate(ctx),
    services.config.AUTH_MAX_TOKEN_BYTES,
  );
  app.use(async (ctx: Context, next: Next) => {
    if (PUBLIC_PATHS.has(ctx.path)) return next();
    let outcome = 500;
    try {
      // Inside the try: refused attempts (401) are audited too.
      ctx.state.principal =
        (ctx.state.downloadPrincipal as Principal | undefined) ?? (await authenticate(ctx));
      await next();
      outcome = ctx.status;
    } catch (err) {
      outcome = asDependencyError(err)?.status ?? (err as { status?: number }).status ?? 500;
      throw err;
    } finally {
      const detail = ctx.state.audit as AuditDetail | undefined;
      if (services.audit) {
        // Recorded after the answer is decided; streaming bodies report their bytes when they end.
        void services.audit(ctx, outcome, detail);
      }
    }
  });

  // After authentication: limits count per principal (client address for anonymous callers).
  app.use(
    rateLimit(
      {
        ratePerS: services.config.RATE_LIMIT_PER_S,
        burst: services.config.RATE_LIMIT_BURST,
        concurrency: services.config.CONCURRENCY_LIMIT,
      },
      PUBLIC_PATHS,
    ),
  );

  const root = new Router();
  // Liveness only: answers while the event loop runs, whatever the dependencies (a restart would not bring them back).
  root.get('/healthz', (ctx) => {
    ctx.body = { status: 'ok' };
  });
  root.get('/readyz', async (ctx) => {
    if (isDraining()) {
      // Shutting down: out of rotation now, while requests in flight are still being answered.
      ctx.status = 503;
      ctx.set('Retry-After', String(retryAfterS()));
      ctx.body = { status: 'draining', checks: {} };
      return;
    }
    const { ready, checks, site, storageSync } = await checkReadiness(
      services,
      services.config.READINESS_TIMEOUT_MS,
    );
    ctx.status = ready ? 200 : 503;
    if (!ready) ctx.set('Retry-After', String(retryAfterS()));
    ctx.body = {
      status: ready ? 'ready' : 'unavailable',
      checks,
      ...(site ? { site } : {}),
      ...(storageSync ? { storageSync } : {}),
    };
  });
  root.get('/', (ctx) => {
    ctx.body = {
      name: 'Aperture DICOMweb gateway',
      dicomweb: ['/dicom-web', '/projects/{project}/dicom-web', '/share/{token}/dicom-web'],
      api: ['/api/projects', '/api/projects/{project}/shares', '/api/projects/{project}/audit', '/api/audit'],
    };
  });

  // The route table, in families by the path's first segment: a request is matched against its family's routes only
  // (@koa/router tests every route of a router in turn, and the whole table is about 190 of them). Each family's own
  // allowedMethods answers OPTIONS, 405 and 501 from the routes its path matched, as one table's would.
  const dw = dicomwebRouter(services);
  const wadoUri = wadoUriRouter(services);
  const scoped = new Router();
  scoped.use('/projects/:project/dicom-web', dw.routes());
  scoped.use('/projects/:project/wado', wadoUri.routes());
  const union = new Router();
  union.use('/dicom-web', dw.routes());
  union.use('/wado', wadoUri.routes());
  // Share links are read-only whatever the route: no STOW, no deletion through a link.
  const share = new Router();
  share.use('/share/:shareToken/dicom-web', readOnlyRoute, dw.routes());
  const api = new Router();
  for (const r of [
    projectsRouter(services),
    routingRouter(services),
    sharesRouter(services),
    auditRouter(services),
    jobsRouter(services),
    cohortsRouter(services, deidentifier),
    downloadLinksRouter(services),
    membershipsRouter(services),
    pipelinesRouter(services),
    // bridge (issue 14): remote nodes, query/retrieve, watchers.
    nodesRouter(services),
    // Research records beside the images (issue 18).
    recordsRouter(services),
    cohortRecordsRouter(services),
  ])
    api.use(r.routes());
  const table = (r: Router): Middleware => {
    const routes = r.routes() as unknown as Middleware;
    const allowed = r.allowedMethods() as unknown as Middleware;
    return (ctx, next) => routes(ctx, () => allowed(ctx, next));
  };
  const families = {
    root: table(root),
    scoped: table(scoped),
    union: table(union),
    share: table(share),
    api: table(api),
  };
  const familyOf = (path: string) =>
    path.startsWith('/api/')
      ? families.api
      : path.startsWith('/projects/')
        ? families.scoped
        : path.startsWith('/share/')
          ? families.share
          : path.startsWith('/dicom-web') || path.startsWith('/wado')
            ? families.union
            : families.root;

  // Outside the routers: they answer OPTIONS and 405 from the shared route table before any mounted middleware runs.
  app.use(readOnlyRootMethods);
  // sites (issue 16): a standby site serves reads only.
  app.use(refuseWritesOnStandby(services));
  app.use((ctx, next) => familyOf(ctx.path)(ctx, next));
  return app;
}

/** What the read-only roots answer: the route table's GETs (and their HEADs), never STOW. */
const READ_ONLY_ALLOW = 'GET, HEAD';
/** The roots that never store: the union of the caller's projects, and share links. */
const READ_ONLY_ROOT = /^(\/share\/[^/]+)?\/dicom-web(\/|$)/;

/**
 * The read-only roots share the route table of the scoped root, so the router would advertise STOW's POST there
 * (OPTIONS and 405) although it answers 405: RFC 9110 §10.2.1 wants Allow to list what the resource supports.
 */
function readOnlyRootMethods(ctx: Context, next: Next): Promise<void> {
  return READ_ONLY_ROOT.test(ctx.path) ? readOnlyRoot(ctx, next) : next();
}
async function readOnlyRoot(ctx: Context, next: Next): Promise<void> {
  try {
    await next();
  } catch (err) {
    if (err instanceof AppError && err.status === 405) {
      throw new AppError(405, err.code, err.message, { ...err.headers, Allow: READ_ONLY_ALLOW });
    }
    throw err;
  }
  if (!ctx.response.get('Allow')) return;
  ctx.set('Allow', READ_ONLY_ALLOW);
  // The router's own 405 has a plain-text body; this one is the DICOM-conformant error every refusal has.
  if (ctx.status === 405) {
    throw new AppError(405, 'method_not_allowed', 'this DICOMweb root is read-only', {
      Allow: READ_ONLY_ALLOW,
    });
  }
}

/** readOnly as a route's middleware. */
const readOnlyRoute: RouterMiddleware = (ctx, next) => readOnly(ctx, next);

/** Lets only reads through (OPTIONS too, for CORS preflight); anything else is 405. */
async function readOnly(ctx: Context, next: Next): Promise<void> {
  if (ctx.method === 'GET' || ctx.method === 'HEAD' || ctx.method === 'OPTIONS') return next();
  throw new AppError(405, 'method_not_allowed', 'share links are read-only', { Allow: 'GET, HEAD' });
}
