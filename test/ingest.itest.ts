import { readFileSync } from 'node:fs';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { FailureReason } from '../src/dicom/parse';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

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
