import type { Command } from 'commander';
import { userInfo } from 'node:os';
import { ROLES, type Role } from '../../auth/access';
import { loadConfig } from '../../config';
import {
  auditMembershipChange,
  deleteMember,
  listMembers,
  putMember,
  type SubjectKind,
} from '../../index-db/memberships';
import { migrate } from '../../index-db/migrate';
import { closeDb, initDb } from '../../index-db/pool';
import { getProject } from '../../index-db/projects';

/** Who ran the command, for the audit trail: the operating-system account, as `cli:{name}`. */
const cliPrincipal = (): string => `cli:${userInfo().username}`;

function kindOf(opts: { username?: boolean }): SubjectKind {
  return opts.username ? 'username' : 'sub';
}

async function withDb<T>(fn: (db: ReturnType<typeof initDb>) => Promise<T>): Promise<T> {
  const db = initDb(loadConfig());
  try {
    await migrate(db);
    return await fn(db);
  } finally {
    await closeDb();
  }
}

async function requireProject(db: ReturnType<typeof initDb>, project: string): Promise<void> {
  if (!(await getProject(db, project))) throw new Error(`project '${project}' does not exist`);
}

/** `members list|grant|revoke`: project memberships kept in Aperture (in addition to Keycloak groups), audited. */
export function register(program: Command): void {
  const members = program.command('members').description('project memberships kept in Aperture');

  members
    .command('list <project>')
    .description('list the memberships of a project')
    .option('--json', 'print JSON')
    .action(async (project: string, opts: { json?: boolean }) =>
      withDb(async (db) => {
        await requireProject(db, project);
        const rows = await listMembers(db, project);
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else console.table(rows.map(({ subject_kind, subject, role }) => ({ subject_kind, subject, role })));
      }),
    );

  members
    .command('grant <project> <subject> <role>')
    .description(
      `grant a role (${ROLES.join(', ')}) to a token subject, or with --username a Keycloak username`,
    )
    .option('-u, --username', 'the subject is a Keycloak username')
    .action(async (project: string, subject: string, role: string, opts: { username?: boolean }) =>
      withDb(async (db) => {
        if (!(ROLES as readonly string[]).includes(role)) throw new Error(`role: one of ${ROLES.join(', ')}`);
        await requireProject(db, project);
        const kind = kindOf(opts);
        const principal = cliPrincipal();
        await putMember(db, { projectId: project, kind, subject, role: role as Role, grantedBy: principal });
        await auditMembershipChange(db, {
          principal,
          action: 'member.put',
          projectId: project,
          detail: { kind, subject, role },
        });
        console.log(`granted ${role} in ${project} to ${kind} ${subject}`);
      }),
    );

  members
    .command('revoke <project> <subject>')
    .description('remove a membership')
    .option('-u, --username', 'the subject is a Keycloak username')
    .action(async (project: string, subject: string, opts: { username?: boolean }) =>
      withDb(async (db) => {
        const kind = kindOf(opts);
        const removed = await deleteMember(db, project, kind, subject);
        await auditMembershipChange(db, {
          principal: cliPrincipal(),
          action: 'member.delete',
          projectId: project,
          detail: { kind, subject, removed },
        });
        if (!removed) throw new Error(`no membership of ${kind} ${subject} in ${project}`);
        console.log(`revoked ${kind} ${subject} in ${project}`);
      }),
    );
}
