/**
 * QIDO-RS `orderby` (Aperture's extension, src/index-db/qido.ts) against the real stack: the order holds across pages,
 * not only within one, per project and across the caller's projects, with the same access rules as any search.
 */
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { generateInstances } from '../tools/synth';
import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

type Study = Record<string, { Value?: unknown[] }>;
const v = (s: Study, tag: string): unknown => s[tag]?.Value?.[0];
const uid = (s: Study) => String(v(s, '0020000D'));
const date = (s: Study) => String(v(s, '00080020') ?? '');
const instances = (s: Study) => Number(v(s, '00201208'));

describe('QIDO-RS orderby across pages', () => {
  let issuer: OidcIssuer;
  let gw: TestGateway;
  let alice = '';
  let erin = '';
  const demo = new Set<string>();
  const lung = new Set<string>();

  beforeAll(async () => {
    await resetStack();
    issuer = await startOidcIssuer();
    gw = await startGateway({ AUTH_ENABLED: 'true', OIDC_ISSUER: issuer.issuer });
    await ensureProject(gw.services.db, { id: 'demo', name: 'Demo project' });
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung study' });
    // Small synthetic studies with different instance counts, some sharing a date-less or count tie.
    const batches = [
      { project: 'demo', into: demo, opts: { patients: 7, seed: 'orderby-a', instancesPerSeries: 1 } },
      { project: 'demo', into: demo, opts: { patients: 3, seed: 'orderby-b', instancesPerSeries: 3 } },
      { project: 'lung-study', into: lung, opts: { patients: 4, seed: 'orderby-c', instancesPerSeries: 2 } },
    ];
    for (const { project, into, opts } of batches) {
      for (const inst of generateInstances({
        ...opts,
        seriesPerStudy: 1,
        rows: 16,
        cols: 16,
        noise: false,
      })) {
        const out = await ingestInstance(gw.services, inst.buffer, [project], 'stow');
        if (!out.ok) throw new Error(`ingest failed: ${out.message}`);
        into.add(inst.studyInstanceUid);
      }
    }
    alice = await issuer.userToken('alice'); // reader of demo, curator of lung-study
    erin = await issuer.userToken('erin'); // reader of demo only
  }, 180_000);

  afterAll(async () => {
    await gw?.close();
    await issuer?.close();
  });

  async function search(token: string, root: string, params: Record<string, string>) {
    const q = new URLSearchParams({ includefield: '00201208', ...params });
    const r = await fetch(`${gw.url}${root}/studies?${q}`, {
      headers: { authorization: `Bearer ${token}`, accept: 'application/dicom+json' },
    });
    return r;
  }

  /** Every page of `limit` studies in the given order, concatenated. */
  async function allPages(token: string, root: string, orderby: string, limit: number): Promise<Study[]> {
    const out: Study[] = [];
    for (let offset = 0; ; offset += limit) {
      const r = await search(token, root, { orderby, limit: String(limit), offset: String(offset) });
      expect(r.status).toBe(200);
      const page = (await r.json()) as Study[];
      out.push(...page);
      if (page.length < limit) return out;
    }
  }

  it('orders one project by date, count and name across pages of 3, and descending is the exact reverse', async () => {
    const root = '/projects/demo/dicom-web';
    const byDate = await allPages(alice, root, 'StudyDate', 3);
    expect(byDate.map(uid).sort()).toEqual([...demo].sort());
    const dates = byDate.map(date);
    expect(dates).toEqual([...dates].sort());
    expect(new Set(dates).size).toBeGreaterThan(3);
    const newest = await allPages(alice, root, '-StudyDate', 3);
    expect(newest.map(uid)).toEqual(byDate.map(uid).reverse());

    const byCount = await allPages(alice, root, 'NumberOfStudyRelatedInstances', 4);
    const counts = byCount.map(instances);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    expect(counts[0]).toBe(1);
    expect(counts[counts.length - 1]).toBe(3);
    // Ties (seven studies of one instance) go by StudyInstanceUID, so no study is skipped or shown twice.
    expect(new Set(byCount.map(uid)).size).toBe(demo.size);
    expect((await allPages(alice, root, '-NumberOfStudyRelatedInstances', 4)).map(uid)).toEqual(
      byCount.map(uid).reverse(),
    );

    // Names in the database's collation, folded as the index folds them (case and accents ignored).
    const byName = await allPages(alice, root, 'PatientName', 3);
    const expected = await gw.services.db.query<{ study_uid: string }>(
      `SELECT study_uid FROM project_studies WHERE project_id = 'demo'
        ORDER BY patient_name_norm NULLS FIRST, study_uid`,
    );
    expect(byName.map(uid)).toEqual(expected.rows.map((r) => r.study_uid));
    expect(byName.map(uid)).not.toEqual(newest.map(uid));
    // The default order (no orderby) is still newest first.
    const plain = await search(alice, root, { limit: '100' });
    expect(((await plain.json()) as Study[]).map(date)).toEqual(newest.map(date));
  });

  it("orders the union of the caller's projects across pages, and never shows another user's studies", async () => {
    const union = await allPages(alice, '/dicom-web', 'NumberOfStudyRelatedInstances', 4);
    expect(union.map(uid).sort()).toEqual([...demo, ...lung].sort());
    const counts = union.map(instances);
    expect(counts).toEqual([...counts].sort((a, b) => a - b));
    // lung-study's 2-instance studies sit between demo's 1s and 3s: pages interleave the projects.
    expect(counts).toContain(2);

    const erinsView = await allPages(erin, '/dicom-web', '-StudyDate', 4);
    expect(erinsView.map(uid).sort()).toEqual([...demo].sort());
    // A project outside the caller's answers 404 whatever the order asked for, as any search does.
    const outside = await search(erin, '/projects/lung-study/dicom-web', { orderby: 'PatientName' });
    expect(outside.status).toBe(404);
  });

  it('refuses an order it cannot give with a 400 that says what it can order by', async () => {
    const root = '/projects/demo/dicom-web';
    for (const orderby of ['PatientSex', 'NoSuchAttribute', 'PatientName,StudyDate', '-']) {
      const r = await search(alice, root, { orderby });
      expect(r.status).toBe(400);
      const body = JSON.stringify(await r.json());
      expect(body).toContain('orderby');
    }
    const sex = await search(alice, root, { orderby: 'PatientSex' });
    expect(JSON.stringify(await sex.json())).toContain('PatientName, PatientID, StudyDate');
    // Series and instances keep their order (SeriesNumber, InstanceNumber) and say that orderby was ignored.
    const series = await fetch(`${gw.url}${root}/series?orderby=PatientName`, {
      headers: { authorization: `Bearer ${alice}` },
    });
    expect(series.status).toBe(200);
    expect(series.headers.get('warning')).toContain('orderby is supported for studies only');
  });
});
