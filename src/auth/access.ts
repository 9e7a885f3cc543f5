import { ForbiddenError, NotFoundError } from '../errors';

/** Roles a principal can hold in a project, from least to most powerful. */
export const ROLES = ['reader', 'contributor', 'curator', 'admin'] as const;
export type Role = (typeof ROLES)[number];

/** What each role may do; higher roles include the lower ones (an admin can read). */
const ROLE_RANK: Record<Role, number> = { reader: 0, contributor: 1, curator: 2, admin: 3 };

/**
 * A part of a project a principal may read: the whole project, or (share links) one study or one series of it.
 * Queries pass scopes into SQL so that filtering happens before limit/offset.
 */
export interface ReadScope {
  projectId: string;
  studyUid?: string;
  seriesUid?: string;
}

/** Who is calling, as the gateway understands it after authentication. */
export interface Principal {
  /** Token subject, client id, share link id or pipeline run id: an identifier, never a person's name. */
  id: string;
  /** `run`: a pipeline run's token (src/auth/run-tokens.ts), reading its input series and storing into its project. */
  kind: 'user' | 'service' | 'share' | 'run' | 'anonymous';
  /** Global administrators see and manage every project. */
  globalAdmin: boolean;
  /** Roles per project id. */
  projects: ReadonlyMap<string, ReadonlySet<Role>>;
  /** Share links and run tokens: the only things this principal can read (whatever its roles). */
  shareScopes?: readonly ReadScope[];
  /** The OAuth client the token was issued to (`azp`), for the audit trail. */
  clientId?: string;
  /** Users: the Keycloak username (`preferred_username`), matched by memberships granted by name; never audited. */
  username?: string;
}

/** The principal with roles added (memberships kept in Aperture): the union with what its token grants. */
export function withGrantedRoles(
  p: Principal,
  grants: ReadonlyArray<{ project_id: string; role: Role }>,
): Principal {
  if (grants.length === 0) return p;
  const projects = new Map<string, Set<Role>>();
  for (const [id, roles] of p.projects) projects.set(id, new Set(roles));
  for (const g of grants) {
    let roles = projects.get(g.project_id);
    if (!roles) projects.set(g.project_id, (roles = new Set()));
    roles.add(g.role);
  }
  return { ...p, projects };
}

/** True when the principal holds `role` (or a higher one) in the project. */
export function hasRole(p: Principal, projectId: string, role: Role): boolean {
  if (p.globalAdmin) return true;
  const roles = p.projects.get(projectId);
  if (!roles) return false;
  for (const r of roles) if (ROLE_RANK[r] >= ROLE_RANK[role]) return true;
  return false;
}

/**
 * The scopes a principal may read, optionally restricted to one project.
 * A project the caller cannot read answers 404 (never 403), so that existence does not leak.
 * `allProjects` lists every project id that exists: global administrators read all of them, and a token's group
 * for a project that does not exist (yet, or any more) grants nothing, so such a project answers 404 to everyone.
 */
export function readScopes(p: Principal, allProjects: readonly string[], projectId?: string): ReadScope[] {
  let scopes: ReadScope[];
  const exists = new Set(allProjects);
  if (p.shareScopes) {
    scopes = p.shareScopes.filter((s) => exists.has(s.projectId));
  } else if (p.globalAdmin) {
    scopes = allProjects.map((id) => ({ projectId: id }));
  } else {
    scopes = [...p.projects.keys()]
      .filter((id) => exists.has(id) && hasRole(p, id, 'reader'))
      .map((id) => ({ projectId: id }));
  }
  if (projectId !== undefined) {
    scopes = scopes.filter((s) => s.projectId === projectId);
    if (scopes.length === 0) throw new NotFoundError('project not found');
  }
  return scopes;
}

/**
 * Requires a role in a project. Callers without any read access get 404 (the project "does not exist" for them);
 * readers lacking the higher role get 403, since they already know the project exists.
 */
export function requireRole(p: Principal, projectId: string, role: Role): void {
  if (hasRole(p, projectId, role)) return;
  if (p.shareScopes || !hasRole(p, projectId, 'reader')) throw new NotFoundError('project not found');
  throw new ForbiddenError(`this needs the ${role} role in the project`);
}

/**
 * requireRole for a project that must exist: a project missing from `allProjects` answers 404 whatever roles the
 * token's groups name for it (a group can outlive its project, or precede it), before any 403 could confirm it.
 */
export function requireRoleInExisting(
  p: Principal,
  allProjects: readonly string[],
  projectId: string,
  role: Role,
): void {
  if (!allProjects.includes(projectId)) throw new NotFoundError('project not found');
  requireRole(p, projectId, role);
}

/** Requires global administration rights. */
export function requireGlobalAdmin(p: Principal): void {
  if (!p.globalAdmin) throw new ForbiddenError('this needs the global administrator role');
}

/** The principal used when authentication is switched off (AUTH_ENABLED=false): a global administrator. */
export const UNAUTHENTICATED_ADMIN: Principal = {
  id: 'auth-disabled',
  kind: 'anonymous',
  globalAdmin: true,
  projects: new Map(),
};
