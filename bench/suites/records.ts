import { join } from 'node:path';
import { generateInstances } from '../../tools/synth';
import { stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, summarise } from '../lib/stats';

const SUBJECTS = Number(process.env.BENCH_RECORD_SUBJECTS ?? 10_000);
const IMAGED = Number(process.env.BENCH_RECORD_IMAGED ?? 2_000);
const QUERY_REPS = Number(process.env.BENCH_RECORD_QUERY_REPS ?? 200);

const STAGES = ['T1', 'T2', 'T3', 'T4'];

function baselineCsv(ids: string[], revision: number): Buffer {
  const lines = ['Patient ID,Baseline ID,T stage,Diagnosis,OS (months),Deceased,Notes'];
  ids.forEach((id, i) => {
    const stage = STAGES[(i * 7 + revision * (i % 10 === 0 ? 1 : 0)) % 4];
    const date = `20${10 + (i % 12)}-${String((i % 12) + 1).padStart(2, '0')}-${String((i % 28) + 1).padStart(2, '0')}`;
    lines.push(`${id},B-${id},${stage},${date},${(i * 13) % 120},${i % 3 === 0 ? 'yes' : 'no'},note ${i}`);
  });
  return Buffer.from(lines.join('\n') + '\n');
}

async function importSheet(
  url: string,
  csv: Buffer,
  dryRun: boolean,
): Promise<{ ms: number; summary: Record<string, number> }> {
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
  form.set('file', new Blob([csv]), 'baseline.csv');
  const t0 = process.hrtime.bigint();
  const res = await fetch(
    `${url}/api/projects/bench/record-types/Baseline/import${dryRun ? '?dry_run=true' : ''}`,
    {
      method: 'POST',
      body: form,
    },
  );
  const text = await res.text();
  const ms = msSince(t0);
  if (res.status !== 200) throw new Error(`import answered ${res.status}: ${text.slice(0, 300)}`);
  const last = JSON.parse(text.trim().split('\n').pop()!) as {
    summary?: Record<string, number>;
    error?: unknown;
  };
  if (!last.summary || last.error)
    throw new Error(`import did not finish: ${JSON.stringify(last).slice(0, 300)}`);
  return { ms, summary: last.summary };
}

/**
 * Research records (issue 18): spreadsheet import rate for a SUBJECTS-row sheet (new rows, then the same sheet
 * re-imported with a tenth of the rows changed), and the latency of a combined record + imaging subject search at
 * SUBJECTS subjects of which IMAGED have a study. Orthanc holds no records, so there is no Orthanc figure.
 */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const gw = await startGatewayProcess(stack, 18087, {
    AUTH_ENABLED: 'false',
    INDEXER_ENABLED: 'false',
    RECORDS_FILES_DIR: join(stack.STACK_DIR ?? '/tmp', 'records-files'),
    RECORDS_IMPORT_MAX_ROWS: String(Math.max(SUBJECTS, 100_000)),
  });
  const rows: BenchRow[] = [];
  try {
    await createProject(gw.url, 'bench', 'Benchmark');
    const imaging = [
      ...generateInstances({
        patients: IMAGED,
        studiesPerPatient: 1,
        seriesPerStudy: 1,
        instancesPerSeries: 1,
        modalities: ['CT', 'MR'],
        rows: 16,
        cols: 16,
        seed: 'bench-records',
      }),
    ];
    const stow = await stowInstances(
      imaging.map((i) => i.buffer),
      { baseUrl: `${gw.url}/projects/bench/dicom-web`, batch: 1, concurrency: 4 },
    );
    const ids = [
      ...imaging.map((i) => i.patientId),
      ...Array.from({ length: SUBJECTS - IMAGED }, (_, i) => `BENCH${String(i).padStart(6, '0')}`),
    ];
    const def = await fetch(`${gw.url}/api/projects/bench/record-types/Baseline`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        key: 'baseline_id',
        schema: {
          type: 'object',
          properties: {
            baseline_id: { type: 'string' },
            stage: { type: 'string', enum: STAGES },
            diagnosis_date: { type: 'string', format: 'date' },
            os_months: { type: 'number', minimum: 0, 'x-unit': 'mo' },
            dead: { type: 'boolean' },
            notes: { type: 'string' },
          },
          required: ['baseline_id', 'stage'],
          'x-time-to-event': { time: 'os_months', event: 'dead' },
        },
      }),
    });
    if (!def.ok) throw new Error(`type definition answered ${def.status}`);

    const dry = await importSheet(gw.url, baselineCsv(ids, 0), true);
    const first = await importSheet(gw.url, baselineCsv(ids, 0), false);
    const again = await importSheet(gw.url, baselineCsv(ids, 1), false);
    if (first.summary.create !== SUBJECTS) throw new Error(`first import created ${first.summary.create}`);
    const rate = (ms: number) => SUBJECTS / (ms / 1000);
    rows.push(
      {
        metric: `CSV import, ${SUBJECTS} new rows (subjects created, batches of 500)`,
        unit: 'rows/s',
        gateway: rate(first.ms),
        note: 'no Orthanc equivalent: Orthanc holds no research records',
      },
      { metric: `CSV import dry run, ${SUBJECTS} rows`, unit: 'rows/s', gateway: rate(dry.ms) },
      {
        metric: `CSV re-import, ${SUBJECTS} rows, ${again.summary.change} changed`,
        unit: 'rows/s',
        gateway: rate(again.ms),
      },
    );

    // Combined record + imaging search: stage code, a numeric range and a date range on records, a modality and a
    // study date range on the index; the answer is a page of 100 subjects with their matching studies.
    const body = JSON.stringify({
      records: [
        { type: 'Baseline', field: 'stage', in: ['T3'] },
        { type: 'Baseline', field: 'os_months', min: 12, max: 96 },
        { type: 'Baseline', field: 'diagnosis_date', min: '2012-01-01' },
      ],
      imaging: { modality: 'CT', date_from: '2015-01-01' },
      limit: 100,
    });
    const search = async () => {
      const t0 = process.hrtime.bigint();
      const res = await fetch(`${gw.url}/api/projects/bench/subjects/search`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body,
      });
      const out = (await res.json()) as { subjects: unknown[] };
      if (!res.ok) throw new Error(`search answered ${res.status}`);
      return { ms: msSince(t0), n: out.subjects.length };
    };
    for (let i = 0; i < 10; i++) await search(); // warm-up
    const ms: number[] = [];
    let found = 0;
    for (let i = 0; i < QUERY_REPS; i++) {
      const r = await search();
      ms.push(r.ms);
      found = r.n;
    }
    const s = summarise(ms);
    rows.push({
      metric: `records + imaging subject search at ${SUBJECTS} subjects (${IMAGED} with a study), p95`,
      unit: 'ms',
      gateway: s.p95,
      note: `p50 ${s.p50} ms, ${found} subjects on the first page; no Orthanc equivalent (Orthanc holds no records)`,
    });
    return {
      suite: 'research records',
      setup:
        `${SUBJECTS}-row Baseline sheet (CSV, 6 mapped columns) imported through POST .../record-types/Baseline/import ` +
        `(the whole NDJSON answer read); ${IMAGED} of the subjects have a single-instance CT or MR study stored with ` +
        `STOW-RS (${stow.failed ?? 0} failed); ${QUERY_REPS} sequential searches after 10 warm-up. ` +
        'Orthanc has no records, so there is no side-by-side figure.',
      rows,
    };
  } finally {
    await gw.stop();
  }
}
