import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { closeQueues, initQueues } from '../src/jobs/queues';
import { spawnWorker, syntheticCopies, waitFor } from './helpers/dimse';
import { orthancDirect, resetStack, startGateway, type TestGateway } from './helpers/gateway';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../shared/dicom-samples');
const COPIES = 120;

type WorkerChild = Awaited<ReturnType<typeof spawnWorker>>;

/** The job worker as its own process, one cohort instance at a time so that the kill lands mid-cohort. */
const spawnCohortWorker = () => spawnWorker({ COHORT_CONCURRENCY: '1' });

describe('a cohort survives a SIGKILLed worker', () => {
  let gw: TestGateway;
  let worker: WorkerChild | undefined;
  let dir: string;

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    initQueues(gw.config);
    await ensureProject(gw.services.db, { id: 'clinic', name: 'Clinic' });
    dir = mkdtempSync(join(tmpdir(), 'cohort-kill-'));
    const copies = syntheticCopies(join(SAMPLES, 'ct/CT_small.dcm'), dir, COPIES, { perSeries: 40 });
    for (const c of copies) {
      const out = await ingestInstance(gw.services, readFileSync(c.path), ['clinic'], 'stow');
      if (!out.ok) throw new Error('could not seed');
    }
  }, 180_000);

  afterAll(async () => {
    if (worker && worker.child.exitCode === null) {
      worker.child.kill('SIGKILL');
      await worker.exited;
    }
    await closeQueues();
    await gw?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('resumes after SIGKILL: exactly one output per source instance, no duplicate, no gap', async () => {
    worker = await spawnCohortWorker();
    const studies = (
      await gw.services.db.query<{ study_uid: string }>(
        "SELECT study_uid FROM project_studies WHERE project_id = 'clinic'",
      )
    ).rows.map((r) => r.study_uid);
    const res = await fetch(`${gw.url}/api/projects/clinic/cohorts`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'kill', studies, target: { new: { id: 'clinic-research', name: 'R' } } }),
    });
    expect(res.status).toBe(202);
    const { id } = (await res.json()) as { id: string };
    const progress = async () =>
      (await (await fetch(`${gw.url}/api/cohorts/${id}`)).json()) as {
        state: string;
        progress: { total: number; done: number; failed: number; withheld: number };
      };

    // Kill it once a good part, but not all, is done.
    const doneAtKill = await waitFor(
      'the cohort to be under way',
      async () => {
        const p = await progress();
        return p.progress.done >= 10 ? p.progress.done : undefined;
      },
      120_000,
      20,
    );
    worker.child.kill('SIGKILL');
    await worker.exited;
    const afterKill = await progress();
    expect(afterKill.state).toBe('running');
    expect(afterKill.progress.done).toBeLessThan(COPIES);
    expect(doneAtKill).toBeLessThan(COPIES);

    worker = await spawnCohortWorker();
    const final = await waitFor(
      'the cohort to finish after the restart',
      async () => {
        const p = await progress();
        return p.state === 'done' ? p : undefined;
      },
      120_000,
      250,
    );
    expect(final.progress).toMatchObject({ total: COPIES, done: COPIES, failed: 0, withheld: 0 });

    const db = gw.services.db;
    const rows = await db.query<{ n: number; distinct_out: number; missing: number }>(
      `SELECT count(*)::int AS n, count(DISTINCT output_sop_uid)::int AS distinct_out,
              count(*) FILTER (WHERE output_sop_uid IS NULL)::int AS missing
         FROM cohort_instances WHERE cohort_id = $1`,
      [id],
    );
    expect(rows.rows[0]).toEqual({ n: COPIES, distinct_out: COPIES, missing: 0 });
    // The research project holds exactly the outputs, each indexed once and present in Orthanc.
    const indexed = await db.query<{ n: number }>(
      `SELECT count(*)::int AS n FROM project_instances pi
         JOIN cohort_instances ci ON ci.output_sop_uid = pi.sop_instance_uid AND ci.cohort_id = $1
        WHERE pi.project_id = 'clinic-research'`,
      [id],
    );
    expect(indexed.rows[0].n).toBe(COPIES);
    const all = await db.query<{ n: number }>(
      "SELECT count(*)::int AS n FROM project_instances WHERE project_id = 'clinic-research'",
    );
    expect(all.rows[0].n).toBe(COPIES);
    expect((await orthancDirect().getJson<string[]>('/instances')).length).toBe(2 * COPIES);
  }, 300_000);
});
