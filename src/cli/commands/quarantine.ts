import type { Command } from 'commander';
import { withServices } from '../services';
import {
  assignQuarantined,
  listFailures,
  listQuarantine,
  type QuarantineSelector,
} from '../../index-db/routing';

/** `quarantine list|assign|failures`: arrivals no routing rule claimed, and objects the index refused. */
export function register(program: Command): void {
  const quarantine = program
    .command('quarantine')
    .description('arrivals that matched no routing rule (indexed, visible to no project until assigned)');

  quarantine
    .command('list')
    .description('quarantined studies: UIDs, AE titles, counts and dates (no PHI)')
    .option('-l, --limit <n>', 'studies to show', (v) => Number.parseInt(v, 10), 100)
    .option('--json', 'print JSON')
    .action(async (opts: { limit: number; json?: boolean }) => {
      await withServices(async ({ db }) => {
        const { total, studies } = await listQuarantine(db, { limit: opts.limit, offset: 0 });
        if (opts.json) console.log(JSON.stringify({ total, studies }, null, 2));
        else if (total === 0) console.log('quarantine is empty');
        else {
          console.table(
            studies.map((s) => ({
              study: s.study_uid,
              series: s.num_series,
              instances: s.num_instances,
              called: s.called_aets.join(','),
              calling: s.calling_aets.join(','),
              from: s.remote_ips.join(','),
              received: s.last_received.toISOString(),
            })),
          );
          if (total > studies.length) console.log(`${total - studies.length} more studies (use --limit)`);
        }
      });
    });

  quarantine
    .command('assign <project>')
    .description('move a quarantined study, series or instances into a project')
    .option('--study <uid>', 'Study Instance UID')
    .option('--series <uid>', 'Series Instance UID')
    .option('--instances <uids>', 'comma-separated SOP Instance UIDs')
    .action(async (project: string, opts: { study?: string; series?: string; instances?: string }) => {
      const given = [opts.study, opts.series, opts.instances].filter((x) => x !== undefined);
      if (given.length !== 1) throw new Error('give exactly one of --study, --series, --instances');
      const selector: QuarantineSelector = opts.study
        ? { studyUid: opts.study }
        : opts.series
          ? { seriesUid: opts.series }
          : {
              sopInstanceUids: opts
                .instances!.split(',')
                .map((s) => s.trim())
                .filter(Boolean),
            };
      await withServices(async ({ db }) => {
        const r = await assignQuarantined(db, selector, project);
        console.log(`assigned ${r.assigned} instances (${r.series} series) to ${project}`);
      });
    });

  quarantine
    .command('failures')
    .description('archived objects the index refused (unreadable, missing UIDs, duplicate SOP Instance UID)')
    .option('-l, --limit <n>', 'rows to show', (v) => Number.parseInt(v, 10), 100)
    .option('--json', 'print JSON')
    .action(async (opts: { limit: number; json?: boolean }) => {
      await withServices(async ({ db }) => {
        const { total, failures } = await listFailures(db, { limit: opts.limit, offset: 0 });
        if (opts.json) console.log(JSON.stringify({ total, failures }, null, 2));
        else if (total === 0) console.log('no refused objects');
        else {
          console.table(
            failures.map((f) => ({
              orthanc_id: f.orthanc_id,
              reason: `0x${f.reason.toString(16).toUpperCase()}`,
              message: f.message,
              called: f.called_aet ?? '',
              calling: f.calling_aet ?? '',
              received: f.received_at.toISOString(),
            })),
          );
        }
      });
    });
}
