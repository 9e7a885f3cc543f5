import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import dcmjs from 'dcmjs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Queue } from 'bullmq';
import { getString } from '../src/dicom/json';
import { parsePart10 } from '../src/dicom/parse';
import { Tag } from '../src/dicom/tags';
import { getIndexer } from '../src/ingest/change-feed';
import { QueueName, redisConnection } from '../src/jobs/queues';
import { multipartBody } from '../tools/stow-client';
import { cstore, syntheticCopies, waitFor } from './helpers/dimse';
import { orthancDirect, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/** Every file under a folder, with the identifiers and description the expectations are built from. */
function samplesUnder(dir: string) {
  const out: Array<{
    path: string;
    studyUid: string;
    seriesUid: string;
    sopUid: string;
    description: string;
  }> = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d).sort()) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else {
        const parsed = parsePart10(readFileSync(p));
        out.push({
          path: p,
          studyUid: parsed.studyInstanceUid,
          seriesUid: parsed.seriesInstanceUid,
          sopUid: parsed.sopInstanceUid,
          description: getString(parsed.json, Tag.StudyDescription) ?? '',
        });
      }
    }
  };
  walk(dir);
  return out;
}
const uniq = (xs: string[]) => [...new Set(xs)].sort();

describe('modalities: C-STORE into Orthanc, change-feed indexing, routing and quarantine', () => {
  let gw: TestGateway;
  let tmp: string;
  const spine = samplesUnder(`${SAMPLES}/hierarchy/77654033`); // CR spine + CT head of one patient
  const ct = samplesUnder(`${SAMPLES}/hierarchy/98892001`); // CT study of another patient
  const mr = samplesUnder(`${SAMPLES}/hierarchy/98892003`); // MR studies: Brain, Brain-MRA, Carotids
  const brain = mr.filter((s) => s.description.startsWith('Brain'));
  const carotids = mr.filter((s) => !s.description.startsWith('Brain'));

  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${gw.url}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined, text };
  };

  /** Study UIDs a project shows: through QIDO-RS when this build serves it, else from the index QIDO answers from. */
  const studiesIn = async (project: string): Promise<string[]> => {
    const res = await fetch(`${gw.url}/projects/${project}/dicom-web/studies?limit=1000`, {
      headers: { accept: 'application/dicom+json' },
    });
    if (res.status === 200 || res.status === 204) {
      const body =
        res.status === 204 ? [] : ((await res.json()) as Array<Record<string, { Value: string[] }>>);
      return body.map((s) => s['0020000D'].Value[0]).sort();
    }
    await res.body?.cancel();
    const r = await gw.services.db.query<{ study_uid: string }>(
      'SELECT study_uid FROM project_studies WHERE project_id = $1 ORDER BY study_uid',
      [project],
    );
    return r.rows.map((x) => x.study_uid);
  };
  const instancesIn = async (project: string): Promise<string[]> => {
    const r = await gw.services.db.query<{ sop_instance_uid: string }>(
      'SELECT sop_instance_uid FROM project_instances WHERE project_id = $1 ORDER BY 1',
      [project],
    );
    return r.rows.map((x) => x.sop_instance_uid);
  };
  const waitForCount = (project: string, n: number) =>
    waitFor(`${n} instances in ${project}`, async () => (await instancesIn(project)).length === n, 60_000);

  beforeAll(async () => {
    await resetStack();
    tmp = mkdtempSync(join(tmpdir(), 'aperture-dimse-'));
    gw = await startGateway({ INDEXER_ENABLED: 'true', INDEXER_POLL_MS: '100' });
    for (const id of ['lung-study', 'ct-room', 'neuro', 'onco-7']) {
      expect((await api('POST', '/api/projects', { id, name: id })).status).toBe(201);
    }
    const rules: Array<[string, Record<string, unknown>]> = [
      ['lung-study', { kind: 'called_aet', value: 'LUNGSTUDY' }],
      ['ct-room', { kind: 'calling_aet', value: 'CT_ROOM_2' }],
      ['neuro', { kind: 'attribute', attribute: 'StudyDescription', match: 'prefix', value: 'Brain' }],
      [
        'onco-7',
        { kind: 'attribute', attribute: 'PatientComments', match: 'contains', value: 'Project: onco-7' },
      ],
    ];
    for (const [project, rule] of rules) {
      expect((await api('POST', `/api/projects/${project}/routing`, rule)).status).toBe(201);
    }
  }, 120_000);
  afterAll(async () => {
    await gw?.close();
    rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it('routes what a modality sends to called AE title LUNGSTUDY into lung-study', async () => {
    await cstore([`${SAMPLES}/hierarchy/77654033`], { calledAet: 'LUNGSTUDY', callingAet: 'CR_ROOM' });
    await waitForCount('lung-study', spine.length);
    expect(await studiesIn('lung-study')).toEqual(uniq(spine.map((s) => s.studyUid)));
    expect(await instancesIn('lung-study')).toEqual(uniq(spine.map((s) => s.sopUid)));
    const counts = await gw.services.db.query(
      'SELECT sum(num_instances)::int AS n FROM project_studies WHERE project_id = $1',
      ['lung-study'],
    );
    expect(counts.rows[0].n).toBe(spine.length);
  }, 120_000);

  it('routes by calling AE title, and by a prefix of Study Description, whatever the called AE title', async () => {
    await cstore([`${SAMPLES}/hierarchy/98892001`], { calledAet: 'ARCHIVE', callingAet: 'CT_ROOM_2' });
    await cstore([`${SAMPLES}/hierarchy/98892003`], { calledAet: 'ARCHIVE', callingAet: 'MR_ROOM' });
    await waitForCount('ct-room', ct.length);
    await waitForCount('neuro', brain.length);
    expect(await studiesIn('ct-room')).toEqual(uniq(ct.map((s) => s.studyUid)));
    expect(await studiesIn('neuro')).toEqual(uniq(brain.map((s) => s.studyUid)));
  }, 120_000);

  it('puts what no rule claims in quarantine, listed by study with UIDs, AE titles, counts and dates only', async () => {
    expect(carotids.length).toBeGreaterThan(0);
    const q = await waitFor('the Carotids study in quarantine', async () => {
      const r = await api('GET', '/api/quarantine');
      return r.body.studies.find((s: { num_instances: number }) => s.num_instances === carotids.length) && r;
    });
    expect(q.status).toBe(200);
    expect(q.body.total).toBe(1);
    const [study] = q.body.studies;
    expect(study).toMatchObject({
      study_uid: carotids[0].studyUid,
      series_uids: uniq(carotids.map((s) => s.seriesUid)),
      num_series: uniq(carotids.map((s) => s.seriesUid)).length,
      num_instances: carotids.length,
      called_aets: ['ARCHIVE'],
      calling_aets: ['MR_ROOM'],
      remote_ips: ['127.0.0.1'],
    });
    expect(Date.parse(study.first_received)).toBeGreaterThan(Date.now() - 10 * 60_000);
    // No PHI: neither the description, nor the patient's name or ID.
    expect(q.text).not.toMatch(/Carotids|Doe|98890234/i);
    // Quarantined instances are indexed, but no project shows them.
    for (const p of ['lung-study', 'ct-room', 'neuro', 'onco-7']) {
      expect(await studiesIn(p)).not.toContain(carotids[0].studyUid);
    }
  }, 120_000);

  it('assigns a quarantined study to a project, after which it is visible there and gone from quarantine', async () => {
    const res = await api('POST', '/api/quarantine/assign', {
      studyUid: carotids[0].studyUid,
      project: 'neuro',
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ project: 'neuro', assigned: carotids.length });
    expect(await studiesIn('neuro')).toContain(carotids[0].studyUid);
    const sources = await gw.services.db.query(
      'SELECT DISTINCT source FROM project_instances WHERE project_id = $1 AND study_uid = $2',
      ['neuro', carotids[0].studyUid],
    );
    expect(sources.rows).toEqual([{ source: 'assign' }]);
    expect((await api('GET', '/api/quarantine')).body).toEqual({ total: 0, studies: [] });
    const again = await api('POST', '/api/quarantine/assign', {
      studyUid: carotids[0].studyUid,
      project: 'neuro',
    });
    expect(again.status).toBe(404);
    expect((await api('POST', '/api/quarantine/assign', { project: 'neuro' })).status).toBe(400);
  }, 120_000);

  it('finds an XNAT-style "Project: onco-7" in Patient Comments, and keeps the rest of that series with it', async () => {
    // Only the first instance of the series carries the comment; the others arrive the same way and must follow.
    const copies = syntheticCopies(`${SAMPLES}/hierarchy/77654033/CT2/17106`, join(tmp, 'onco'), 3, {
      patientComments: (i) => (i === 0 ? 'Consent on file. Project: onco-7' : undefined),
    });
    await cstore(
      copies.map((c) => c.path),
      { calledAet: 'ARCHIVE', callingAet: 'SCANNER9' },
    );
    await waitForCount('onco-7', 3);
    expect(await instancesIn('onco-7')).toEqual(uniq(copies.map((c) => c.sopInstanceUid)));
    // A later instance of that series sent another way is judged by the rules afresh: LUNGSTUDY claims it.
    const [late] = syntheticCopies(`${SAMPLES}/hierarchy/77654033/CT2/17106`, join(tmp, 'late'), 1, {
      studyUid: copies[0].studyUid,
      seriesUid: copies[0].seriesUid,
    });
    await cstore([late.path], { calledAet: 'LUNGSTUDY', callingAet: 'SCANNER9' });
    await waitFor('the late instance in lung-study', async () =>
      (await instancesIn('lung-study')).includes(late.sopInstanceUid),
    );
    expect(await instancesIn('onco-7')).not.toContain(late.sopInstanceUid);
  }, 120_000);

  it('lists an object Orthanc accepted but the index refuses among the failures, so nothing vanishes', async () => {
    await cstore([`${SAMPLES}/malformed/oob-monochrome-65535.dcm`], { calledAet: 'LUNGSTUDY' });
    const failures = await waitFor(
      'the refused object among the failures',
      async () => {
        const r = await api('GET', '/api/quarantine/failures');
        if (r.body.total === 1) return r.body.failures;
        // Say what was there, should the wait run out.
        throw new Error(`${r.status}: ${r.body.total} failures ${JSON.stringify(r.body.failures ?? r.body)}`);
      },
      60_000,
    );
    expect(failures[0]).toMatchObject({ reason: 0xa900, called_aet: 'LUNGSTUDY', calling_aet: 'TESTSCU' });
    expect(failures[0].orthanc_id).toMatch(/^[0-9a-f-]{44}$/);
  }, 120_000);

  it('queues derived work (thumbnails) when Orthanc declares a series stable', async () => {
    const conn = redisConnection(gw.config, false);
    const queue = new Queue(QueueName.thumbnails, { connection: conn });
    try {
      const wanted = uniq(spine.map((s) => s.seriesUid));
      await waitFor(
        'thumbnail jobs for the spine series',
        async () => {
          const jobs = await queue.getJobs([
            'waiting',
            'active',
            'completed',
            'failed',
            'delayed',
            'prioritized',
          ]);
          const queued = new Set(jobs.map((j) => (j.data as { seriesUid: string }).seriesUid));
          return wanted.every((s) => queued.has(s));
        },
        30_000,
        250,
      );
      expect(getIndexer()?.stats.seriesStable).toBeGreaterThanOrEqual(wanted.length);
    } finally {
      await queue.close();
      conn.disconnect();
    }
  }, 120_000);

  it('removes a study deleted in Orthanc (REST DELETE) from the index and from QIDO', async () => {
    const head = spine.filter((s) => s.description.startsWith('CT'));
    const headStudy = head[0].studyUid;
    expect(await studiesIn('lung-study')).toContain(headStudy);
    const orthanc = orthancDirect();
    try {
      const [found] = (await orthanc.lookup(headStudy)).filter((r) => r.Type === 'Study');
      await orthanc.delete(`/studies/${found.ID}`);
    } finally {
      await orthanc.close();
    }
    await waitFor(
      'the deleted study to leave lung-study',
      async () => !(await studiesIn('lung-study')).includes(headStudy),
      20_000,
    );
    const left = await gw.services.db.query('SELECT count(*)::int AS n FROM instances WHERE study_uid = $1', [
      headStudy,
    ]);
    expect(left.rows[0].n).toBe(0);
    // The patient's other study is untouched.
    expect(await instancesIn('lung-study')).toEqual(
      expect.arrayContaining(spine.filter((s) => s.studyUid !== headStudy).map((s) => s.sopUid)),
    );
  }, 120_000);
});

/**
 * Issue 15, defect 2: Orthanc answers AlreadyStored to a C-STORE of an object it holds and logs no change, so these
 * arrivals reach the gateway only through the incoming C-STORE filter (orthanc-config/aperture-arrivals.py).
 */
describe('modalities: C-STORE of objects already archived', () => {
  let gw: TestGateway;
  let tmp: string;
  const ct = samplesUnder(`${SAMPLES}/hierarchy/98892001`);
  const api = async (method: string, path: string, body?: unknown) => {
    const res = await fetch(`${gw.url}${path}`, {
      method,
      headers: body === undefined ? {} : { 'content-type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: text ? JSON.parse(text) : undefined };
  };
  /** SOP Instance UIDs QIDO-RS shows in a project's study. */
  const qidoInstances = async (project: string, studyUid: string): Promise<string[]> => {
    const res = await fetch(
      `${gw.url}/projects/${project}/dicom-web/studies/${studyUid}/instances?limit=1000`,
      {
        headers: { accept: 'application/dicom+json' },
      },
    );
    // 404: the project holds nothing of that study.
    if (res.status === 204 || res.status === 404) return (await res.body?.cancel(), []);
    expect(res.status).toBe(200);
    const body = (await res.json()) as Array<Record<string, { Value: string[] }>>;
    return body.map((i) => i['00080018'].Value[0]).sort();
  };
  const orthancCopies = async (sopUid: string): Promise<number> => {
    const orthanc = orthancDirect();
    try {
      return (await orthanc.lookup(sopUid)).filter((r) => r.Type === 'Instance').length;
    } finally {
      await orthanc.close();
    }
  };

  beforeAll(async () => {
    await resetStack();
    tmp = mkdtempSync(join(tmpdir(), 'aperture-rearrival-'));
    gw = await startGateway({ INDEXER_ENABLED: 'true', INDEXER_POLL_MS: '100' });
    for (const id of ['proj-a', 'proj-b', 'proj-c']) {
      expect((await api('POST', '/api/projects', { id, name: id })).status).toBe(201);
      // Orthanc 1.10 tells a plugin's C-STORE filter the calling AE title, not the called one (the Lua filter that
      // knows it also runs on every REST store, and crashed Orthanc under the STOW fuzz test): re-arrivals are
      // routed by who sends them.
      const rule = { kind: 'calling_aet', value: id.toUpperCase().replace('-', '') };
      expect((await api('POST', `/api/projects/${id}/routing`, rule)).status).toBe(201);
    }
  }, 120_000);
  afterAll(async () => {
    await gw?.close();
    rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it('re-sending a whole study from the modality of a second project makes it visible there within 2 s', async () => {
    const studyUid = ct[0].studyUid;
    const all = uniq(ct.map((s) => s.sopUid));
    await cstore([`${SAMPLES}/hierarchy/98892001`], { calledAet: 'APERTURE', callingAet: 'PROJA' });
    await waitFor(
      'the study in proj-a',
      async () => (await qidoInstances('proj-a', studyUid)).length === all.length,
    );
    expect(await qidoInstances('proj-b', studyUid)).toEqual([]);

    await cstore([`${SAMPLES}/hierarchy/98892001`], { calledAet: 'APERTURE', callingAet: 'PROJB' });
    const seen = await waitFor(
      'the re-sent study in proj-b',
      async () => {
        const got = await qidoInstances('proj-b', studyUid);
        return got.length === all.length && got;
      },
      2000,
    );
    expect(seen).toEqual(all);
    expect(await qidoInstances('proj-a', studyUid)).toEqual(all);
    expect(await orthancCopies(ct[0].sopUid)).toBe(1);
  }, 120_000);

  it('an object STOWed into A then C-STOREd under B is visible in both, one copy in Orthanc', async () => {
    const [copy] = syntheticCopies(ct[0].path, join(tmp, 'stowed'), 1);
    const bytes = readFileSync(copy.path);
    const body = multipartBody([bytes]);
    const res = await fetch(`${gw.url}/projects/proj-a/dicom-web/studies`, {
      method: 'POST',
      headers: { 'content-type': body.contentType, accept: 'application/dicom+json' },
      body: Buffer.concat([...body.chunks()]),
    });
    expect(res.status).toBe(200);
    await res.arrayBuffer();
    expect(await qidoInstances('proj-a', copy.studyUid)).toEqual([copy.sopInstanceUid]);

    await cstore([copy.path], { calledAet: 'APERTURE', callingAet: 'PROJB' });
    await waitFor(
      'the object in proj-b',
      async () => (await qidoInstances('proj-b', copy.studyUid)).length === 1,
      2000,
    );
    expect(await qidoInstances('proj-a', copy.studyUid)).toEqual([copy.sopInstanceUid]);
    expect(await orthancCopies(copy.sopInstanceUid)).toBe(1);
  }, 120_000);

  it('a changed data set under an archived SOP Instance UID grants nothing and overwrites nothing', async () => {
    const [copy] = syntheticCopies(ct[0].path, join(tmp, 'orig'), 1);
    await cstore([copy.path], { calledAet: 'APERTURE', callingAet: 'PROJA' });
    await waitFor(
      'the original in proj-a',
      async () => (await qidoInstances('proj-a', copy.studyUid)).length === 1,
    );
    const orthanc = orthancDirect();
    const archiveId = (await orthanc.lookup(copy.sopInstanceUid)).find((r) => r.Type === 'Instance')!.ID;
    const md5Before = await orthanc.attachmentMd5(archiveId);

    // Same UIDs and patient, one attribute changed: Orthanc keys it as the same instance.
    const ab = readFileSync(copy.path);
    const d = dcmjs.data.DicomMessage.readFile(ab.buffer.slice(ab.byteOffset, ab.byteOffset + ab.byteLength));
    d.dict['00081030'] = { vr: 'LO', Value: ['changed by a sender'] };
    const changed = join(tmp, 'changed.dcm');
    writeFileSync(changed, Buffer.from(d.write()));
    await cstore([changed], { calledAet: 'APERTURE', callingAet: 'PROJC' }).catch(() => undefined); // dcmsend may exit non-zero on a refusal

    // The refusal is synchronous (the filter answers before Orthanc stores), so nothing can show up later.
    expect(await qidoInstances('proj-c', copy.studyUid)).toEqual([]);
    expect(await orthanc.attachmentMd5(archiveId)).toBe(md5Before);
    expect(await orthancCopies(copy.sopInstanceUid)).toBe(1);
    const linked = await gw.services.db.query(
      'SELECT project_id FROM project_instances WHERE sop_instance_uid = $1 ORDER BY 1',
      [copy.sopInstanceUid],
    );
    expect(linked.rows).toEqual([{ project_id: 'proj-a' }]);
    await orthanc.close();
  }, 120_000);
});
