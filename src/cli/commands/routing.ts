import type { Command } from 'commander';
import { withServices } from '../services';
import { getProject } from '../../index-db/projects';
import { deleteRule, listRules, saveRule } from '../../index-db/routing';
import { ruleInputSchema } from '../../ingest/routing';

/** `routing list|add|remove`: routing rules straight against the index database (as a global administrator). */
export function register(program: Command): void {
  const routing = program
    .command('routing')
    .description(
      'routing rules: where C-STORE arrivals go (across projects the earliest claim wins unless a priority is set; ' +
        'position orders rules within a project)',
    );

  routing
    .command('list')
    .description('list rules in the order they are checked (one project: by position)')
    .option('-p, --project <id>', 'only this project')
    .option('--json', 'print JSON')
    .action(async (opts: { project?: string; json?: boolean }) => {
      await withServices(async ({ db }) => {
        const rows = await listRules(db, opts.project);
        if (opts.json) console.log(JSON.stringify(rows, null, 2));
        else if (rows.length === 0)
          console.log('no routing rules: arrivals go to DEFAULT_PROJECT or quarantine');
        else {
          console.table(
            rows.map((r) => ({
              id: r.id,
              priority: r.priority ?? '',
              claim: r.claim_order,
              position: r.position,
              project: r.project_id,
              kind: r.kind,
              attribute: r.attribute ?? '',
              match: r.match,
              value: r.value,
              enabled: r.enabled,
            })),
          );
        }
      });
    });

  routing
    .command('add <project> <kind> <value>')
    .description(
      'add a rule; kind: called-aet | calling-aet | source-ip | attribute (with --attribute). ' +
        'e.g. `routing add lung-study called-aet LUNGSTUDY`, ' +
        '`routing add onco attribute "Project: onco" --attribute PatientComments --match contains`',
    )
    .option('-a, --attribute <keyword|tag>', 'DICOM keyword or tag, for kind attribute')
    .option('-m, --match <how>', 'equals | prefix | contains | regex', 'equals')
    .option('--position <n>', 'place in the checking order (default: after every rule)', (v) =>
      Number.parseInt(v, 10),
    )
    .option('--disabled', 'store the rule disabled')
    .option('--priority <n>', 'cross-project precedence (lower first, before rules without one)', (v) =>
      Number.parseInt(v, 10),
    )
    .action(
      async (
        project: string,
        kind: string,
        value: string,
        opts: {
          attribute?: string;
          match: string;
          position?: number;
          disabled?: boolean;
          priority?: number;
        },
      ) => {
        const parsed = ruleInputSchema.safeParse({
          kind: kind.replace(/-/g, '_'),
          value,
          attribute: opts.attribute,
          match: opts.match,
          position: opts.position,
          enabled: !opts.disabled,
          priority: opts.priority,
        });
        if (!parsed.success) {
          throw new Error(
            parsed.error.issues.map((i) => `${i.path.join('.') || 'rule'}: ${i.message}`).join('; '),
          );
        }
        await withServices(async ({ db }) => {
          if (!(await getProject(db, project))) throw new Error(`no project '${project}'`);
          // The CLI acts as a global administrator: overlaps are reported, not refused.
          const row = await saveRule(db, project, parsed.data, { globalAdmin: true });
          console.log(
            `added rule ${row.id} at position ${row.position}: ${row.kind} ${row.match} '${row.value}' → ${project}`,
          );
          if (row.shadowed_by.length > 0)
            console.log(`  shadowed by earlier rules of other projects: ${row.shadowed_by.join(', ')}`);
          if (row.shadows.length > 0)
            console.log(`  takes arrivals from rules of other projects: ${row.shadows.join(', ')}`);
        });
      },
    );

  routing
    .command('remove <project> <id>')
    .description('remove a rule of a project')
    .action(async (project: string, id: string) => {
      await withServices(async ({ db }) => {
        await deleteRule(db, project, id);
        console.log(`removed rule ${id}`);
      });
    });
}
