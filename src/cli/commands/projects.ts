import type { Command } from 'commander';
import { migrate } from '../../index-db/migrate';
import { withServices } from '../services';
import { createProject, listProjects } from '../../index-db/projects';

/** `projects create|list` and `migrate`: project administration straight against the index database. */
export function register(program: Command): void {
  const projects = program.command('projects').description('create and list projects');

  projects
    .command('create <id> <name>')
    .description('create a project (id: lowercase letters, digits and dashes)')
    .option('-d, --description <text>', 'description', '')
    .action(async (id: string, name: string, opts: { description: string }) => {
      await withServices(async ({ db }) => {
        if (!/^[a-z0-9]([a-z0-9-]*[a-z0-9])?$/.test(id) || id.length > 64) {
          throw new Error(
            'project id: lowercase letters, digits and dashes, not starting or ending with a dash',
          );
        }
        const row = await createProject(db, { id, name, description: opts.description });
        console.log(`created project ${row.id}`);
      });
    });

  projects
    .command('list')
    .description('list projects with their sizes')
    .option('--json', 'print JSON')
    .action(async (opts: { json?: boolean }) => {
      await withServices(
        async ({ db }) => {
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
        },
        { migrate: false },
      );
    });

  program
    .command('migrate')
    .description('apply pending database migrations')
    .action(async () => {
      await withServices(
        async ({ db }) => {
          const applied = await migrate(db);
          console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
        },
        { migrate: false },
      );
    });
}
