import type { Pool, PoolClient } from 'pg';
import type { Role } from '../auth/access';

/** How a membership names its member: the token subject, or the Keycloak username (preferred_username). */
export type SubjectKind = 'sub' | 'username';

let generation = 0;

/** Bumped on every membership change in this process, so its cached roles are dropped at once. */
export function membershipGeneration(): number {
  return generation;
}

/** One membership kept in Aperture. */
export interface MemberRow {
  project_id: string;
  subject_kind: SubjectKind;
  subject: string;
  role: Role;
  granted_by: string;
  granted_at: Date;
}

/** Grants (or changes) a member's role; returns the row and whether it existed before. */
export async function putMember(
  db: Pool | PoolClient,
  m: { projectId: string; kind: SubjectKind; subject: string; role: Role; grantedBy: string },
): Promise<{ row: MemberRow; created: boolean }> {
  const r = await db.query<MemberRow & { created: boolean }>(
    `INSERT INTO project_members (project_id, subject_kind, subject, role, granted_by)
     VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (project_id, subject_kind, subject)
       DO UPDATE SET role = EXCLUDED.role, granted_by = EXCLUDED.granted_by, granted_at = now()
     RETURNING project_id, subject_kind, subject, role, granted_by, granted_at, (xmax = 0) AS created`,
    [m.projectId, m.kind, m.subject, m.role, m.grantedBy],
  );
  generation++;
  const { created, ...row } = r.rows[0];
  return { row, created };
}

/** Removes a membership; false when there was none. */
export async function deleteMember(
  db: Pool,
  projectId: string,
  kind: SubjectKind,
  subject: string,
): Promise<boolean> {
  const r = await db.query(
    'DELETE FROM project_members WHERE project_id = $1 AND subject_kind = $2 AND subject = $3',
    [projectId, kind, subject],
  );
  generation++;
  return (r.rowCount ?? 0) > 0;
}

/** The memberships of a project. */
export async function listMembers(db: Pool, projectId: string): Promise<MemberRow[]> {
  const r = await db.query<MemberRow>(
    `SELECT project_id, subject_kind, subject, role, granted_by, granted_at FROM project_members
      WHERE project_id = $1 ORDER BY subject_kind, subject`,
    [projectId],
  );
  return r.rows;
}

/** The roles memberships grant to a principal known by its subject and (users) its username. */
export async function rolesOfSubject(
  db: Pool,
  subject: string,
  username: string | undefined,
): Promise<Array<{ project_id: string; role: Role }>> {
  const r = await db.query<{ project_id: string; role: Role }>(
    `SELECT project_id, role FROM project_members
      WHERE (subject_kind = 'sub' AND subject = $1) OR (subject_kind = 'username' AND subject = $2)`,
    [subject, username ?? null],
  );
  return r.rows;
}

/**
 * Records a membership change made outside HTTP (the CLI) in the audit trail, as the API's audit middleware would.
 */
export async function auditMembershipChange(
  db: Pool,
  e: {
    principal: string;
    action: 'member.put' | 'member.delete';
    projectId: string;
    detail: Record<string, unknown>;
  },
): Promise<void> {
  await db.query(
    `INSERT INTO audit_events (principal, principal_kind, action, project_id, outcome, method, route, detail)
     VALUES ($1, 'service', $2, $3, 200, 'CLI', 'cli members', $4)`,
    [e.principal, e.action, e.projectId, JSON.stringify(e.detail)],
  );
}
