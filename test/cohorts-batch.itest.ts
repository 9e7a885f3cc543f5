import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Principal } from '../src/auth/access';
import { deidentifier } from '../src/cohorts/deidentifier';
import type { Deidentifier } from '../src/cohorts/deid-port';
import { type CohortDeps, runCohort } from '../src/cohorts/execute';
import { planCohort } from '../src/cohorts/plan';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import type { Archive } from '../src/orthanc/archive';
import { OrthancHttpError } from '../src/orthanc/client';
import { syntheticCopies } from './helpers/dimse';
import { orthancDirect, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/** More than one index batch of the cohort runner (16), and more than one page of pending rows (64). */
const COPIES = 70;

const curator: Principal = { id: 'curator-1', kind: 'user', globalAdmin: true, projects: new Map() };

/**
 * The cohort runner stores outputs one by one but indexes and records them in batches: these scenarios check that a
 * batch never lets one instance's fate spill over to the others, and that a run cut off between the archive and the
 * index resumes exactly.
 */
describe('cohort batches: one failure stays alone, a run cut off mid-batch resumes exactly', () => {
  let gw: TestGateway;
  let dir: string;
  let sources: string[];

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await ensureProject(gw.services.db, { id: 'ward', name: 'Ward' });
    dir = mkdtempSync(join(tmpdir(), 'cohort-batch-'));
    const copies = syntheticCopies(join(SAMPLES, 'ct/CT_small.dcm'), dir, COPIES, { perSeries: 35 });
    for (const c of copies) {
      const out = await ingestInstance(gw.services, readFileSync(c.path), ['ward'], 'stow');
      if (!out.ok) throw new Error('could not seed');
    }
    sources = copies.map((c) => c.sopInstanceUid);
  }, 180_000);

  afterAll(async () => {
    await gw?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  const deps = (over: { deid?: Deidentifier; archive?: Archive; lanes?: number } = {}): CohortDeps => ({
    db: gw.services.db,
    pacs: gw.services.pacs,
    archive: over.archive ?? gw.services.archive,
    deid: over.deid ?? deidentifier,
    config: { ...gw.config, COHORT_CONCURRENCY: over.lanes ?? 4 },
  });
  const newCohort = async (research: string) => {
    const studies = (
      await gw.services.db.query<{ study_uid: string }>(
        "SELECT study_uid FROM project_studies WHERE project_id = 'ward'",
      )
    ).rows.map((r) => r.study_uid);
    return planCohort(
      { db: gw.services.db, deid: deidentifier },
      curator,
      'ward',
      { name: research, studies, options: {}, target: { new: { id: research, name: research } } },
      { maxInstances: 1000, qidoMaxLimit: 100 },
    );
  };
  const rowsOf = async (cohortId: string) =>
    (
      await gw.services.db.query<{
        source_sop_uid: string;
        state: string;
        reason: string | null;
        output_sop_uid: string | null;
        attempts: number;
      }>(
        `SELECT source_sop_uid, state, reason, output_sop_uid, attempts FROM cohort_instances
          WHERE cohort_id = $1 ORDER BY source_sop_uid`,
        [cohortId],
      )
    ).rows;
  const indexedIn = async (project: string) =>
    (
      await gw.services.db.query<{ sop_instance_uid: string }>(
        'SELECT sop_instance_uid FROM project_instances WHERE project_id = $1',
        [project],
      )
    ).rows.map((r) => r.sop_instance_uid);
  const inArchive = async (sop: string) =>
    (await orthancDirect().lookup(sop)).some((r) => r.Type === 'Instance');

  it('a leak-check hit and a refused store fail only their own instance; the rest of the batch is done', async () => {
    const { id } = await newCohort('batch-research');
    const leaky = sources[3];
    const refused = sources[5];
    // Which source each output came from, so that the wrappers below can pick on one instance of the batch.
    const sourceOf = new WeakMap<Buffer, string>();
    const deid: Deidentifier = {
      ...deidentifier,
      deidentify: (part10, options, keys, extra) => {
        const r = deidentifier.deidentify(part10, options, keys, extra);
        if ('bytes' in r) sourceOf.set(r.bytes, r.sourceUids.sop);
        return r;
      },
      leakCheck: (output, identifying) =>
        sourceOf.get(output) === leaky
          ? { hits: [{ tagPath: '00100010', kind: 'name' }] }
          : deidentifier.leakCheck(output, identifying),
    };
    const base = gw.services.archive;
    const archive: Archive = Object.assign(Object.create(base) as Archive, {
      storeInstance: (bytes: Parameters<Archive['storeInstance']>[0], length?: number) => {
        if (Buffer.isBuffer(bytes) && sourceOf.get(bytes) === refused)
          return Promise.reject(new OrthancHttpError(400, 'POST /instances', 'refused by the test'));
        return base.storeInstance(bytes, length);
      },
    });

    const outcome = await runCohort(deps({ deid, archive }), id);
    expect(outcome).toEqual({
      state: 'done',
      processed: { done: COPIES - 2, withheld: 0, failed: 2, withdrawn: 0 },
    });
    const rows = await rowsOf(id);
    expect(rows).toHaveLength(COPIES);
    const failed = rows.filter((r) => r.state === 'failed');
    expect(failed.map((r) => [r.source_sop_uid, r.reason]).sort()).toEqual(
      [
        [leaky, 'leak_check'],
        [refused, 'store_c000'],
      ].sort(),
    );
    expect(failed.every((r) => r.output_sop_uid === null)).toBe(true);
    const done = rows.filter((r) => r.state === 'done');
    expect(done).toHaveLength(COPIES - 2);
    expect(done.every((r) => r.attempts === 1 && r.output_sop_uid)).toBe(true);
    // Exactly the done outputs are in the research project, each once; nothing of the two failed ones is anywhere.
    const indexed = await indexedIn('batch-research');
    expect(indexed.sort()).toEqual(done.map((r) => r.output_sop_uid!).sort());
    const archiveTotal = (await orthancDirect().getJson<string[]>('/instances')).length;
    expect(archiveTotal).toBe(COPIES + (COPIES - 2));
    // The audit rows count the two failures under their steps.
    const audit = await gw.services.db.query<{ action: string; detail: { counts: Record<string, number> } }>(
      `SELECT action, detail FROM audit_events WHERE action LIKE 'cohort.job.%' AND detail->>'cohort' = $1`,
      [id],
    );
    const sum = (action: string, key: string) =>
      audit.rows.filter((r) => r.action === action).reduce((n, r) => n + (r.detail.counts[key] ?? 0), 0);
    expect(sum('cohort.job.leak-check', 'leak_check')).toBe(1);
    expect(sum('cohort.job.store', 'store_c000')).toBe(1);
    expect(sum('cohort.job.store', 'ok')).toBe(COPIES - 2);
  }, 180_000);

  it('a run that dies with outputs archived but not yet indexed resumes with no duplicate and no gap', async () => {
    const { id } = await newCohort('crash-research');
    // The archive stores 20 outputs (more than one index batch), then the run dies on the next store, as a worker
    // killed between the archive and the index would leave it: some outputs archived and indexed, some archived only.
    const base = gw.services.archive;
    let stores = 0;
    const dying: Archive = Object.assign(Object.create(base) as Archive, {
      storeInstance: (bytes: Parameters<Archive['storeInstance']>[0], length?: number) => {
        if (++stores > 20) return Promise.reject(new Error('simulated crash'));
        return base.storeInstance(bytes, length);
      },
    });
    await expect(runCohort(deps({ archive: dying, lanes: 3 }), id)).rejects.toThrow('simulated crash');
    const cut = await rowsOf(id);
    const doneAtCrash = cut.filter((r) => r.state === 'done').length;
    expect(doneAtCrash).toBeGreaterThan(0);
    expect(doneAtCrash).toBeLessThan(20);
    expect(cut.filter((r) => r.state === 'failed')).toHaveLength(0);
    expect(cut.filter((r) => r.state === 'pending').length).toBe(COPIES - doneAtCrash);

    const outcome = await runCohort(deps(), id);
    expect(outcome?.state).toBe('done');
    expect(outcome?.processed.done).toBe(COPIES - doneAtCrash);
    const rows = await rowsOf(id);
    expect(rows.filter((r) => r.state === 'done')).toHaveLength(COPIES);
    // Each source was recorded once, and each output is in the research project once.
    expect(rows.every((r) => r.attempts === 1)).toBe(true);
    const outputs = rows.map((r) => r.output_sop_uid!);
    expect(new Set(outputs).size).toBe(COPIES);
    const indexed = await indexedIn('crash-research');
    expect(indexed.sort()).toEqual([...outputs].sort());
    for (const sop of outputs.slice(0, 5)) expect(await inArchive(sop)).toBe(true);
    const claims = await gw.services.db.query<{ n: number }>(
      'SELECT count(*)::int AS n FROM ingest_claims WHERE sop_instance_uid = ANY ($1::text[])',
      [outputs],
    );
    expect(claims.rows[0].n).toBe(0);
  }, 180_000);
});
