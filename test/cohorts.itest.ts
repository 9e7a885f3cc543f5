import type { Worker } from 'bullmq';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { deidentifier } from '../src/cohorts/deidentifier';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { initCohortWorker } from '../src/jobs/cohort';
import { closeQueues, initQueues } from '../src/jobs/queues';
import { type AuthStack, bearer, startAuthStack } from './helpers/auth';
import { waitFor } from './helpers/dimse';
import { orthancDirect, resetStack } from './helpers/gateway';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../shared/dicom-samples');
const HIERARCHY = join(SAMPLES, 'hierarchy');

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;
const str = (ds: DicomJson, tag: string): string | undefined => {
  const v = ds[tag]?.Value?.[0];
  if (v && typeof v === 'object' && 'Alphabetic' in v) return (v as { Alphabetic: string }).Alphabetic;
  return typeof v === 'string' ? v : undefined;
};

interface CohortView {
  id: string;
  state: string;
  research_project: string;
  profile: { name: string; version: string; edition: string; options: string[] };
  progress: {
    total: number;
    done: number;
    withheld: number;
    failed: number;
    withdrawn: number;
    bytes: number;
  };
  source_studies?: string[];
}

describe('research cohorts: de-identified copies, provenance, download and withdrawal', () => {
  let stack: AuthStack;
  let worker: Worker;
  let alice: Record<string, string>; // curator of lung-study (Keycloak group)
  let erin: Record<string, string>; // no role in lung-study
  const files = filesUnder(HIERARCHY);
  const sourceNames = new Set<string>();
  const sourceIds = new Set<string>();
  const sourceStudies = new Set<string>();

  const api = (path: string, init: RequestInit & { who?: Record<string, string> } = {}) =>
    fetch(`${stack.gw.url}${path}`, {
      ...init,
      headers: { ...(init.who ?? alice), ...(init.headers ?? {}) },
    });
  const post = (path: string, body: unknown, who = alice) =>
    api(path, {
      method: 'POST',
      who,
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const cohortOf = async (id: string, who = alice) =>
    (await (await api(`/api/cohorts/${id}`, { who })).json()) as CohortView;
  const finished = (id: string) =>
    waitFor(
      `cohort ${id} to finish`,
      async () => {
        const c = await cohortOf(id);
        return c.state === 'done' ? c : undefined;
      },
      120_000,
      250,
    );
  const mapping = async (id: string, which: 'uid' | 'patid') => {
    const text = await (await api(`/api/cohorts/${id}/${which}_mapping.csv`)).text();
    return text
      .trim()
      .split('\n')
      .slice(1)
      .map((l) => l.split(',') as [string, string]);
  };

  beforeAll(async () => {
    await resetStack();
    stack = await startAuthStack();
    const { services, config } = stack.gw;
    initQueues(config);
    worker = initCohortWorker({
      db: services.db,
      pacs: services.pacs,
      archive: services.archive,
      deid: deidentifier,
      config,
    });
    await ensureProject(services.db, { id: 'lung-study', name: 'Lung study' });
    for (const f of files) {
      const out = await ingestInstance(services, readFileSync(f), ['lung-study'], 'stow');
      if (!out.ok) throw new Error(`could not seed ${f}`);
    }
    const seeded = await services.db.query<{ study_uid: string; patient_name: string; patient_id: string }>(
      "SELECT study_uid, patient_name, patient_id FROM project_studies WHERE project_id = 'lung-study'",
    );
    for (const r of seeded.rows) {
      sourceStudies.add(r.study_uid);
      if (r.patient_name) sourceNames.add(r.patient_name);
      if (r.patient_id) sourceIds.add(r.patient_id);
    }
    alice = bearer(await stack.issuer.userToken('alice'));
    erin = bearer(await stack.issuer.userToken('erin'));
  }, 180_000);

  afterAll(async () => {
    await worker?.close();
    await closeQueues();
    await stack?.close();
  });

  let first: CohortView;

  it('creates a cohort into a new research project (202 + Location) and runs it to completion', async () => {
    const res = await post('/api/projects/lung-study/cohorts', {
      name: 'all of it',
      studies: [...sourceStudies],
      options: { retainLongitudinalModifiedDates: true },
      target: { new: { id: 'lung-research', name: 'Lung research' } },
    });
    expect(res.status).toBe(202);
    const body = (await res.json()) as { id: string; instances: number };
    expect(res.headers.get('location')).toBe(`/api/cohorts/${body.id}`);
    expect(body.instances).toBe(files.length);
    first = await finished(body.id);
    expect(first.progress).toMatchObject({ total: files.length, done: files.length, failed: 0, withheld: 0 });
    expect(first.progress.bytes).toBeGreaterThan(0);
    // Frozen provenance.
    expect(first.profile.edition).toBeTruthy();
    expect(first.profile.options.join(' ')).toMatch(/Modified Dates/i);
    expect(first.source_studies?.sort()).toEqual([...sourceStudies].sort());
  });

  it('research project QIDO finds only de-identified data: no source name or ID in any metadata', async () => {
    const studies = (await (await api('/projects/lung-research/dicom-web/studies')).json()) as DicomJson[];
    expect(studies).toHaveLength(sourceStudies.size);
    for (const s of studies) {
      const uid = str(s, '0020000D')!;
      expect(sourceStudies.has(uid)).toBe(false);
      expect(uid.startsWith('2.25.')).toBe(true);
      const meta = await (await api(`/projects/lung-research/dicom-web/studies/${uid}/metadata`)).text();
      for (const v of [...sourceNames, ...sourceIds]) expect(meta.includes(v)).toBe(false);
      for (const src of sourceStudies) expect(meta.includes(src)).toBe(false);
      expect(str(JSON.parse(meta)[0] as DicomJson, '00120062')).toBe('YES'); // Patient Identity Removed
    }
  });

  it('mappings are for source curators only; a research reader gets 404 there but may download', async () => {
    const uids = await mapping(first.id, 'uid');
    expect(uids.length).toBeGreaterThanOrEqual(files.length + sourceStudies.size);
    const patients = await mapping(first.id, 'patid');
    expect(patients.map((p) => p[0]).sort()).toEqual([...sourceIds].sort());
    // erin has no role anywhere near the cohort: everything is 404.
    for (const path of ['', '/uid_mapping.csv', '/patid_mapping.csv', '/archive'])
      expect((await api(`/api/cohorts/${first.id}${path}`, { who: erin })).status).toBe(404);
    // Alice (admin of the research project she created) grants erin reader by username.
    const grant = await api('/api/projects/lung-research/members/erin', {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ role: 'reader', kind: 'username' }),
    });
    expect(grant.status).toBe(201);
    expect((await api(`/api/cohorts/${first.id}/uid_mapping.csv`, { who: erin })).status).toBe(404);
    expect((await api(`/api/cohorts/${first.id}/patid_mapping.csv`, { who: erin })).status).toBe(404);
    expect((await api(`/api/cohorts/${first.id}/archive`, { who: erin, method: 'HEAD' })).status).toBe(200);
    const seen = (await (
      await api('/projects/lung-research/dicom-web/studies', { who: erin })
    ).json()) as unknown[];
    expect(seen).toHaveLength(sourceStudies.size);
    // But erin sees nothing of the source project.
    expect((await api('/projects/lung-study/dicom-web/studies', { who: erin })).status).toBe(404);
  });

  it('downloads a deterministic ZIP (two downloads identical) and a Range request returns the tail', async () => {
    const a = Buffer.from(await (await api(`/api/cohorts/${first.id}/archive`)).arrayBuffer());
    const second = await api(`/api/cohorts/${first.id}/archive`);
    expect(second.headers.get('content-type')).toBe('application/zip');
    const b = Buffer.from(await second.arrayBuffer());
    expect(Number(second.headers.get('content-length'))).toBe(b.length);
    expect(b.equals(a)).toBe(true);
    expect(a.subarray(0, 4).toString('latin1')).toBe('PK\u0003\u0004');
    // End of central directory: total entries = stored outputs.
    const eocd = a.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
    expect(a.readUInt16LE(eocd + 10)).toBe(files.length);
    const from = Math.floor(a.length / 3);
    const tail = await api(`/api/cohorts/${first.id}/archive`, { headers: { range: `bytes=${from}-` } });
    expect(tail.status).toBe(206);
    expect(tail.headers.get('content-range')).toBe(`bytes ${from}-${a.length - 1}/${a.length}`);
    expect(Buffer.from(await tail.arrayBuffer()).equals(a.subarray(from))).toBe(true);
    const outside = await api(`/api/cohorts/${first.id}/archive`, {
      headers: { range: `bytes=${a.length}-` },
    });
    expect(outside.status).toBe(416);
  });

  it("one patient's studies share one date offset", async () => {
    const uidMap = new Map(await mapping(first.id, 'uid'));
    const src = (await (await api('/projects/lung-study/dicom-web/studies')).json()) as DicomJson[];
    const out = (await (await api('/projects/lung-research/dicom-web/studies')).json()) as DicomJson[];
    const outByUid = new Map(out.map((s) => [str(s, '0020000D')!, s]));
    const offsets = new Map<string, Set<number>>();
    const day = (da: string) => Date.UTC(+da.slice(0, 4), +da.slice(4, 6) - 1, +da.slice(6, 8)) / 86_400_000;
    for (const s of src) {
      const o = outByUid.get(uidMap.get(str(s, '0020000D')!)!)!;
      const shift = day(str(o, '00080020')!) - day(str(s, '00080020')!);
      const pid = str(s, '00100020')!;
      if (!offsets.has(pid)) offsets.set(pid, new Set());
      offsets.get(pid)!.add(shift);
      expect(str(o, '00100020')).toMatch(/^RP[0-9A-F]{12}$/);
    }
    expect(offsets.size).toBe(sourceIds.size);
    for (const shifts of offsets.values()) {
      expect(shifts.size).toBe(1);
      expect([...shifts][0]).toBeLessThan(0);
    }
  });

  it('two research projects from one source share no UID and no pseudonym', async () => {
    const res = await post('/api/projects/lung-study/cohorts', {
      name: 'again',
      query: { PatientID: [...sourceIds][0] },
      target: { new: { id: 'lung-research-b', name: 'Lung research B' } },
    });
    expect(res.status).toBe(202);
    const other = await finished(((await res.json()) as { id: string }).id);
    expect(other.progress.failed).toBe(0);
    expect(other.progress.done).toBeGreaterThan(0);
    const a = await mapping(first.id, 'uid');
    const b = await mapping(other.id, 'uid');
    const newA = new Set(a.map((p) => p[1]));
    expect(b.filter((p) => newA.has(p[1]))).toEqual([]);
    const pa = new Set((await mapping(first.id, 'patid')).map((p) => p[1]));
    const pb = await mapping(other.id, 'patid');
    expect(pb).toHaveLength(1);
    expect(pa.has(pb[0][1])).toBe(false);
  });

  it('refuses STOW into a research project (403) and cohort creation by a non-curator (404)', async () => {
    const stow = await api('/projects/lung-research/dicom-web/studies', {
      method: 'POST',
      headers: { 'content-type': 'multipart/related; type="application/dicom"; boundary=x' },
      body: '--x\r\nContent-Type: application/dicom\r\n\r\n\r\n--x--\r\n',
    });
    expect(stow.status).toBe(403);
    const denied = await post(
      '/api/projects/lung-study/cohorts',
      { name: 'x', studies: [...sourceStudies], target: { new: { id: 'nope', name: 'x' } } },
      erin,
    );
    expect(denied.status).toBe(404);
  });

  let withdrawn: { pseudonym: string; removed: number } | undefined;

  it('withdraws a subject: its copies leave Orthanc, the index and the download, audited', async () => {
    const [, pseudonym] = (await mapping(first.id, 'patid'))[0];
    const before = await cohortOf(first.id);
    const studiesBefore = (await (
      await api('/projects/lung-research/dicom-web/studies')
    ).json()) as DicomJson[];
    const theirs = studiesBefore
      .filter((s) => str(s, '00100020') === pseudonym)
      .map((s) => str(s, '0020000D')!);
    expect(theirs.length).toBeGreaterThan(0);
    const orthanc = orthancDirect();
    const orthancBefore = (await orthanc.getJson<string[]>('/instances')).length;

    const res = await api(`/api/cohorts/${first.id}/subjects/${pseudonym}`, { method: 'DELETE' });
    expect(res.status).toBe(200);
    const { removed } = (await res.json()) as { removed: number };
    expect(removed).toBeGreaterThan(0);
    withdrawn = { pseudonym, removed };

    const after = await cohortOf(first.id);
    expect(after.progress.withdrawn).toBe(removed);
    expect(after.progress.done).toBe(before.progress.done - removed);
    const left = (await (
      await api(`/projects/lung-research/dicom-web/studies?PatientID=${pseudonym}`)
    ).json()) as unknown[];
    expect(left).toEqual([]);
    for (const uid of theirs) expect((await orthanc.lookup(uid)).length).toBe(0);
    expect((await orthanc.getJson<string[]>('/instances')).length).toBe(orthancBefore - removed);
    const zip = Buffer.from(await (await api(`/api/cohorts/${first.id}/archive`)).arrayBuffer());
    expect(zip.includes(Buffer.from(pseudonym))).toBe(false);
    expect(zip.readUInt16LE(zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06])) + 10)).toBe(
      after.progress.done,
    );

    await waitFor('the audit event', async () => {
      const r = await stack.gw.services.db.query(
        "SELECT count(*)::int AS n FROM audit_events WHERE action = 'cohort.withdraw-subject'",
      );
      return r.rows[0].n === 1;
    });
  });

  it('bars a withdrawn subject from a later cohort into the same research project and from a retry', async () => {
    const { pseudonym, removed } = withdrawn!;
    const res = await post('/api/projects/lung-study/cohorts', {
      name: 'everything again',
      studies: [...sourceStudies],
      options: { retainLongitudinalModifiedDates: true },
      target: { project: 'lung-research' },
    });
    expect(res.status).toBe(202);
    const again = await finished(((await res.json()) as { id: string }).id);
    expect(again.progress).toMatchObject({
      total: files.length,
      withdrawn: removed,
      done: files.length - removed,
      failed: 0,
      withheld: 0,
    });
    const reasons = (again.progress as unknown as { reasons: Array<{ reason: string; count: number }> })
      .reasons;
    expect(reasons).toEqual([{ state: 'withdrawn', reason: 'subject_withdrawn', count: removed }]);
    const theirs = async () =>
      (await (
        await api(`/projects/lung-research/dicom-web/studies?PatientID=${pseudonym}`)
      ).json()) as unknown[];
    expect(await theirs()).toEqual([]);
    // A retry puts failed instances back to work, never withdrawn ones.
    expect((await post(`/api/cohorts/${again.id}/retry`, {})).status).toBe(202);
    const retried = await finished(again.id);
    expect(retried.progress.withdrawn).toBe(removed);
    expect(retried.progress.done).toBe(files.length - removed);
    expect(await theirs()).toEqual([]);
    // The earlier cohort's download still holds no copy of the subject.
    const zip = Buffer.from(await (await api(`/api/cohorts/${first.id}/archive`)).arrayBuffer());
    expect(zip.includes(Buffer.from(pseudonym))).toBe(false);
  });

  it("audits every worker step under the requester, in the source's and the research project's audit API", async () => {
    interface Row {
      principal: string;
      action: string;
      project_id: string;
      bytes: string;
      detail: { cohort: string; instances: number; counts: Record<string, number> };
    }
    const carol = bearer(await stack.issuer.userToken('carol')); // global admin
    const sum = (rows: Row[], action: string, outcome: string) =>
      rows
        .filter((r) => r.action === action && r.detail.cohort === first.id)
        .reduce((n, r) => n + (r.detail.counts[outcome] ?? 0), 0);
    const source = (await (
      await api('/api/audit?project=lung-study&action=cohort.job.*&limit=500', { who: carol })
    ).json()) as Row[];
    for (const step of ['read', 'mapping', 'deidentify', 'leak-check'])
      expect(sum(source, `cohort.job.${step}`, 'ok')).toBe(files.length);
    const requester = source.find((r) => r.detail.cohort === first.id)!.principal;
    expect(source.filter((r) => r.detail.cohort === first.id).every((r) => r.principal === requester)).toBe(
      true,
    );
    expect(source.some((r) => r.action === 'cohort.job.store')).toBe(false);
    // Alice administers the research project she created: its audit trail shows what was stored into it.
    const research = (await (
      await api('/api/projects/lung-research/audit?action=cohort.job.*&limit=500')
    ).json()) as Row[];
    expect(sum(research, 'cohort.job.store', 'ok')).toBe(files.length);
    const storedBytes = research
      .filter((r) => r.action === 'cohort.job.store' && r.detail.cohort === first.id)
      .reduce((n, r) => n + Number(r.bytes), 0);
    expect(storedBytes).toBe(first.progress.bytes);
    // The later cohort's barred subject is counted as such, and no row carries an identifier of the objects.
    expect(research.length + source.length).toBeGreaterThan(0);
    const all = JSON.stringify([...source, ...research]);
    for (const v of [...sourceNames, ...sourceIds, ...sourceStudies]) expect(all.includes(v)).toBe(false);
    expect(all).toContain('"barred"');
  });
});
