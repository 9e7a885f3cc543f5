/**
 * The fuzz loop shared by test/fuzz.itest.ts (bounded, in `npm test`) and bench/fuzz.ts (long runs): seeded
 * mutants of every sample and broken multipart framings, sent by STOW-RS through a real gateway to the real
 * Orthanc, with every answer checked. Returns figures and the violations found; never throws for a bad answer.
 */
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import fc from 'fast-check';
import type { Pool } from 'pg';
import { dataSetMd5 } from '../../src/ingest/identity';
import { asArchived, framingMutantOf, type Mutant, mutantOf } from './dicom-fuzz';

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

export interface FuzzTarget {
  /** STOW-RS resource, e.g. http://127.0.0.1:1234/projects/fuzz/dicom-web/studies */
  stowUrl: string;
  orthancUrl: string;
  orthancAuth: string;
  /** Orthanc's pid file: a crash shows as a dead or changed pid. */
  orthancPidFile?: string;
  db: Pool;
  /** RSS of the gateway process, sampled after every case. */
  gatewayRss(): number;
}

export interface FuzzOptions {
  seed: number;
  /** Mutated objects to send; framing cases are added, one per ten objects (at least 5). */
  count: number;
  samples: string[];
  /** Longest any answer may take. */
  requestTimeoutMs?: number;
  /** Orthanc liveness is checked after every batch of this many cases. */
  batch?: number;
  log?(line: string): void;
}

export interface FuzzReport {
  cases: number;
  framingCases: number;
  stored: number;
  /** Per mutation kind: how many were sent and stored. */
  byKind: Record<string, { sent: number; stored: number }>;
  /** Refused parts by Failure Reason (hex), and whole requests by HTTP status. */
  refusedByReason: Record<string, number>;
  statuses: Record<string, number>;
  maxRssBytes: number;
  maxAnswerMs: number;
  elapsedMs: number;
  violations: string[];
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const BOUNDARY = 'fuzz-run-boundary';

export async function runFuzz(target: FuzzTarget, opts: FuzzOptions): Promise<FuzzReport> {
  const timeout = opts.requestTimeoutMs ?? 20_000;
  const batch = opts.batch ?? 25;
  const log = opts.log ?? (() => undefined);
  const samples = opts.samples.map((path) => ({ path, bytes: readFileSync(path) }));
  const arbs = samples.map((s) => mutantOf(s.bytes));
  const framingArb = framingMutantOf(
    samples.reduce((a, b) => (b.bytes.length < a.bytes.length ? b : a)).bytes,
  );
  const report: FuzzReport = {
    cases: 0,
    framingCases: 0,
    stored: 0,
    byKind: {},
    refusedByReason: {},
    statuses: {},
    maxRssBytes: 0,
    maxAnswerMs: 0,
    elapsedMs: 0,
    violations: [],
  };
  const started = Date.now();
  const orthancPid = readPid(target.orthancPidFile);
  const framingCount = Math.max(5, Math.floor(opts.count / 10));
  const total = opts.count + framingCount;

  for (let i = 0; i < total; i++) {
    const framing = report.cases >= opts.count || (i % 11 === 10 && report.framingCases < framingCount);
    let body: Buffer;
    let contentType = `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`;
    let mutant: Mutant | undefined;
    let kind: string;
    if (framing) {
      const [f] = fc.sample(framingArb, { seed: opts.seed * 1_000_003 + i, numRuns: 1 });
      body = f.body;
      contentType = f.contentType;
      kind = `framing:${f.kind}`;
      report.framingCases++;
    } else {
      const s = report.cases % samples.length;
      [mutant] = fc.sample(arbs[s], { seed: opts.seed * 1_000_003 + i, numRuns: 1 });
      kind = mutant.kind;
      body = Buffer.concat([
        Buffer.from(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n`),
        mutant.bytes,
        Buffer.from(`\r\n--${BOUNDARY}--\r\n`),
      ]);
      report.cases++;
    }
    const k = (report.byKind[kind] ??= { sent: 0, stored: 0 });
    k.sent++;

    const t0 = Date.now();
    let status: number;
    let text: string;
    try {
      const res = await fetch(target.stowUrl, {
        method: 'POST',
        headers: { 'content-type': contentType, accept: 'application/dicom+json' },
        body,
        signal: AbortSignal.timeout(timeout),
      });
      status = res.status;
      text = await res.text();
    } catch (err) {
      report.violations.push(`case ${i} (${kind}): no answer within ${timeout} ms (${(err as Error).name})`);
      log(report.violations[report.violations.length - 1]);
      continue;
    }
    const ms = Date.now() - t0;
    if (ms > 2000) log(`case ${i} (${kind}) took ${ms} ms, HTTP ${status}`);
    report.maxAnswerMs = Math.max(report.maxAnswerMs, ms);
    report.statuses[status] = (report.statuses[status] ?? 0) + 1;
    if (status >= 500) report.violations.push(`case ${i} (${kind}): HTTP ${status}`);
    report.maxRssBytes = Math.max(report.maxRssBytes, target.gatewayRss());

    let answer: DicomJson = {};
    try {
      answer = text ? (JSON.parse(text) as DicomJson) : {};
    } catch {
      report.violations.push(`case ${i} (${kind}): answer is not JSON`);
    }
    for (const f of (answer['00081198']?.Value ?? []) as DicomJson[]) {
      const reason = `0x${Number(f['00081197']?.Value?.[0]).toString(16).toUpperCase()}`;
      report.refusedByReason[reason] = (report.refusedByReason[reason] ?? 0) + 1;
    }
    const refs = (answer['00081199']?.Value ?? []) as DicomJson[];
    if (refs.length && !mutant)
      report.violations.push(`case ${i} (${kind}): broken framing stored something`);
    for (const ref of refs) {
      const sop = ref['00081155']?.Value?.[0] as string;
      report.stored++;
      k.stored++;
      const sent = asArchived(mutant!.bytes);
      const archived = await archivedFile(target, sop);
      // Identity is the data set (issue 15): a mutant that differs from an archived object only in its File Meta is
      // that object, already stored; the archive keeps the first wrapping and the index describes what it keeps.
      const same =
        archived !== undefined &&
        (md5(archived) === md5(sent) ||
          (dataSetMd5(archived) !== undefined && dataSetMd5(archived) === dataSetMd5(sent)));
      if (!same) report.violations.push(`case ${i} (${kind}): stored ${sop} differs in the archive`);
      const row = await target.db.query<{ md5: string }>(
        'SELECT md5 FROM instances WHERE sop_instance_uid = $1',
        [sop],
      );
      if (!archived || row.rows[0]?.md5 !== md5(archived))
        report.violations.push(`case ${i} (${kind}): stored ${sop} not indexed as sent`);
    }

    if ((i + 1) % batch === 0 || i === total - 1) {
      const alive = await orthancAlive(target);
      const pid = readPid(target.orthancPidFile);
      if (!alive || pid !== orthancPid || (pid !== undefined && !processAlive(pid))) {
        report.violations.push(`after case ${i} (${kind}): Orthanc is down or restarted`);
        log(`Orthanc down after case ${i}`);
        break;
      }
      log(
        `${i + 1}/${total} cases, ${report.stored} stored, rss ${(report.maxRssBytes / 1024 ** 2).toFixed(0)} MB`,
      );
    }
  }
  report.elapsedMs = Date.now() - started;
  return report;
}

async function archivedFile(target: FuzzTarget, sop: string): Promise<Buffer | undefined> {
  const headers = { authorization: target.orthancAuth };
  const found = (await (
    await fetch(`${target.orthancUrl}/tools/lookup`, { method: 'POST', headers, body: sop })
  ).json()) as Array<{ ID: string; Type: string }>;
  const id = found.find((f) => f.Type === 'Instance')?.ID;
  if (!id) return undefined;
  const res = await fetch(`${target.orthancUrl}/instances/${id}/file`, { headers });
  return Buffer.from(await res.arrayBuffer());
}

async function orthancAlive(target: FuzzTarget): Promise<boolean> {
  try {
    const res = await fetch(`${target.orthancUrl}/system`, {
      headers: { authorization: target.orthancAuth },
      signal: AbortSignal.timeout(10_000),
    });
    await res.text();
    return res.ok;
  } catch {
    return false;
  }
}

function readPid(file: string | undefined): number | undefined {
  if (!file) return undefined;
  try {
    return Number(readFileSync(file, 'utf8').trim());
  } catch {
    return undefined;
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}
