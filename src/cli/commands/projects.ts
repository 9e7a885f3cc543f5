import type { Command } from 'commander';
import { loadConfig } from '../../config';
import { migrate } from '../../index-db/migrate';
import { closeDb, initDb } from '../../index-db/pool';
import { createProject, listProjects } from '../../index-db/projects';

/** `projects create|list` and `migrate`: project administration straight against the index database. */
export function register(program: Command): void {
  const projects = program.command('projects').description('create and list projects');

  projects
    .command('create <id> <name>')
    .description('create a project (id: lowercase letters, digits and dashes)')
    .option('-d, --description <text>', 'description', '')
    .action(async (id: string, name: string, opts: { description: string }) => {
      const db = initDb(loadConfig());
      try {
        await migrate(db);
        if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(id) || id.length > 64) {
          throw new Error(
            'project id: lowercase letters, digits and dashes, not starting or ending with a dash',
          );
        }
        const row = await createProject(db, { id, name, description: opts.description });
        console.log(`created project ${row.id}`);
      } finally {
        await closeDb();
      }
    });

  projects
    .command('list')
    .description('list projects with their sizes')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      const db = initDb(loadConfig());
      try {
        const rows = await listProjects(db);
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else
          console.table(
            rows.map(({ id, name, num_studies, num_series, num_instances }) => ({
              id,
              name,
              num_studies,
              num_series,
              num_instances,
            })),
          );
      } finally {
        await closeDb();
      }
    });

  program
    .command('migrate')
    .description('apply pending database migrations')
    .action(async () => {
      const db = initDb(loadConfig());
      try {
        const applied = await migrate(db);
        console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
      } finally {
        await closeDb();
      }
    });
}
