import type { Context } from 'koa';
import {
  type Principal,
  type ReadScope,
  readScopes,
  requireRole,
  requireRoleInExisting,
  type Role,
} from '../auth/access';
import type { Config } from '../config';
import { allProjectIds } from '../index-db/projects';
import type { AuditDetail, Services } from '../services';

/** The authenticated caller of this request (set by the authentication middleware). */
export function principalOf(ctx: Context): Principal {
  const p = ctx.state.principal as Principal | undefined;
  if (!p) throw new Error('no principal on request: authentication middleware missing');
  return p;
}

/**
 * The scopes this request may read: those of `:project` for `/projects/{project}/dicom-web`, the union of every
 * readable project for `/dicom-web`. A project the caller cannot read is a 404.
 */
export async function requestReadScopes(ctx: Context, services: Services): Promise<ReadScope[]> {
  const p = principalOf(ctx);
  return readScopes(p, await allProjectIds(services.db), ctx.params?.project);
}

/** Requires a role in the request's `:project`, which must exist (else 404, whatever the caller's groups). */
export async function requireExistingProjectRole(
  ctx: Context,
  services: Services,
  role: Role,
): Promise<string> {
  const projectId = ctx.params?.project as string | undefined;
  if (!projectId) throw new Error('route has no :project parameter');
  requireRoleInExisting(principalOf(ctx), await allProjectIds(services.db), projectId, role);
  return projectId;
}

/** Requires a role in the request's `:project`. */
export function requireProjectRole(ctx: Context, role: Role): string {
  const projectId = ctx.params?.project as string | undefined;
  if (!projectId) throw new Error('route has no :project parameter');
  requireRole(principalOf(ctx), projectId, role);
  return projectId;
}

/**
 * The gateway's base URL as the client sees it: PUBLIC_BASE_URL when set; otherwise from Forwarded /
 * X-Forwarded-Proto/Host/Prefix when TRUST_PROXY is on; otherwise the request's own protocol and host.
 */
export function publicBaseUrl(ctx: Context, config: Pick<Config, 'PUBLIC_BASE_URL' | 'TRUST_PROXY'>): string {
  if (config.PUBLIC_BASE_URL) return config.PUBLIC_BASE_URL.replace(/\/+$/, '');
  let proto = ctx.protocol;
  let host = ctx.get('host');
  let prefix = '';
  if (config.TRUST_PROXY) {
    const fwd = ctx.get('forwarded');
    if (fwd) {
      // Forwarded: for=...;proto=https;host=example.org (RFC 7239); the first element is the client-facing hop.
      const first = fwd.split(',')[0];
      for (const pair of first.split(';')) {
        const [k, v] = pair.split('=').map((s) => s.trim());
        const val = v?.replace(/^"|"$/g, '');
        if (k?.toLowerCase() === 'proto' && val) proto = val;
        if (k?.toLowerCase() === 'host' && val) host = val;
      }
    } else {
      const xp = ctx.get('x-forwarded-proto').split(',')[0].trim();
      const xh = ctx.get('x-forwarded-host').split(',')[0].trim();
      if (xp) proto = xp;
      if (xh) host = xh;
    }
    const xprefix = ctx.get('x-forwarded-prefix').split(',')[0].trim();
    if (xprefix) prefix = '/' + xprefix.replace(/^\/+|\/+$/g, '');
  }
  if (!/^https?$/.test(proto)) proto = 'http';
  if (!/^[A-Za-z0-9.\-:[\]]+$/.test(host)) host = ctx.host;
  return `${proto}://${host}${prefix}`;
}

/**
 * The DICOMweb root this request came through, absolute: `.../projects/{p}/dicom-web`, `.../dicom-web`
 * or `.../share/{token}/dicom-web`. RetrieveURLs and BulkDataURIs are built on it.
 */
export function dicomwebRoot(ctx: Context, config: Pick<Config, 'PUBLIC_BASE_URL' | 'TRUST_PROXY'>): string {
  const base = publicBaseUrl(ctx, config);
  if (ctx.params?.shareToken) return `${base}/share/${encodeURIComponent(ctx.params.shareToken)}/dicom-web`;
  if (ctx.params?.project) return `${base}/projects/${encodeURIComponent(ctx.params.project)}/dicom-web`;
  return `${base}/dicom-web`;
}

/** Tells the audit middleware what this request touched. */
export function noteAudit(ctx: Context, detail: AuditDetail): void {
  ctx.state.audit = { ...(ctx.state.audit as AuditDetail | undefined), ...detail };
}
