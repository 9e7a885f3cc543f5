/**
 * Scale curve (issue 15 item 7): the archive grows to BENCH_SCALE_ARCHIVE_MAX instances through the real ingest path
 * (STOW-RS to the gateway: parse, Orthanc store, index), and the index beyond it to the last step through the same
 * index code (`indexInstances`, the statement STOW-RS commits with) fed by generated objects that are not archived.
 * At every step: QIDO-RS p50/p95 of the five query shapes, a STOW-RS probe's rate, series metadata latency and the
 * index's size per instance; Orthanc's DICOMweb plugin answers the same QIDO shapes while it holds the same archive.
 * Writes bench/scale-curve.png.
 */
import { join } from 'node:path';
import { SingleBar } from 'cli-progress';
import { Pool } from 'pg';
import sharp from 'sharp';
import { parsePart10, type ParsedInstance } from '../../src/dicom/parse';
import { Tag } from '../../src/dicom/tags';
import { type ArchivedObject, indexInstances } from '../../src/index-db/instances';
import { stowInstances } from '../../tools/stow-client';
import { generateInstances, uuidDerivedUid } from '../../tools/synth';
import { qidoShapes, timeQido } from '../lib/qido';
import type { BenchRow, SuiteResult } from '../lib/report';
import {
  createProject,
  orthancAuth,
  orthancIndexName,
  type StackEnv,
  startGatewayProcess,
} from '../lib/stack';
import { msSince, round, summarise } from '../lib/stats';

const STEPS = (process.env.BENCH_SCALE_STEPS ?? '10000,100000,1000000').split(',').map(Number);
const ARCHIVE_MAX = Number(process.env.BENCH_SCALE_ARCHIVE_MAX ?? 100_000);
const PER_SERIES = 10;
const QIDO_REPS = Number(process.env.BENCH_SCALE_QIDO_REPS ?? 200);
const ORTHANC_QIDO_REPS = Number(process.env.BENCH_SCALE_ORTHANC_QIDO_REPS ?? 10);
const PROBE_STUDIES = Number(process.env.BENCH_SCALE_PROBE_STUDIES ?? 50);
const CONCURRENCY = 4;
const PROJECT = 'scale';

/** Studies of one 10-instance 64x64 series each, five per patient, CT/MR/CR in turn, disjoint per seed. */
function series(seed: string, count: number, instancesPerSeries = PER_SERIES) {
  return generateInstances({
    patients: Math.ceil(count / 5),
    studiesPerPatient: 5,
    seriesPerStudy: 1,
    instancesPerSeries,
    rows: 64,
    cols: 64,
    noise: false,
    seed,
  });
}

/** `count` synthetic instances, in whole series, as Part-10 buffers. */
function* instances(seed: string, count: number): Generator<Buffer> {
  let n = 0;
  for (const s of series(seed, Math.ceil(count / PER_SERIES))) {
    if (n++ >= count) return;
    yield s.buffer;
  }
}

/**
 * Generated objects for the index only: one synthetic instance per series is parsed by the ingest parser, and the
 * series' other instances are that parse with their own SOP Instance UID and Instance Number (what differs between
 * the synthesiser's instances of one series, pixel noise aside, which the index does not hold).
 */
function* indexOnly(seed: string, count: number): Generator<ArchivedObject> {
  let n = 0;
  for (const s of series(seed, Math.ceil(count / PER_SERIES), 1)) {
    const first: ParsedInstance = parsePart10(s.buffer);
    for (let k = 1; k <= PER_SERIES; k++) {
      if (n++ >= count) return;
      const uid = k === 1 ? first.sopInstanceUid : uuidDerivedUid(`${first.sopInstanceUid}/${k}`);
      const json = {
        ...first.json,
        [Tag.SOPInstanceUID]: { vr: 'UI', Value: [uid] },
        [Tag.InstanceNumber]: { vr: 'IS', Value: [k] },
      };
      yield {
        parsed: { ...first, sopInstanceUid: uid, json },
        orthancId: `scale-${uid}`,
        fileSize: s.buffer.length,
        md5: null,
      };
    }
  }
}

/** Failure reasons (0008,1197) of a Store Instances Response, for the log: codes only. */
function failureReasons(body: unknown): string[] {
  const failed = (body as Record<string, { Value?: Array<Record<string, { Value?: number[] }>> }> | null)?.[
    '00081198'
  ]?.Value;
  return (failed ?? []).map((f) => (f['00081197']?.Value?.[0] ?? 0).toString(16).padStart(4, '0'));
}

function bar(label: string, total: number): SingleBar {
  const b = new SingleBar({
    format: `[scale] ${label} {bar} {value}/{total} instances, {rate}/s, eta {eta_formatted}`,
    stream: process.stderr,
    hideCursor: true,
    // A log file is not a terminal: a line every 10 s instead of a redrawn bar.
    noTTYOutput: true,
    notTTYSchedule: 10_000,
  });
  b.start(total, 0, { rate: 0 });
  return b;
}

interface StepFigures {
  instances: number;
  archived: number;
  qido: Array<{ name: string; p50: number; p95: number; orthancP95?: number }>;
  stowRate: number;
  /** Probe requests not answered 200. */
  probeFailed: number;
  metadataP50: number;
  metadataP95: number;
  bytesPerInstance: number;
}

/** Runs the scale curve. */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const gw = await startGatewayProcess(stack, 18082, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' });
  const db = new Pool({ connectionString: stack.DATABASE_URL, max: 4 });
  const orthancDicomweb = `${stack.ORTHANC_URL}/dicom-web`;
  const auth = orthancAuth(stack);
  const steps: StepFigures[] = [];
  let loaderRetried = 0;
  let loaderNotStored = 0;
  const loaderReasons = new Set<string>();
  try {
    await createProject(gw.url, PROJECT, 'Scale curve');
    const root = `${gw.url}/projects/${PROJECT}/dicom-web`;
    const count = async () =>
      Number((await db.query<{ n: string }>('SELECT count(*) AS n FROM instances')).rows[0].n);
    let archived = 0;
    for (const target of STEPS) {
      const stepStarted = process.hrtime.bigint();
      // Fill to the step: through the archive up to ARCHIVE_MAX (minus what the probes will add), then index only.
      const probeSize = PROBE_STUDIES * PER_SERIES;
      const archiveTo = Math.min(target, ARCHIVE_MAX) - probeSize;
      const n = archiveTo - archived;
      if (n > 0) {
        const b = bar(`STOW-RS to ${archiveTo.toLocaleString('en')}`, n);
        const t = process.hrtime.bigint();
        let done = 0;
        let notStored = 0;
        // A request not answered 200 is sent again (up to 3 times in all: storing the same objects again is
        // AlreadyStored), so a transient refusal on a loaded machine (Orthanc's serialisation conflicts) does not
        // stop a long load; what still fails is counted with its reasons.
        const sent = await stowInstances(instances(`scale-archive-${target}`, n), {
          baseUrl: root,
          batch: PER_SERIES,
          concurrency: CONCURRENCY,
          retries: 2,
          keepResults: false,
          onResult: (r) => {
            done += r.instances;
            if (r.status !== 200) {
              notStored += r.instances;
              for (const code of failureReasons(r.body)) loaderReasons.add(code);
              if (r.error) loaderReasons.add(`HTTP ${r.status}`);
            }
            b.update(Math.min(done, n), { rate: Math.round(done / (msSince(t) / 1000)) });
          },
        });
        b.stop();
        loaderRetried += sent.retried;
        loaderNotStored += notStored;
        if (sent.retried || notStored)
          process.stderr.write(
            `[scale] loader: ${sent.retried} requests sent again, ${notStored} instances not stored (reasons ${[...loaderReasons].join(', ')})\n`,
          );
        archived += n - notStored;
      }
      const now = await count();
      const toIndex = target - probeSize - now;
      if (toIndex > 0) {
        const b = bar(`index-only to ${target - probeSize}`, toIndex);
        const t = process.hrtime.bigint();
        let batch: ArchivedObject[] = [];
        let done = 0;
        for (const obj of indexOnly(`scale-index-${target}`, toIndex)) {
          batch.push(obj);
          if (batch.length === 500) {
            await indexInstances(db, batch, [PROJECT], 'stow');
            done += batch.length;
            batch = [];
            b.update(done, { rate: Math.round(done / (msSince(t) / 1000)) });
          }
        }
        if (batch.length) await indexInstances(db, batch, [PROJECT], 'stow');
        b.update(toIndex);
        b.stop();
      }
      // The STOW-RS probe: one 10-instance study per request, CONCURRENCY in flight, through the whole ingest path.
      const probe = [...instances(`scale-probe-${target}`, probeSize)];
      const p = await stowInstances(probe, {
        baseUrl: root,
        batch: PER_SERIES,
        concurrency: CONCURRENCY,
        keepResults: false,
      });
      const probeFailed = p.failed + p.partial;
      archived += probeSize;
      const stowRate = probeSize / p.seconds;
      await db.query('ANALYZE');

      // QIDO-RS: the five shapes of ingest-qido, on values drawn from the data.
      const probeRow = (
        await db.query<{ study_uid: string; patient_id: string }>(
          `SELECT study_uid, patient_id FROM project_studies WHERE project_id = $1 ORDER BY study_uid LIMIT 1 OFFSET $2`,
          [PROJECT, Math.floor((await count()) / PER_SERIES / 2)],
        )
      ).rows[0];
      const qido: StepFigures['qido'] = [];
      const allArchived = (await count()) === archived;
      for (const q of qidoShapes(probeRow.study_uid, probeRow.patient_id)) {
        const g = await timeQido(`${root}/studies?${q.qs}&limit=100`, QIDO_REPS);
        // Orthanc answers over what it holds: the same data only while nothing is index-only.
        const o = allArchived
          ? await timeQido(`${orthancDicomweb}/studies?${q.qs}&limit=100`, ORTHANC_QIDO_REPS, {
              authorization: auth,
            })
          : undefined;
        qido.push({ name: q.name, p50: g.p50, p95: g.p95, orthancP95: o?.p95 });
      }
      // Series metadata: 30 different series of the archived part (the metadata answer comes from the index).
      const seriesUids = (
        await db.query<{ study_uid: string; series_uid: string }>(
          `SELECT study_uid, series_uid FROM project_series TABLESAMPLE SYSTEM (5) WHERE project_id = $1 LIMIT 30`,
          [PROJECT],
        )
      ).rows;
      const meta: number[] = [];
      for (const s of seriesUids) {
        const t = process.hrtime.bigint();
        const res = await fetch(`${root}/studies/${s.study_uid}/series/${s.series_uid}/metadata`, {
          headers: { accept: 'application/dicom+json' },
        });
        await res.arrayBuffer();
        if (!res.ok) throw new Error(`metadata: HTTP ${res.status}`);
        meta.push(msSince(t));
      }
      const m = summarise(meta);
      const size = Number(
        (await db.query<{ b: string }>('SELECT pg_database_size(current_database()) AS b')).rows[0].b,
      );
      const total = await count();
      steps.push({
        instances: total,
        archived,
        qido,
        stowRate,
        probeFailed,
        metadataP50: m.p50,
        metadataP95: m.p95,
        bytesPerInstance: size / total,
      });
      process.stderr.write(
        `[scale] ${total} instances (${archived} archived): STOW ${round(stowRate)}/s, ` +
          qido.map((q) => `${q.name} p95 ${q.p95}`).join(', ') +
          `, metadata p95 ${m.p95} ms, ${Math.round(size / total)} B/instance (step took ${round(msSince(stepStarted) / 1000)} s)\n`,
      );
    }
  } finally {
    await db.end();
    await gw.stop();
  }

  const rows: BenchRow[] = [];
  for (const s of steps) {
    const at = `at ${s.instances.toLocaleString('en')} instances (${s.archived.toLocaleString('en')} archived)`;
    for (const q of s.qido) {
      rows.push({
        metric: `QIDO ${q.name}, limit=100, ${at} (p95; p50 ${q.p50} ms)`,
        unit: 'ms',
        gateway: q.p95,
        orthanc: q.orthancP95,
        ratio: q.orthancP95 ? q.p95 / q.orthancP95 : undefined,
        ratioMeaning: q.orthancP95 ? 'gateway / Orthanc plugin latency' : undefined,
      });
    }
    rows.push({
      metric: `STOW-RS probe, ${PROBE_STUDIES} studies of ${PER_SERIES} instances, ${CONCURRENCY} in flight, ${at}`,
      unit: 'inst/s',
      gateway: s.stowRate,
      note: s.probeFailed ? `${s.probeFailed} probe requests not all stored` : undefined,
    });
    rows.push({
      metric: `series metadata, ${PER_SERIES} instances, 30 different series, ${at} (p95; p50 ${s.metadataP50} ms)`,
      unit: 'ms',
      gateway: s.metadataP95,
    });
    rows.push({ metric: `index size per instance ${at}`, unit: 'B', gateway: s.bytesPerInstance });
  }
  const first = steps[0];
  const last = steps[steps.length - 1];
  if (first && last && last !== first) {
    for (let i = 0; i < first.qido.length; i++) {
      const r = last.qido[i].p95 / first.qido[i].p95;
      rows.push({
        metric: `QIDO ${first.qido[i].name} p95 at ${last.instances.toLocaleString('en')} / at ${first.instances.toLocaleString('en')}`,
        unit: 'x',
        gateway: r,
        target: '≤ 1.5',
        met: r <= 1.5,
      });
    }
    const rates = steps.map((s) => s.stowRate);
    const spread = Math.max(...rates) / Math.min(...rates) - 1;
    rows.push({
      metric: `STOW-RS probe rate spread across the curve (max / min − 1; ${rates.map((r) => round(r)).join(', ')} inst/s)`,
      unit: '%',
      gateway: spread * 100,
      target: '≤ 20 %',
      met: spread <= 0.2,
    });
  }
  await plot(steps, join(__dirname, '../scale-curve.png'));
  return {
    suite: 'Scale curve: QIDO, STOW-RS, metadata and index size from 10k to 1M instances',
    setup:
      `Steps ${STEPS.map((s) => s.toLocaleString('en')).join(', ')} instances in project ${PROJECT} (studies of one ` +
      `${PER_SERIES}-instance 64x64 series, five per patient, CT/MR/CR). Up to ${ARCHIVE_MAX.toLocaleString('en')} ` +
      `instances the loader sends everything through STOW-RS to the gateway (parse, Orthanc store, index; ` +
      `${PER_SERIES} instances per request, ${CONCURRENCY} in flight); beyond, generated objects go through the ` +
      `same index statement (indexInstances) without the archive: one synthetic instance per series parsed by the ` +
      `ingest parser, its siblings that parse with their own SOP Instance UID and Instance Number. At every step: ` +
      `a STOW-RS probe of ${PROBE_STUDIES * PER_SERIES} instances through the whole path, ANALYZE, QIDO-RS ` +
      `(${QIDO_REPS} sequential requests per shape, after 3 warm-ups; Orthanc's plugin ${ORTHANC_QIDO_REPS} while it ` +
      `holds all the data, on its ${orthancIndexName()} index), series metadata of 30 sampled series, and ` +
      `pg_database_size / instances. Plot: bench/scale-curve.png. Loader: ${loaderRetried} requests sent again ` +
      `(a request not answered 200 is sent again, 3 attempts at most), ${loaderNotStored} instances not stored` +
      (loaderReasons.size ? ` (reasons ${[...loaderReasons].join(', ')})` : '') +
      '.',
    rows,
  };
}

/** A small line chart (SVG rendered to PNG by sharp): QIDO p95 per shape and the STOW-RS probe rate vs instances. */
async function plot(steps: StepFigures[], file: string): Promise<void> {
  if (steps.length === 0) return;
  const W = 1000;
  const H = 420;
  const L = 70;
  const R = 300;
  const T = 30;
  const B = 60;
  const xs = steps.map((s) => Math.log10(s.instances));
  const x0 = Math.floor(Math.min(...xs));
  const x1 = Math.ceil(Math.max(...xs)) === x0 ? x0 + 1 : Math.ceil(Math.max(...xs));
  const X = (n: number) => L + ((Math.log10(n) - x0) / (x1 - x0)) * (W - L - R);
  const maxMs = Math.max(...steps.flatMap((s) => s.qido.map((q) => q.p95)), 1) * 1.15;
  const Y = (ms: number) => H - B - (ms / maxMs) * (H - T - B);
  const maxRate = Math.max(...steps.map((s) => s.stowRate), 1) * 1.15;
  const Yr = (r: number) => H - B - (r / maxRate) * (H - T - B);
  const colours = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd'];
  const parts: string[] = [
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="black"/>`,
    `<line x1="${W - R}" y1="${T}" x2="${W - R}" y2="${H - B}" stroke="#888"/>`,
    `<text x="${(L + W - R) / 2}" y="${H - 15}" text-anchor="middle" font-size="13">instances in the index (log scale)</text>`,
    `<text x="15" y="${T + (H - T - B) / 2}" font-size="13" transform="rotate(-90 15 ${T + (H - T - B) / 2})" text-anchor="middle">QIDO p95 (ms)</text>`,
  ];
  for (let e = x0; e <= x1; e++) {
    const x = L + ((e - x0) / (x1 - x0)) * (W - L - R);
    parts.push(`<line x1="${x}" y1="${H - B}" x2="${x}" y2="${H - B + 5}" stroke="black"/>`);
    parts.push(
      `<text x="${x}" y="${H - B + 20}" text-anchor="middle" font-size="12">${(10 ** e).toLocaleString('en')}</text>`,
    );
  }
  for (let i = 0; i <= 4; i++) {
    const ms = (maxMs / 4) * i;
    parts.push(
      `<text x="${L - 8}" y="${Y(ms) + 4}" text-anchor="end" font-size="11">${ms.toFixed(1)}</text>`,
    );
    const r = (maxRate / 4) * i;
    parts.push(
      `<text x="${W - R + 8}" y="${Yr(r) + 4}" font-size="11" fill="#555">${Math.round(r)}/s</text>`,
    );
  }
  steps[0].qido.forEach((q, i) => {
    const pts = steps.map((s) => `${X(s.instances)},${Y(s.qido[i].p95)}`).join(' ');
    parts.push(`<polyline points="${pts}" fill="none" stroke="${colours[i]}" stroke-width="2"/>`);
    for (const s of steps)
      parts.push(`<circle cx="${X(s.instances)}" cy="${Y(s.qido[i].p95)}" r="3" fill="${colours[i]}"/>`);
    parts.push(
      `<text x="${W - R + 50}" y="${T + 15 + i * 18}" font-size="12" fill="${colours[i]}">QIDO ${q.name}</text>`,
    );
  });
  const rp = steps.map((s) => `${X(s.instances)},${Yr(s.stowRate)}`).join(' ');
  parts.push(`<polyline points="${rp}" fill="none" stroke="#555" stroke-width="2" stroke-dasharray="6 4"/>`);
  parts.push(
    `<text x="${W - R + 50}" y="${T + 15 + 5 * 18}" font-size="12" fill="#555">STOW-RS probe (right axis)</text>`,
  );
  const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif">${parts.join('')}</svg>`;
  await sharp(Buffer.from(svg)).png().toFile(file);
}
