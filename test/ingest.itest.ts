import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ensureProject } from '../src/index-db/projects';
import { closeIndexer, initIndexer } from '../src/ingest/change-feed';
import { ingestInstance } from '../src/ingest/ingest';
import { FailureReason } from '../src/dicom/parse';
import { cstore, syntheticCopies, waitFor } from './helpers/dimse';
import { orthancDirect, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

describe('ingest (shared by STOW-RS and the change feed)', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    await ensureProject(gw.services.db, { id: 'beta', name: 'Beta' });
  });
  afterAll(async () => gw.close());

  it('archives a CT, indexes it into the project and counts it at series and study level', async () => {
    const bytes = readFileSync(`${SAMPLES}/ct/CT_small.dcm`);
    const out = await ingestInstance(gw.services, bytes, ['alpha'], 'stow');
    expect(out.ok).toBe(true);
    const study = await gw.services.db.query(
      'SELECT num_series, num_instances, modalities, patient_name_norm FROM project_studies WHERE project_id = $1',
      ['alpha'],
    );
    expect(study.rows).toEqual([
      { num_series: 1, num_instances: 1, modalities: ['CT'], patient_name_norm: 'COMPRESSEDSAMPLES^CT1' },
    ]);
  });

  it('treats an identical re-send as already stored and does not count it twice', async () => {
    const bytes = readFileSync(`${SAMPLES}/ct/CT_small.dcm`);
    const out = await ingestInstance(gw.services, bytes, ['alpha'], 'stow');
    expect(out).toMatchObject({ ok: true, alreadyStored: true });
    const study = await gw.services.db.query(
      'SELECT num_instances FROM project_studies WHERE project_id = $1',
      ['alpha'],
    );
    expect(study.rows[0].num_instances).toBe(1);
  });

  it('refuses a different object under an archived SOP Instance UID, keeping the original', async () => {
    // MR_small.dcm and MR_small_implicit.dcm are one SOP instance in two encodings.
    const first = await ingestInstance(
      gw.services,
      readFileSync(`${SAMPLES}/mr/MR_small.dcm`),
      ['alpha'],
      'stow',
    );
    expect(first.ok).toBe(true);
    const second = await ingestInstance(
      gw.services,
      readFileSync(`${SAMPLES}/mr/MR_small_implicit.dcm`),
      ['beta'],
      'stow',
    );
    expect(second).toMatchObject({ ok: false, reason: FailureReason.DuplicateSopInstance });
    const beta = await gw.services.db.query(
      'SELECT count(*)::int AS n FROM project_instances WHERE project_id = $1',
      ['beta'],
    );
    expect(beta.rows[0].n).toBe(0);
  });

  it('fails a truncated file alone with a reason, storing nothing', async () => {
    const out = await ingestInstance(
      gw.services,
      readFileSync(`${SAMPLES}/malformed/rtplan_truncated.dcm`),
      ['alpha'],
      'stow',
    );
    expect(out).toMatchObject({ ok: false, reason: FailureReason.CannotUnderstand });
    const out2 = await ingestInstance(
      gw.services,
      readFileSync(`${SAMPLES}/malformed/MR_truncated.dcm`),
      ['beta'],
      'stow',
    );
    expect(out2.ok).toBe(false);
  });

  it('refuses a header that declares a 65535x65535 image before it reaches the archive', async () => {
    const out = await ingestInstance(
      gw.services,
      readFileSync(`${SAMPLES}/malformed/oob-monochrome-65535.dcm`),
      ['alpha'],
      'stow',
    );
    expect(out).toMatchObject({ ok: false, reason: FailureReason.DataSetDoesNotMatchSopClass });
  });
});

/**
 * Index lag on the routes that do not go through the gateway's STOW: objects others store through Orthanc's REST API,
 * and deletions made in Orthanc while the change feed is busy with a backlog.
 */
describe('index lag of the change feed', () => {
  let gw: TestGateway;
  let tmp: string;
  const TEMPLATE = `${SAMPLES}/hierarchy/77654033/CT2/17106`;
  const indexed = async (sop: string) =>
    (await gw.services.db.query('SELECT 1 FROM instances WHERE sop_instance_uid = $1', [sop])).rows.length ===
    1;
  const report = (what: string, ms: number) => {
    if (process.env.APERTURE_LAG_REPORT) process.stderr.write(`LAG ${what}: ${ms} ms\n`);
  };

  beforeAll(async () => {
    await resetStack();
    tmp = mkdtempSync(join(tmpdir(), 'aperture-lag-'));
    gw = await startGateway({ INDEXER_POLL_MS: '100', INDEXER_BUSY_SWEEP_MS: '1000' });
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    initIndexer(gw.services);
  }, 120_000);
  afterAll(async () => {
    await gw?.close();
    rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it("indexes an object stored through Orthanc's REST API by someone else within about a second", async () => {
    const [copy] = syntheticCopies(TEMPLATE, join(tmp, 'rest'), 1);
    const orthanc = orthancDirect();
    try {
      await orthanc.store(readFileSync(copy.path));
    } finally {
      await orthanc.close();
    }
    const stored = Date.now();
    await waitFor('the REST-stored object indexed', () => indexed(copy.sopInstanceUid), 30_000, 20);
    const lag = Date.now() - stored;
    report('REST store by others', lag);
    // Before: REST_GRACE_MS, 10 s of waiting for a STOW that was never coming.
    expect(lag).toBeLessThan(3000);
  }, 60_000);

  it("lets the gateway's own STOW win the race: its objects are in the uploader's project, never routed", async () => {
    const copies = syntheticCopies(TEMPLATE, join(tmp, 'stow'), 30);
    await Promise.all(
      copies.map(async (c) => {
        const out = await ingestInstance(gw.services, readFileSync(c.path), ['alpha'], 'stow');
        expect(out.ok).toBe(true);
      }),
    );
    // Give the feed time to see every NewInstance and to settle.
    await new Promise((r) => setTimeout(r, 1500));
    const rows = await gw.services.db.query<{ source: string; n: number }>(
      `SELECT pi.source, count(*)::int AS n FROM project_instances pi
        WHERE pi.sop_instance_uid = ANY ($1) GROUP BY 1`,
      [copies.map((c) => c.sopInstanceUid)],
    );
    expect(rows.rows).toEqual([{ source: 'stow', n: 30 }]);
    const quarantined = await gw.services.db.query(
      'SELECT 1 FROM quarantine WHERE sop_instance_uid = ANY ($1)',
      [copies.map((c) => c.sopInstanceUid)],
    );
    expect(quarantined.rows).toEqual([]);
  }, 120_000);

  it('removes a study deleted in Orthanc from the index while the feed works through a backlog', async () => {
    // A study the index holds.
    const [gone] = syntheticCopies(TEMPLATE, join(tmp, 'gone'), 1);
    expect((await ingestInstance(gw.services, readFileSync(gone.path), ['alpha'], 'stow')).ok).toBe(true);
    // A backlog: sent while the indexer is stopped, so that the feed is busy with it for a while once it starts.
    await closeIndexer();
    const backlog = syntheticCopies(TEMPLATE, join(tmp, 'backlog'), 400, { perSeries: 100 });
    await cstore([join(tmp, 'backlog')], { calledAet: 'BACKLOG' });
    const uids = backlog.map((c) => c.sopInstanceUid);
    const done = async () =>
      (
        await gw.services.db.query<{ n: number }>(
          'SELECT count(*)::int AS n FROM instances WHERE sop_instance_uid = ANY ($1)',
          [uids],
        )
      ).rows[0].n;
    initIndexer(gw.services);
    await waitFor('the feed to be under way', async () => (await done()) > 0, 30_000, 20);
    const orthanc = orthancDirect();
    try {
      const [study] = (await orthanc.lookup(gone.studyUid)).filter((r) => r.Type === 'Study');
      const before = (await orthanc.getJson<{ Last: number }>('/changes?last')).Last;
      await orthanc.delete(`/studies/${study.ID}`);
      // Whether this Orthanc logs deletions in /changes (1.10 does not: the feed cannot follow them).
      const after = await orthanc.getJson<{ Changes: Array<{ ChangeType: string }> }>(
        `/changes?since=${before}&limit=1000`,
      );
      report(`Deleted changes logged: ${after.Changes.filter((c) => c.ChangeType === 'Deleted').length}`, 0);
    } finally {
      await orthanc.close();
    }
    const deleted = Date.now();
    await waitFor(
      'the deleted study to leave the index',
      async () => !(await indexed(gone.sopInstanceUid)),
      120_000,
      50,
    );
    const lag = Date.now() - deleted;
    const indexedAtRemoval = await done();
    report(`deletion while busy (backlog ${indexedAtRemoval}/${uids.length} indexed at removal)`, lag);
    // Before: the study stayed listed until the feed was idle, i.e. after the whole backlog.
    expect(indexedAtRemoval).toBeLessThan(uids.length);
    const listed = await gw.services.db.query(
      "SELECT 1 FROM project_studies WHERE project_id = 'alpha' AND study_uid = $1",
      [gone.studyUid],
    );
    expect(listed.rows).toEqual([]);
    await waitFor('the backlog indexed', async () => (await done()) === uids.length, 120_000);
  }, 300_000);
});
