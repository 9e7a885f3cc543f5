import { type Principal, ROLES, type Role } from './access';
import type { AccessClaims } from './tokens';

/**
 * THE mapping from token claims to a Principal. Nothing else in the gateway reads claims.
 *
 * - Project roles come from Keycloak group membership, with full paths, in the `groups` claim (the realm's
 *   "group membership" mapper with "Full group path" on): `/projects/{project}/{role}` grants `role`
 *   (reader | contributor | curator | admin) in project `{project}`. Higher roles include lower ones
 *   (access.ts). Any other group, a malformed project id or an unknown role is ignored, never an error.
 * - Global administrators hold the realm role GLOBAL_ADMIN_ROLE (default `aperture-admin`) in
 *   `realm_access.roles`; they see and manage every project.
 * - Kind: a Keycloak service account (client credentials grant) has `preferred_username`
 *   `service-account-{clientId}`; it becomes kind 'service' with the client id (`azp`) as its identifier.
 *   Everyone else is kind 'user' identified by `sub` (an opaque id, never a name: names stay out of the audit).
 */

const GROUP_PATH = /^\/projects\/([a-z0-9](?:[a-z0-9-]{0,62}[a-z0-9])?)\/([a-z]+)$/;
const SERVICE_ACCOUNT_PREFIX = 'service-account-';
const ROLE_SET: ReadonlySet<string> = new Set(ROLES);

/** Options of the mapping (from config). */
export interface ClaimsMapping {
  globalAdminRole: string;
}

/** Project roles named by a `groups` claim; unknown shapes are ignored. */
export function projectRolesFromGroups(groups: unknown): Map<string, Set<Role>> {
  const projects = new Map<string, Set<Role>>();
  if (!Array.isArray(groups)) return projects;
  for (const g of groups) {
    if (typeof g !== 'string') continue;
    const m = GROUP_PATH.exec(g);
    if (!m || !ROLE_SET.has(m[2])) continue;
    let roles = projects.get(m[1]);
    if (!roles) projects.set(m[1], (roles = new Set()));
    roles.add(m[2] as Role);
  }
  return projects;
}

/** Turns verified access-token claims into the gateway's Principal. */
export function principalFromClaims(claims: AccessClaims, mapping: ClaimsMapping): Principal {
  const realmRoles = claims.realm_access?.roles;
  const globalAdmin = Array.isArray(realmRoles) && realmRoles.includes(mapping.globalAdminRole);
  const azp = typeof claims.azp === 'string' ? claims.azp : undefined;
  const isService =
    azp !== undefined &&
    typeof claims.preferred_username === 'string' &&
    claims.preferred_username.startsWith(SERVICE_ACCOUNT_PREFIX);
  return {
    id: isService ? azp : claims.sub,
    kind: isService ? 'service' : 'user',
    globalAdmin,
    projects: projectRolesFromGroups(claims.groups),
    clientId: azp,
    username:
      !isService && typeof claims.preferred_username === 'string' ? claims.preferred_username : undefined,
  };
}
