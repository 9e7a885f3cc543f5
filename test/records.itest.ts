import type { Worker } from 'bullmq';
import ExcelJS from 'exceljs';
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import dcmjs from 'dcmjs';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { unzip } from './helpers/zip';
import { ZipFile } from 'yazl';
import { getAuditTrail } from '../src/auth/audit';
import { deidentifier } from '../src/cohorts/deidentifier';
import { ensureProject } from '../src/index-db/projects';
import { sweepDeletedBlobs } from '../src/records/blob-gc';
import { FsFileStore } from '../src/records/file-store';
import { ingestInstance } from '../src/ingest/ingest';
import { initCohortWorker } from '../src/jobs/cohort';
import { closeQueues, initQueues } from '../src/jobs/queues';
import { generateInstances } from '../tools/synth';
import { type AuthStack, bearer, clientCredentialsToken, startAuthStack } from './helpers/auth';
import { waitFor } from './helpers/dimse';
import { resetStack } from './helpers/gateway';

type Headers = Record<string, string>;
interface Outcome {
  row?: number;
  action?: string;
  key?: string;
  changed?: string[];
  errors?: Array<{ field: string; message: string }>;
  summary?: Record<string, number>;
}
type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const days = (iso: string) =>
  Date.parse(`${iso.replace(/^(\d{4})-?(\d{2})-?(\d{2})$/, '$1-$2-$3')}T00:00:00Z`) / 86_400_000;

async function zipOf(files: Array<{ path: string; body: Buffer }>): Promise<Buffer> {
  const z = new ZipFile();
  for (const f of files) z.addBuffer(f.body, f.path);
  z.end();
  const chunks: Buffer[] = [];
  for await (const c of z.outputStream) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}

describe('research records beside the images: types, import, files, queries, cohorts', () => {
  let stack: AuthStack;
  let worker: Worker;
  let alice: Headers; // curator of lung-study
  let erin: Headers; // made reader of lung-study below
  let bob: Headers; // no role in lung-study
  let scripts: Headers; // contributor of lung-study (service account)
  const filesDir = mkdtempSync(join(tmpdir(), 'aperture-records-'));
  const P = '/api/projects/lung-study';

  // 4 CT patients and 4 MR patients with images; 192 more patients only in the spreadsheet.
  const ct = [
    ...generateInstances({
      patients: 4,
      studiesPerPatient: 1,
      seriesPerStudy: 1,
      instancesPerSeries: 1,
      modalities: ['CT'],
      rows: 16,
      cols: 16,
      seed: 'rec-ct',
    }),
  ];
  const mr = [
    ...generateInstances({
      patients: 4,
      studiesPerPatient: 1,
      seriesPerStudy: 1,
      instancesPerSeries: 1,
      modalities: ['MR'],
      rows: 16,
      cols: 16,
      seed: 'rec-mr',
    }),
  ];
  const imaged = [...ct, ...mr].map((i) => i.patientId);
  const sheetOnly = Array.from({ length: 192 }, (_, i) => `XLS${String(i).padStart(5, '0')}`);
  const patients = [...imaged, ...sheetOnly];
  // T3: two of the CT patients, two of the MR patients, every third sheet-only patient.
  const t3 = new Set([
    ct[0].patientId,
    ct[2].patientId,
    mr[1].patientId,
    mr[3].patientId,
    ...sheetOnly.filter((_, i) => i % 3 === 0),
  ]);
  const sourceNames = new Set<string>();

  const api = (path: string, init: RequestInit & { who?: Headers } = {}) =>
    fetch(`${stack.gw.url}${path}`, {
      ...init,
      headers: { ...(init.who ?? alice), ...((init.headers as Headers) ?? {}) },
    });
  const send = (method: string, path: string, body: unknown, who = alice) =>
    api(path, { method, who, headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  const json = async <T>(res: Response, status: number): Promise<T> => {
    const text = await res.text();
    if (res.status !== status) throw new Error(`expected ${status}, got ${res.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  };
  const importSheet = async (body: Buffer, name: string, dryRun: boolean, who = alice) => {
    const form = new FormData();
    form.set(
      'mapping',
      JSON.stringify({
        subject: 'Patient ID',
        fields: {
          baseline_id: 'Baseline ID',
          stage: 'T stage',
          diagnosis_date: 'Diagnosis',
          os_months: 'OS (months)',
          dead: 'Deceased',
          notes: 'Notes',
        },
      }),
    );
    form.set('file', new Blob([body]), name);
    const res = await api(`${P}/record-types/Baseline/import${dryRun ? '?dry_run=true' : ''}`, {
      method: 'POST',
      who,
      body: form,
    });
    return res;
  };
  const cohortDone = (id: string) =>
    waitFor(
      'the cohort to finish',
      async () =>
        (await json<{ state: string }>(await api(`/api/cohorts/${id}`), 200)).state === 'done'
          ? true
          : undefined,
      120_000,
      250,
    );
  const lines = async (res: Response): Promise<Outcome[]> => {
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toMatch(/ndjson/);
    return (await res.text())
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as Outcome);
  };

  /** The Baseline sheet: 200 rows, 5 of them bad in a different way each (rows 11, 31, 51, 71, 91 of the sheet). */
  const baselineRows = (changed = false): string[][] => {
    const rows = patients.map((pid, i) => [
      pid,
      `B-${pid}`,
      t3.has(pid) ? 'T3' : ['T1', 'T2', 'T4'][Math.floor(i / 3) % 3],
      `2019-${String((i % 12) + 1).padStart(2, '0')}-${String((i % 27) + 1).padStart(2, '0')}`,
      String(6 + (i % 60)),
      i % 4 === 0 ? 'yes' : 'no',
      `seen by Dr Ward; patient ${pid}`,
    ]);
    rows[9][2] = 'T9'; // stage not in the code list
    rows[29][4] = 'many'; // os_months not a number
    rows[49][3] = '2019-13-40'; // diagnosis_date not a date
    rows[69][1] = ''; // baseline_id (the key) missing
    rows[89][1] = rows[88][1]; // baseline_id repeats row 90's
    if (changed) {
      rows[100][2] = rows[100][2] === 'T1' ? 'T2' : 'T1';
      rows[150][4] = '99';
      rows[199][5] = rows[199][5] === 'yes' ? 'no' : 'yes';
    }
    return rows;
  };
  /** Patients whose imported Baseline says T3: the sheet's T3 rows less the refused ones. */
  const importedT3 = () =>
    baselineRows(true)
      .filter((r, i) => r[2] === 'T3' && ![9, 29, 49, 69, 89].includes(i))
      .map((r) => r[0]);
  const header = ['Patient ID', 'Baseline ID', 'T stage', 'Diagnosis', 'OS (months)', 'Deceased', 'Notes'];
  const csv = (rows: string[][]) =>
    Buffer.from(
      [header, ...rows]
        .map((r) => r.map((c) => (/[",;]/.test(c) ? `"${c.replace(/"/g, '""')}"` : c)).join(','))
        .join('\r\n') + '\r\n',
    );

  beforeAll(async () => {
    await resetStack();
    stack = await startAuthStack({ RECORDS_FILES_DIR: filesDir, RECORDS_IMPORT_BATCH: '64' });
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
    for (const i of [...ct, ...mr]) {
      const out = await ingestInstance(services, i.buffer, ['lung-study'], 'stow');
      if (!out.ok) throw new Error('could not seed a synthetic instance');
    }
    const names = await services.db.query<{ patient_name: string }>(
      "SELECT patient_name FROM project_studies WHERE project_id = 'lung-study'",
    );
    for (const r of names.rows) if (r.patient_name) sourceNames.add(r.patient_name);
    alice = bearer(await stack.issuer.userToken('alice'));
    erin = bearer(await stack.issuer.userToken('erin'));
    bob = bearer(await stack.issuer.userToken('bob'));
    scripts = bearer(await clientCredentialsToken(stack.issuer));
    const dave = bearer(await stack.issuer.userToken('dave'));
    await json(await send('PUT', `${P}/members/erin`, { role: 'reader', kind: 'username' }, dave), 201);
  }, 180_000);

  afterAll(async () => {
    await worker?.close();
    await closeQueues();
    await stack?.close();
    rmSync(filesDir, { recursive: true, force: true });
  });

  it('defines Baseline, Treatment, Fraction and Analysis types as versioned JSON Schemas; bad ones name the field', async () => {
    const bad = await send('PUT', `${P}/record-types/Broken`, {
      key: 'id',
      schema: {
        type: 'object',
        properties: {
          id: { type: 'string' },
          dose: { type: 'number', 'x-unit': 3 },
          when: { type: 'string', format: 'email' },
        },
        required: ['id', 'nope'],
      },
    });
    const msg = (await json<{ errors: Array<{ message: string }> }>(bad, 400)).errors[0].message;
    expect(msg).toContain('schema.properties.dose.x-unit');
    expect(msg).toContain('schema.properties.when.format');
    expect(msg).toContain('schema.required: nope');

    const baseline = {
      key: 'baseline_id',
      schema: {
        type: 'object',
        properties: {
          baseline_id: { type: 'string' },
          stage: { type: 'string', enum: ['T1', 'T2', 'T3', 'T4'] },
          diagnosis_date: { type: 'string', format: 'date' },
          os_months: { type: 'number', minimum: 0, 'x-unit': 'mo' },
          dead: { type: 'boolean' },
          notes: { type: 'string', maxLength: 2000 },
        },
        required: ['baseline_id', 'stage'],
        'x-time-to-event': { time: 'os_months', event: 'dead' },
      },
    };
    expect(
      (await json<{ version: number }>(await send('PUT', `${P}/record-types/Baseline`, baseline), 201))
        .version,
    ).toBe(1);
    const treatment = (required: string[]) => ({
      key: 'treatment_id',
      schema: {
        type: 'object',
        properties: {
          treatment_id: { type: 'string' },
          technique: { type: 'string', enum: ['protons', 'carbon', 'photons'] },
          total_dose: { type: 'number', minimum: 0, 'x-unit': 'Gy' },
          start_date: { type: 'string', format: 'date' },
          planning_ct: { type: 'string', 'x-ref': 'study' },
          notes: { type: 'string' },
        },
        required,
      },
    });
    await json(await send('PUT', `${P}/record-types/Treatment`, treatment(['treatment_id'])), 201);
    const v2 = await json<{ version: number }>(
      await send('PUT', `${P}/record-types/Treatment`, treatment(['treatment_id', 'technique'])),
      200,
    );
    expect(v2.version).toBe(2);
    const child = (key: string, props: Record<string, unknown>) => ({
      key,
      parent: 'Treatment',
      schema: { type: 'object', properties: { [key]: { type: 'string' }, ...props }, required: [key] },
    });
    await json(
      await send(
        'PUT',
        `${P}/record-types/Fraction`,
        child('fraction_id', {
          dose: { type: 'number', 'x-unit': 'Gy' },
          date: { type: 'string', format: 'date' },
        }),
      ),
      201,
    );
    await json(
      await send(
        'PUT',
        `${P}/record-types/Analysis`,
        child('analysis_id', { gamma_pass: { type: 'number', minimum: 0, maximum: 100, 'x-unit': '%' } }),
      ),
      201,
    );
    const types = await json<Array<{ name: string; version: number; parent: string | null }>>(
      await api(`${P}/record-types`),
      200,
    );
    expect(types.map((t) => `${t.name}@${t.version}:${t.parent ?? ''}`)).toEqual([
      'Analysis@1:Treatment',
      'Baseline@1:',
      'Fraction@1:Treatment',
      'Treatment@2:',
    ]);
    // Fields keep the order the schema was written in (jsonb alone would give dead, notes, stage, os_months, …).
    const written = Object.keys(baseline.schema.properties);
    const shown = await json<{ schema: { properties: object }; fields: Array<{ name: string }> }>(
      await api(`${P}/record-types/Baseline`),
      200,
    );
    expect(Object.keys(shown.schema.properties)).toEqual(written);
    expect(shown.fields.map((f) => f.name)).toEqual(written);
    const listed = (types as unknown as Array<{ name: string; schema: { properties: object } }>).find(
      (t) => t.name === 'Baseline',
    )!;
    expect(Object.keys(listed.schema.properties)).toEqual(written);
  });

  it('imports 200 rows (dry run first), refusing the 5 bad ones with the field named; a re-import applies only the changes', async () => {
    // Roles: a contributor may not import.
    expect((await importSheet(csv(baselineRows()), 'baseline.csv', true, scripts)).status).toBe(403);
    const dry = await lines(await importSheet(csv(baselineRows()), 'baseline.csv', true));
    expect(dry.at(-1)?.summary).toEqual({ rows: 200, create: 195, change: 0, unchanged: 0, refuse: 5 });
    const refused = dry.filter((o) => o.action === 'refuse');
    expect(refused.map((o) => [o.row, o.errors?.map((e) => e.field)])).toEqual([
      [11, ['stage']],
      [31, ['os_months']],
      [51, ['diagnosis_date']],
      [71, ['baseline_id']],
      [91, ['baseline_id']],
    ]);
    expect(refused[4].errors?.[0].message).toBe('repeats the key of row 90');
    // A dry run writes nothing.
    const none = await json<{ subjects: unknown[] }>(
      await send('POST', `${P}/subjects/search`, {
        records: [{ type: 'Baseline', field: 'stage', in: ['T1', 'T2', 'T3', 'T4'] }],
      }),
      200,
    );
    expect(none.subjects).toHaveLength(0);

    const first = await lines(await importSheet(csv(baselineRows()), 'baseline.csv', false));
    expect(first.at(-1)?.summary).toEqual({ rows: 200, create: 195, change: 0, unchanged: 0, refuse: 5 });

    // The corrected sheet comes back as XLSX with three changed rows.
    const wb = new ExcelJS.Workbook();
    const ws = wb.addWorksheet('Baseline');
    ws.addRow(header);
    for (const r of baselineRows(true)) ws.addRow(r);
    const xlsx = Buffer.from(await wb.xlsx.writeBuffer());
    const again = await lines(await importSheet(xlsx, 'baseline.xlsx', false));
    expect(again.at(-1)?.summary).toEqual({ rows: 200, create: 0, change: 3, unchanged: 192, refuse: 5 });
    expect(again.filter((o) => o.action === 'change').map((o) => [o.row, o.changed])).toEqual([
      [102, ['stage']],
      [152, ['os_months']],
      [201, ['dead']],
    ]);

    // Export: only the three changed records are at revision 2.
    const exported = await api(`${P}/record-types/Baseline/export?format=csv`);
    expect(exported.headers.get('content-type')).toMatch(/text\/csv/);
    const table = (await exported.text())
      .trim()
      .split('\n')
      .map((l) => l.split(','));
    const rev = table[0].indexOf('revision');
    expect(table).toHaveLength(196);
    expect(
      table
        .slice(1)
        .filter((r) => r[rev] === '2')
        .map((r) => r[0])
        .sort(),
    ).toEqual([patients[100], patients[150], patients[199]].sort());
    const x = await api(`${P}/record-types/Baseline/export?format=xlsx`);
    const back = new ExcelJS.Workbook();
    await back.xlsx.load(Buffer.from(await x.arrayBuffer()) as unknown as ArrayBuffer);
    expect(back.worksheets[0].rowCount).toBe(196);

    // The import is in the audit trail with its outcome (written once each response ended).
    const audit = await waitFor('the three imports in the audit trail', async () => {
      await getAuditTrail()?.flush();
      const r = await stack.gw.services.db.query<{
        action: string;
        detail: { summary: Record<string, number> };
      }>(
        "SELECT action, detail FROM audit_events WHERE action LIKE 'records.import%' AND outcome = 200 ORDER BY id",
      );
      return r.rows.length >= 3 ? r : undefined;
    });
    expect(audit.rows.map((r) => [r.action, r.detail.summary.create, r.detail.summary.change])).toEqual([
      ['records.import.dry-run', 195, 0],
      ['records.import', 195, 0],
      ['records.import', 0, 3],
    ]);
  });

  let treatmentPath = '';
  let subjectOfCt0 = '';

  it('reads the column names of an uploaded XLSX or CSV for the mapping; the export keeps the schema order', async () => {
    const wb = new ExcelJS.Workbook();
    const ws = wb.addWorksheet('Baseline');
    ws.addRow(header);
    ws.addRow(baselineRows()[0]);
    const xlsx = Buffer.from(await wb.xlsx.writeBuffer());
    const columnsOf = async (body: Buffer, name: string, who = alice) => {
      const form = new FormData();
      form.set('file', new Blob([body]), name);
      return api(`${P}/record-types/Baseline/import/columns`, { method: 'POST', who, body: form });
    };
    expect(await json(await columnsOf(xlsx, 'sheet.xlsx'), 200)).toEqual({ format: 'xlsx', columns: header });
    expect(await json(await columnsOf(Buffer.from('Patient ID;T stage\r\nP1;T2\r\n'), 'h.csv'), 200)).toEqual(
      {
        format: 'csv',
        columns: ['Patient ID', 'T stage'],
      },
    );
    // Not a curator, not an XLSX, no file: refused, nothing stored.
    expect((await columnsOf(xlsx, 'sheet.xlsx', erin)).status).toBe(403);
    expect(
      (await json<{ errors: Array<{ message: string }> }>(await columnsOf(Buffer.from('no'), 'x.xlsx'), 400))
        .errors[0].message,
    ).toMatch(/XLSX/);
    const empty = new FormData();
    empty.set('other', 'x');
    expect(
      (await api(`${P}/record-types/Baseline/import/columns`, { method: 'POST', body: empty })).status,
    ).toBe(400);

    const exported = (await (await api(`${P}/record-types/Baseline/export?format=csv`)).text()).split(
      /\r?\n/,
    )[0];
    const fieldCols = exported
      .split(',')
      .filter((c) => c in { baseline_id: 1, stage: 1, diagnosis_date: 1, os_months: 1, dead: 1, notes: 1 });
    expect(fieldCols).toEqual(['baseline_id', 'stage', 'diagnosis_date', 'os_months', 'dead', 'notes']);
  });

  it('writes a treatment with fractions for a subject, validating fields and study references', async () => {
    const subjects = await json<Array<{ id: string; patient_id: string; studies: number; records: number }>>(
      await api(`${P}/subjects?limit=1000`),
      200,
    );
    // 195 imported rows, one subject each; the refused rows created nobody.
    expect(subjects).toHaveLength(195);
    const s = subjects.find((x) => x.patient_id === ct[0].patientId)!;
    expect(s).toMatchObject({ studies: 1, records: 1 });
    subjectOfCt0 = s.id;
    const base = `${P}/subjects/${s.id}/records`;
    const bad = await send('POST', `${base}/Treatment`, {
      data: {
        treatment_id: `TX-${ct[0].patientId}`,
        technique: 'magic',
        total_dose: -1,
        planning_ct: '1.2.3.4',
      },
    });
    const msg = (await json<{ errors: Array<{ message: string }> }>(bad, 400)).errors[0].message;
    expect(msg).toMatch(/technique: must be one of protons, carbon, photons/);
    expect(msg).toMatch(/total_dose: must be >= 0/);
    expect(msg).toMatch(/planning_ct: is not a study of this project/);
    const made = await json<{ id: string; type_version: number }>(
      await send(
        'POST',
        `${base}/Treatment`,
        {
          data: {
            treatment_id: `TX-${ct[0].patientId}`,
            technique: 'protons',
            total_dose: 60,
            start_date: '2020-03-02',
            planning_ct: ct[0].studyInstanceUid,
            notes: `for ${ct[0].patientId}`,
          },
        },
        scripts,
      ),
      201,
    );
    expect(made.type_version).toBe(2);
    treatmentPath = `${base}/${made.id}`;
    for (let i = 1; i <= 3; i++)
      await json(
        await send(
          'POST',
          `${base}/Fraction`,
          {
            parent: `TX-${ct[0].patientId}`,
            data: { fraction_id: `F-${ct[0].patientId}-${i}`, dose: 2, date: `2020-03-0${i + 1}` },
          },
          scripts,
        ),
        201,
      );
    const orphan = await send(
      'POST',
      `${base}/Fraction`,
      { parent: 'TX-none', data: { fraction_id: 'F-x' } },
      scripts,
    );
    expect((await json<{ errors: Array<{ message: string }> }>(orphan, 400)).errors[0].message).toMatch(
      /^parent: /,
    );
    // A reader reads but does not write.
    expect((await api(base, { who: erin })).status).toBe(200);
    expect(
      (
        await send(
          'POST',
          `${base}/Fraction`,
          { parent: `TX-${ct[0].patientId}`, data: { fraction_id: 'F-e' } },
          erin,
        )
      ).status,
    ).toBe(403);
    const all = await json<Array<{ type: string; parent: string | null }>>(await api(base), 200);
    expect(all.filter((r) => r.type === 'Fraction' && r.parent === made.id)).toHaveLength(3);
  });

  it('attaches 50 non-DICOM files (parts and a ZIP) to a treatment and gives them back byte-identical', async () => {
    const files = Array.from({ length: 50 }, (_, i) => ({
      path: i < 40 ? `calibration/run-${i}.dat` : `simulation/out-${i}.csv`,
      body: randomBytes(1 + ((i * 7919) % 200_000)),
    }));
    const form = new FormData();
    for (const f of files.slice(0, 40)) form.append('file', new Blob([f.body]), f.path);
    form.append('zip', new Blob([await zipOf(files.slice(40))], { type: 'application/zip' }), 'sim.zip');
    const stored = await json<Array<{ path: string; sha256: string; size: number; version: number }>>(
      await api(`${treatmentPath}/files`, { method: 'POST', who: scripts, body: form }),
      201,
    );
    expect(stored).toHaveLength(50);
    for (const f of files)
      expect(stored.find((s) => s.path === f.path)).toMatchObject({
        sha256: sha(f.body),
        size: f.body.length,
        version: 1,
      });

    const zip = await unzip(
      Buffer.from(await (await api(`${treatmentPath}/files.zip`, { who: erin })).arrayBuffer()),
    );
    expect(zip.size).toBe(50);
    for (const f of files) expect(zip.get(f.path)?.equals(f.body)).toBe(true);

    // One file alone, and a second version of it.
    const listed = await json<Array<{ id: string; path: string }>>(await api(`${treatmentPath}/files`), 200);
    const one = listed.find((l) => l.path === files[7].path)!;
    const got = await api(`${P}/subjects/${subjectOfCt0}/files/${one.id}`);
    expect(Buffer.from(await got.arrayBuffer()).equals(files[7].body)).toBe(true);
    expect(got.headers.get('digest')).toBe(
      `sha-256=${createHash('sha256').update(files[7].body).digest('base64')}`,
    );
    const v2 = new FormData();
    v2.append('file', new Blob([Buffer.from('recalibrated')]), files[7].path);
    expect(
      (
        await json<Array<{ version: number }>>(
          await api(`${treatmentPath}/files`, { method: 'POST', who: scripts, body: v2 }),
          201,
        )
      )[0].version,
    ).toBe(2);
    expect(await json<unknown[]>(await api(`${treatmentPath}/files?versions=all`), 200)).toHaveLength(51);
    // The bytes are in the file store, not in PostgreSQL.
    const { rows } = await stack.gw.services.db.query<{ n: string }>(
      'SELECT pg_column_size(f.*)::text AS n FROM record_files f ORDER BY 1 DESC LIMIT 1',
    );
    expect(Number(rows[0].n)).toBeLessThan(1000);
    // A path that climbs out of its folder is refused.
    const evil = new FormData();
    evil.append('file', new Blob([Buffer.from('x')]), '../../etc/passwd');
    expect((await api(`${treatmentPath}/files`, { method: 'POST', who: scripts, body: evil })).status).toBe(
      400,
    );
  });

  it('finds "stage T3 with a CT" exactly, combines ranges with imaging, and answers 404 outside the project', async () => {
    const search = (body: unknown, who = alice) => send('POST', `${P}/subjects/search`, body, who);
    const found = await json<{ subjects: Array<{ patient_id: string; studies: string[] }> }>(
      await search(
        { records: [{ type: 'Baseline', field: 'stage', in: ['T3'] }], imaging: { modality: 'CT' } },
        erin,
      ),
      200,
    );
    expect(found.subjects.map((s) => s.patient_id).sort()).toEqual([ct[0].patientId, ct[2].patientId].sort());
    expect(found.subjects.find((s) => s.patient_id === ct[0].patientId)?.studies).toEqual([
      ct[0].studyInstanceUid,
    ]);
    const t3NoImaging = await json<{ subjects: Array<{ patient_id: string }> }>(
      await search({ records: [{ type: 'Baseline', field: 'stage', eq: 'T3' }], limit: 1000 }),
      200,
    );
    expect(t3NoImaging.subjects.map((s) => s.patient_id).sort()).toEqual(importedT3().sort());
    const ranged = await json<{ subjects: Array<{ patient_id: string }> }>(
      await search({
        records: [
          { type: 'Treatment', field: 'total_dose', min: 50, max: 70 },
          { type: 'Baseline', field: 'diagnosis_date', min: '2019-01-01' },
        ],
        imaging: { modality: 'CT', date_from: '2000-01-01' },
      }),
      200,
    );
    expect(ranged.subjects.map((s) => s.patient_id)).toEqual([ct[0].patientId]);
    const badField = await search({ records: [{ type: 'Baseline', field: 'stage', min: 3 }] });
    expect((await json<{ errors: Array<{ message: string }> }>(badField, 400)).errors[0].message).toMatch(
      /records\.0: min\/max need a number or date field/,
    );
    // bob has no role in lung-study: every records URL is a 404, as for a project that does not exist.
    for (const path of [
      `${P}/subjects`,
      `${P}/record-types`,
      `${treatmentPath}`,
      `${treatmentPath}/files.zip`,
      `${P}/record-types/Baseline/summary`,
    ])
      expect((await api(path, { who: bob })).status).toBe(404);
    expect((await search({ records: [] }, bob)).status).toBe(404);
    expect((await api('/api/projects/no-such-project/subjects')).status).toBe(404);
  });

  it('summarises fields and draws Kaplan–Meier curves by stage (JSON, SVG, PNG)', async () => {
    const s = await json<{
      records: number;
      fields: Array<{ field: string; counts?: Record<string, number>; n: number }>;
      kaplan_meier: Array<{ group: string; n: number; steps: Array<{ survival: number }> }>;
    }>(await api(`${P}/record-types/Baseline/summary?group=stage`, { who: erin }), 200);
    expect(s.records).toBe(195);
    const stage = s.fields.find((f) => f.field === 'stage')!;
    expect(Object.values(stage.counts!).reduce((a, b) => a + b, 0)).toBe(195);
    expect(stage.counts!.T3).toBe(importedT3().length);
    expect(s.fields.find((f) => f.field === 'notes')).toEqual(
      expect.not.objectContaining({ counts: expect.anything() }),
    );
    expect(s.kaplan_meier.map((c) => c.group)).toEqual(['T1', 'T2', 'T3', 'T4']);
    for (const c of s.kaplan_meier) {
      const surv = c.steps.map((x) => x.survival);
      expect(surv.every((v, i) => i === 0 || v <= surv[i - 1])).toBe(true);
    }
    const svg = await api(`${P}/record-types/Baseline/km.svg?group=stage`);
    expect(svg.headers.get('content-type')).toMatch(/image\/svg\+xml/);
    expect(await svg.text()).toMatch(/<svg[\s\S]*T3[\s\S]*<\/svg>/);
    const png = Buffer.from(await (await api(`${P}/record-types/Baseline/km.png`)).arrayBuffer());
    expect(png.subarray(0, 8).toString('hex')).toBe('89504e470d0a1a0a');
    expect((await api(`${P}/record-types/Treatment/km.svg`)).status).toBe(400);
  });

  it('a de-identified cohort carries the records as CSV: no source identifier in it, dates shifted like the images', async () => {
    const studies = ct.map((i) => i.studyInstanceUid);
    const res = await send('POST', `${P}/cohorts`, {
      name: 'CT with records',
      studies,
      records: true,
      options: { retainLongitudinalModifiedDates: true },
      target: { new: { id: 'rec-research', name: 'Records research' } },
    });
    const { id } = await json<{ id: string }>(res, 202);
    await cohortDone(id);
    const archive = Buffer.from(await (await api(`/api/cohorts/${id}/archive`)).arrayBuffer());
    const entries = await unzip(archive);
    const baselineCsv = entries.get('records/Baseline.csv')!;
    const treatmentCsv = entries.get('records/Treatment.csv')!;
    expect(baselineCsv).toBeDefined();
    expect(entries.get('records/Fraction.csv')).toBeDefined();
    // Byte scan: no Patient ID, name, record key, free text or source UID of the source in any records entry.
    const needles = [
      ...imaged,
      ...sourceNames,
      ...[...sourceNames].flatMap((n) => n.split('^').filter((p) => p.length > 3)),
      'B-SYN',
      'TX-SYN',
      'F-SYN',
      'Dr Ward',
      ...studies,
      ...ct.map((i) => baselineRows()[patients.indexOf(i.patientId)][3]),
    ];
    for (const [path, body] of entries)
      if (path.startsWith('records/'))
        for (const n of needles)
          expect({ path, leaked: body.includes(Buffer.from(n)) ? n : null }).toEqual({ path, leaked: null });

    // Dates: the same per-patient offset as the images' Study Date.
    const mapping = new Map(
      (await (await api(`/api/cohorts/${id}/patid_mapping.csv`)).text())
        .trim()
        .split('\n')
        .slice(1)
        .map((l) => l.split(',').reverse() as [string, string]),
    );
    const sourceDate = new Map<string, string>();
    for (const i of ct) {
      const meta = (await (
        await api(`${P.replace('/api', '')}/dicom-web/studies/${i.studyInstanceUid}/metadata`)
      ).json()) as DicomJson[];
      sourceDate.set(i.patientId, meta[0]['00080020'].Value![0] as string);
    }
    const research = (await (
      await api('/projects/rec-research/dicom-web/studies?includefield=00080020')
    ).json()) as DicomJson[];
    expect(research).toHaveLength(4);
    const rows = baselineCsv
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.split(','));
    const col = (name: string) => rows[0].indexOf(name);
    expect(rows[0]).not.toContain('notes');
    expect(rows).toHaveLength(5);
    const diagnosisOf = new Map(baselineRows().map((r) => [r[0], r[3]]));
    for (const s of research) {
      const pseudonym = s['00100020'].Value![0] as string;
      const source = mapping.get(pseudonym)!;
      const imageShift = days(s['00080020'].Value![0] as string) - days(sourceDate.get(source)!);
      expect(imageShift).toBeLessThan(-364);
      const row = rows.find((r) => r[col('subject')] === pseudonym)!;
      expect(days(row[col('diagnosis_date')]) - days(diagnosisOf.get(source)!)).toBe(imageShift);
    }
    // The treatment's planning CT is the copy's Study Instance UID.
    const t = treatmentCsv
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.split(','));
    const ref = t[1][t[0].indexOf('planning_ct')];
    expect(research.map((s) => s['0020000D'].Value![0])).toContain(ref);
    // The research project's readers get the cohort's summary from the same de-identified rows.
    const km = await api(`/api/cohorts/${id}/records/Baseline/km.svg`);
    expect(km.status).toBe(200);
    const summary = await json<{ records: number }>(
      await api(`/api/cohorts/${id}/records/Baseline/summary`),
      200,
    );
    expect(summary.records).toBe(4);
    expect((await api(`/api/cohorts/${id}/records/Baseline/summary`, { who: bob })).status).toBe(404);
  });

  it('makes a cohort from a records search ("stage T3 with a CT") or from the subjects it returned', async () => {
    const query = { records: [{ type: 'Baseline', field: 'stage', eq: 'T3' }], imaging: { modality: 'CT' } };
    const expected = ct
      .filter((i) => importedT3().includes(i.patientId))
      .map((i) => i.studyInstanceUid)
      .sort();
    expect(expected).toHaveLength(2);
    const target = { project: 'rec-research' };
    const made = await json<{ id: string }>(
      await send('POST', `${P}/cohorts`, { name: 'T3 with a CT', records_query: query, target }),
      202,
    );
    const shown = await json<{ source_studies: string[] }>(await api(`/api/cohorts/${made.id}`), 200);
    expect([...shown.source_studies].sort()).toEqual(expected);
    const found = await json<{ subjects: Array<{ id: string }> }>(
      await send('POST', `${P}/subjects/search`, { ...query, limit: 1000 }),
      200,
    );
    const bySubjects = await json<{ id: string }>(
      await send('POST', `${P}/cohorts`, {
        name: 'T3 subjects',
        subjects: found.subjects.map((x) => x.id),
        target,
      }),
      202,
    );
    const shown2 = await json<{ source_studies: string[] }>(await api(`/api/cohorts/${bySubjects.id}`), 200);
    expect([...shown2.source_studies].sort()).toEqual(expected);
    // Audit rows are written in batches: wait for both.
    const audit = await waitFor('both cohort.create audit rows', async () => {
      const r = await stack.gw.services.db.query<{ detail: Record<string, unknown> }>(
        "SELECT detail FROM audit_events WHERE action = 'cohort.create' AND detail->>'cohort' = ANY($1)",
        [[made.id, bySubjects.id]],
      );
      return r.rows.length === 2 ? r.rows : undefined;
    });
    expect(audit.map((r) => r.detail.from_records).sort()).toEqual(['query', 'subjects']);
    // Refusals: two selections, a field the type lacks, a subject of no study here, a caller without the role.
    const refused = async (body: Record<string, unknown>, who = alice) =>
      (
        await json<{ errors: Array<{ message: string }> }>(
          await send('POST', `${P}/cohorts`, { name: 'x', target, ...body }, who),
          400,
        )
      ).errors[0].message;
    expect(await refused({ records_query: query, studies: expected })).toMatch(/exactly one/);
    expect(
      await refused({ records_query: { records: [{ type: 'Baseline', field: 'nope', eq: 'x' }] } }),
    ).toMatch(/records\.0\.field/);
    expect(await refused({ subjects: [randomUUID()] })).toMatch(/no study in this project/);
    expect(await refused({ subjects: ['not-a-uuid'] })).toMatch(/subjects/);
    expect(
      (await send('POST', `${P}/cohorts`, { name: 'x', target, records_query: query }, bob)).status,
    ).toBe(404);
  });

  it('keeps one Patient ID under two issuers as two subjects, each with its own studies and imported records', async () => {
    const { services } = stack.gw;
    // Two patients of two hospitals with the same Patient ID, one CT study each.
    const two = [
      ...generateInstances({
        patients: 2,
        studiesPerPatient: 1,
        seriesPerStudy: 1,
        instancesPerSeries: 1,
        modalities: ['CT'],
        rows: 16,
        cols: 16,
        seed: 'rec-issuer',
      }),
    ];
    const issuers = ['HOSP-A', 'HOSP-B'];
    for (const [n, inst] of two.entries()) {
      const b = inst.buffer;
      const data = dcmjs.data.DicomMessage.readFile(
        b.buffer.slice(b.byteOffset, b.byteOffset + b.length) as ArrayBuffer,
      );
      data.dict['00100020'] = { vr: 'LO', Value: ['SAME-ID-7'] };
      data.dict['00100021'] = { vr: 'LO', Value: [issuers[n]] };
      const out = await ingestInstance(services, Buffer.from(data.write()), ['lung-study'], 'stow');
      if (!out.ok) throw new Error('could not seed an instance with an issuer');
    }
    const all = await json<Array<{ id: string; patient_id: string; issuer: string; studies: number }>>(
      await api(`${P}/subjects?limit=1000`),
      200,
    );
    const same = all
      .filter((x) => x.patient_id === 'SAME-ID-7')
      .sort((a, b) => a.issuer.localeCompare(b.issuer));
    expect(same.map((x) => [x.issuer, x.studies])).toEqual([
      ['HOSP-A', 1],
      ['HOSP-B', 1],
    ]);
    for (const [n, subject] of same.entries()) {
      const detail = await json<{ studies: Array<{ study_uid: string }> }>(
        await api(`${P}/subjects/${subject.id}`),
        200,
      );
      expect(detail.studies.map((x) => x.study_uid)).toEqual([two[n].studyInstanceUid]);
    }
    // The import's issuer column puts each row on its own patient.
    const form = new FormData();
    form.set(
      'mapping',
      JSON.stringify({
        subject: 'Patient ID',
        issuer: 'Issuer',
        fields: { baseline_id: 'Baseline ID', stage: 'T stage' },
      }),
    );
    form.set(
      'file',
      new Blob([
        'Patient ID,Issuer,Baseline ID,T stage\r\nSAME-ID-7,HOSP-A,B-ISS-A,T1\r\nSAME-ID-7,HOSP-B,B-ISS-B,T4\r\n',
      ]),
      'issuers.csv',
    );
    const imported = await lines(
      await api(`${P}/record-types/Baseline/import`, { method: 'POST', body: form }),
    );
    expect(imported.at(-1)?.summary).toMatchObject({ rows: 2, create: 2, refuse: 0 });
    for (const [n, subject] of same.entries()) {
      const records = await json<Array<{ key: string; data: { stage: string } }>>(
        await api(`${P}/subjects/${subject.id}/records?type=Baseline`),
        200,
      );
      expect(records.map((r) => [r.key, r.data.stage])).toEqual([[`B-ISS-${'AB'[n]}`, ['T1', 'T4'][n]]]);
    }
    // "T4 with a CT" finds the HOSP-B patient with its own study only, not the HOSP-A study of the same ID.
    const found = await json<{ subjects: Array<{ id: string; studies: string[] }> }>(
      await send('POST', `${P}/subjects/search`, {
        records: [{ type: 'Baseline', field: 'stage', eq: 'T4' }],
        imaging: { modality: 'CT' },
        limit: 1000,
      }),
      200,
    );
    expect(found.subjects.find((x) => x.id === same[1].id)?.studies).toEqual([two[1].studyInstanceUid]);
    expect(found.subjects.some((x) => x.id === same[0].id)).toBe(false);

    // A cohort of both: two pseudonyms, and each one's records are its own patient's (T1 for HOSP-A, T4 for HOSP-B).
    const { id } = await json<{ id: string }>(
      await send('POST', `${P}/cohorts`, {
        name: 'Same ID, two issuers',
        subjects: same.map((x) => x.id),
        records: true,
        target: { new: { id: 'rec-issuer-research', name: 'Issuer research' } },
      }),
      202,
    );
    await cohortDone(id);
    const copies = await services.db.query<{ source_study_uid: string; pseudonym: string }>(
      "SELECT DISTINCT source_study_uid, pseudonym FROM cohort_instances WHERE cohort_id = $1 AND state = 'done'",
      [id],
    );
    const pseudonymOf = new Map(copies.rows.map((r) => [r.source_study_uid, r.pseudonym]));
    expect(pseudonymOf.size).toBe(2);
    expect(new Set(pseudonymOf.values()).size).toBe(2);
    const entries = await unzip(Buffer.from(await (await api(`/api/cohorts/${id}/archive`)).arrayBuffer()));
    const rows = entries
      .get('records/Baseline.csv')!
      .toString()
      .trim()
      .split('\n')
      .map((l) => l.split(','));
    const col = (name: string) => rows[0].indexOf(name);
    const stageOf = new Map(rows.slice(1).map((r) => [r[col('subject')], r[col('stage')]]));
    expect(stageOf.size).toBe(2);
    expect(stageOf.get(pseudonymOf.get(two[0].studyInstanceUid)!)).toBe('T1');
    expect(stageOf.get(pseudonymOf.get(two[1].studyInstanceUid)!)).toBe('T4');
    expect(entries.get('records/Baseline.csv')!.includes(Buffer.from('SAME-ID-7'))).toBe(false);
  });

  it("collects the bytes of deleted records' files after the grace period, never bytes another row still names", async () => {
    const { services } = stack.gw;
    const store = new FsFileStore(filesDir);
    const blobPath = (h: string) => join(filesDir, h.slice(0, 2), h);
    const subjects = await json<Array<{ id: string }>>(await api(`${P}/subjects?limit=2&offset=10`), 200);
    const [a, b] = subjects.map((x) => x.id);
    const made = await json<{ id: string }>(
      await send('POST', `${P}/subjects/${a}/records/Treatment`, {
        data: { treatment_id: 'TX-GC-1', technique: 'carbon' },
      }),
      201,
    );
    const only = randomBytes(8192);
    const shared = randomBytes(8192);
    const form = new FormData();
    form.append('file', new Blob([only]), 'only.bin');
    form.append('file', new Blob([shared]), 'v/shared.bin');
    await json(await api(`${P}/subjects/${a}/records/${made.id}/files`, { method: 'POST', body: form }), 201);
    const again = new FormData();
    again.append('file', new Blob([only]), 'only.bin'); // a second version of the same path, same bytes
    await json(
      await api(`${P}/subjects/${a}/records/${made.id}/files`, { method: 'POST', body: again }),
      201,
    );
    const other = new FormData();
    other.append('file', new Blob([shared]), 'copy.bin');
    await json(await api(`${P}/subjects/${b}/files`, { method: 'POST', body: other }), 201);

    expect((await api(`${P}/subjects/${a}/records/${made.id}`, { method: 'DELETE' })).status).toBe(204);
    const candidates = async () =>
      (
        await services.db.query<{ sha256: string }>(
          'SELECT sha256 FROM record_blob_candidates WHERE sha256 = ANY($1)',
          [[sha(only), sha(shared)]],
        )
      ).rows.map((r) => r.sha256);
    expect((await candidates()).sort()).toEqual([sha(only), sha(shared)].sort());
    // Within the grace period nothing goes.
    await sweepDeletedBlobs(services.db, store, { graceMs: 3_600_000 });
    expect(existsSync(blobPath(sha(only)))).toBe(true);
    // After it, the bytes no row names go; the bytes the other subject's file names stay.
    const swept = await sweepDeletedBlobs(services.db, store, { graceMs: 0 });
    expect(swept.removed).toBeGreaterThanOrEqual(1);
    expect(existsSync(blobPath(sha(only)))).toBe(false);
    expect(existsSync(blobPath(sha(shared)))).toBe(true);
    expect(await candidates()).toEqual([]);
    const copy = (
      await json<Array<{ id: string; path: string }>>(await api(`${P}/subjects/${b}/files`), 200)
    ).find((f) => f.path === 'copy.bin')!;
    expect(sha(Buffer.from(await (await api(`${P}/subjects/${b}/files/${copy.id}`)).arrayBuffer()))).toBe(
      sha(shared),
    );
    const audit = await services.db.query<{ bytes: string; detail: { removed: number } }>(
      "SELECT bytes, detail FROM audit_events WHERE action = 'records.blobs.collect' ORDER BY at DESC LIMIT 1",
    );
    expect(audit.rows[0].detail.removed).toBe(swept.removed);
    expect(Number(audit.rows[0].bytes)).toBeGreaterThanOrEqual(only.length);
    // The same bytes uploaded again are stored again, whole.
    const back = new FormData();
    back.append('file', new Blob([only]), 'back.bin');
    await json(await api(`${P}/subjects/${b}/files`, { method: 'POST', body: back }), 201);
    expect(existsSync(blobPath(sha(only)))).toBe(true);
  });

  it('a failed or cut-off upload leaves no blob in the file store and no row; shared bytes stay', async () => {
    const { services } = stack.gw;
    const subject = (await json<Array<{ id: string }>>(await api(`${P}/subjects?limit=1`), 200))[0].id;
    const filesPath = `${P}/subjects/${subject}/files`;
    const blobPath = (h: string) => join(filesDir, h.slice(0, 2), h);
    const rowsOf = async (h: string) =>
      (await services.db.query('SELECT 1 FROM record_files WHERE sha256 = $1', [h])).rowCount;
    const tmpFiles = () => (existsSync(join(filesDir, 'tmp')) ? readdirSync(join(filesDir, 'tmp')) : []);

    const kept = randomBytes(4096);
    const first = new FormData();
    first.append('file', new Blob([kept]), 'kept.bin');
    expect((await api(filesPath, { method: 'POST', body: first })).status).toBe(201);

    // Three parts: bytes a row already names, new bytes, then a name that leaves its folder (refused after both
    // earlier parts were stored).
    const fresh = randomBytes(256 * 1024);
    const bad = new FormData();
    bad.append('file', new Blob([kept]), 'again.bin');
    bad.append('file', new Blob([fresh]), 'fresh.bin');
    bad.append('file', new Blob([randomBytes(10)]), '../escape.bin');
    const refused = await api(filesPath, { method: 'POST', body: bad });
    expect(refused.status).toBe(400);
    expect((await refused.json()) as unknown).toMatchObject({
      errors: [{ message: expect.stringMatching(/leaves its folder/) }],
    });
    expect(existsSync(blobPath(sha(fresh)))).toBe(false);
    expect(await rowsOf(sha(fresh))).toBe(0);
    expect(existsSync(blobPath(sha(kept)))).toBe(true);
    expect(await rowsOf(sha(kept))).toBe(1);
    expect(tmpFiles()).toEqual([]);

    // The client goes away mid-body: one part complete (stored), the next one streaming into a temp file.
    const cut = randomBytes(128 * 1024);
    const boundary = 'cutoff-boundary';
    const part = (name: string) =>
      `--${boundary}\r\nContent-Disposition: form-data; name="file"; filename="${name}"\r\n` +
      'Content-Type: application/octet-stream\r\n\r\n';
    const url = new URL(filesPath, stack.gw.url);
    const req = httpRequest(url, {
      method: 'POST',
      headers: {
        ...alice,
        'content-type': `multipart/form-data; boundary=${boundary}`,
        'content-length': String(10 * 1024 * 1024),
      },
    });
    const answered = new Promise<void>((res) => {
      req.on('error', () => res());
      req.on('close', () => res());
      req.on('response', (r) => {
        r.resume();
        res();
      });
    });
    req.write(Buffer.concat([Buffer.from(part('whole.bin')), cut, Buffer.from(`\r\n${part('half.bin')}`)]));
    req.write(randomBytes(64 * 1024));
    await waitFor('the whole part stored and the next one streaming', async () =>
      existsSync(blobPath(sha(cut))) && tmpFiles().length > 0 ? true : undefined,
    );
    req.destroy();
    await answered;
    await waitFor('the cut-off upload cleaned up', async () =>
      !existsSync(blobPath(sha(cut))) && tmpFiles().length === 0 ? true : undefined,
    );
    expect(await rowsOf(sha(cut))).toBe(0);
    // The gateway still takes uploads, and the kept file still downloads byte-identical.
    const list = await json<Array<{ id: string; path: string }>>(await api(filesPath), 200);
    const names = list.map((f) => f.path);
    expect(names).toContain('kept.bin');
    for (const n of ['again.bin', 'fresh.bin', 'whole.bin', 'half.bin']) expect(names).not.toContain(n);
    const keptRow = list.find((f) => f.path === 'kept.bin')!;
    const back = Buffer.from(await (await api(`${filesPath}/${keptRow.id}`)).arrayBuffer());
    expect(sha(back)).toBe(sha(kept));
  });
});
