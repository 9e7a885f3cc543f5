import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runReindex } from '../src/cli/commands/reindex';
import { parsePart10 } from '../src/dicom/parse';
import { ensureProject } from '../src/index-db/projects';
import { createRule } from '../src/index-db/routing';
import { ingestInstance } from '../src/ingest/ingest';
import { cstore, syntheticCopies } from './helpers/dimse';
import { orthancDirect, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/**
 * `reindex` rebuilds the index from Orthanc: here the index has drifted in every way it can (objects it never saw,
 * a row whose object is gone, a row parsed by an "older" parser) while a STOW keeps arriving.
 */
describe('reindex from the archive', () => {
  let gw: TestGateway;
  let tmp: string;
  const CT = `${SAMPLES}/ct/CT_small.dcm`;
  const MR = `${SAMPLES}/mr/MR_small.dcm`;
  const ct = parsePart10(readFileSync(CT));
  const mr = parsePart10(readFileSync(MR));
  const q = async <T extends object>(sql: string, params: unknown[] = []) =>
    (await gw.services.db.query<T>(sql, params)).rows;

  beforeAll(async () => {
    await resetStack();
    tmp = mkdtempSync(join(tmpdir(), 'aperture-reindex-'));
    gw = await startGateway(); // no indexer: what C-STORE brings stays unknown to the index
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung' });
    await createRule(gw.services.db, 'lung-study', {
      kind: 'called_aet',
      value: 'LUNGSTUDY',
      match: 'equals',
      enabled: true,
    });

    // Stored through the STOW path into alpha: known, with a membership that must survive.
    expect((await ingestInstance(gw.services, readFileSync(CT), ['alpha'], 'stow')).ok).toBe(true);
    // Indexed, then deleted from Orthanc behind the index's back: a stale row.
    expect((await ingestInstance(gw.services, readFileSync(MR), ['alpha'], 'stow')).ok).toBe(true);
    const orthanc = orthancDirect();
    try {
      const [inst] = (await orthanc.lookup(mr.sopInstanceUid)).filter((r) => r.Type === 'Instance');
      await orthanc.delete(`/instances/${inst.ID}`);
    } finally {
      await orthanc.close();
    }
    // Sent by modalities while no indexer ran: unknown to the index.
    await cstore([`${SAMPLES}/hierarchy/77654033`], { calledAet: 'LUNGSTUDY' });
    await cstore([`${SAMPLES}/hierarchy/98892001`], { calledAet: 'NOWHERE' });
    // An "older parser" left the CT's row without its Study Description, in the global row and alpha's study.
    await q(`UPDATE instances SET dicom_json = dicom_json - '00081030' WHERE sop_instance_uid = $1`, [
      ct.sopInstanceUid,
    ]);
    await q(`UPDATE project_studies SET study_description = NULL WHERE study_uid = $1`, [
      ct.studyInstanceUid,
    ]);
  }, 120_000);
  afterAll(async () => {
    await gw?.close();
    rmSync(tmp, { recursive: true, force: true });
  });

  it('rebuilds what drifted, routes what it never saw, keeps memberships and drops stale rows, while STOW goes on', async () => {
    const stowed = syntheticCopies(`${SAMPLES}/hierarchy/98892001/CT2N/6293`, join(tmp, 'stow'), 20);
    const progress: number[] = [];
    const [summary] = await Promise.all([
      runReindex(
        { db: gw.services.db, archive: gw.services.archive, config: gw.config, logger: gw.services.logger },
        { pageSize: 5, onProgress: (done) => progress.push(done) },
      ),
      (async () => {
        for (const c of stowed) {
          expect((await ingestInstance(gw.services, readFileSync(c.path), ['alpha'], 'stow')).ok).toBe(true);
        }
      })(),
    ]);

    expect(summary).toMatchObject({
      indexed: 7,
      quarantined: 7,
      updated: 1,
      failed: 0,
      errors: 0,
      removedStale: 1,
    });
    // Whatever part of the concurrent STOW the scan saw, it saw it as already indexed.
    expect(summary.unchanged).toBe(summary.archived - 7 - 7 - 1);
    expect(progress.length).toBeGreaterThan(2);

    // Memberships kept, the drifted row and alpha's study refreshed, the stale row gone.
    const alpha = await q<{ sop_instance_uid: string; source: string }>(
      `SELECT sop_instance_uid, source FROM project_instances WHERE project_id = 'alpha' ORDER BY 1`,
    );
    expect(alpha.map((r) => r.sop_instance_uid)).toEqual(
      [ct.sopInstanceUid, ...stowed.map((c) => c.sopInstanceUid)].sort(),
    );
    expect(new Set(alpha.map((r) => r.source))).toEqual(new Set(['stow']));
    const [row] = await q<{ has: boolean }>(
      `SELECT dicom_json ? '00081030' AS has FROM instances WHERE sop_instance_uid = $1`,
      [ct.sopInstanceUid],
    );
    expect(row.has).toBe(true);
    const [study] = await q<{ study_description: string | null }>(
      `SELECT study_description FROM project_studies WHERE project_id = 'alpha' AND study_uid = $1`,
      [ct.studyInstanceUid],
    );
    expect(study.study_description).not.toBeNull();
    expect(await q(`SELECT 1 FROM instances WHERE sop_instance_uid = $1`, [mr.sopInstanceUid])).toEqual([]);

    // Unknown arrivals routed like new ones: LUNGSTUDY's to lung-study, the rest to quarantine; STOW's never there.
    const lung = await q<{ n: number }>(
      `SELECT count(*)::int AS n FROM project_instances WHERE project_id = 'lung-study'`,
    );
    expect(lung[0].n).toBe(7);
    const quarantined = await q<{ study_uid: string; n: number }>(
      'SELECT study_uid, count(*)::int AS n FROM quarantine GROUP BY 1',
    );
    expect(quarantined).toEqual([{ study_uid: '1.3.6.1.4.1.5962.1.1.0.0.0.1194734704.16302.0.1', n: 7 }]);
  }, 180_000);

  it('changes nothing when run again', async () => {
    const summary = await runReindex({
      db: gw.services.db,
      archive: gw.services.archive,
      config: gw.config,
      logger: gw.services.logger,
    });
    expect(summary).toMatchObject({ indexed: 0, quarantined: 0, updated: 0, failed: 0, removedStale: 0 });
    expect(summary.unchanged).toBe(summary.archived);
  }, 120_000);
});
