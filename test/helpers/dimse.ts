/**
 * DIMSE helpers for integration tests: DCMTK as the modality, synthetic copies of sample files under fresh UIDs,
 * gateway child processes (for crash and failover tests) and polling.
 */
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import dcmjs from 'dcmjs';
import { GATEWAY_NODE_FLAGS } from '../../tools/gateway-node-flags';
export { freePort } from '../../tools/net';

const run = promisify(execFile);
const ROOT = join(__dirname, '../..');

/** A fresh UID in the 2.25 (UUID) arc. */
export function newUid(): string {
  return '2.25.' + BigInt('0x' + randomUUID().replace(/-/g, '')).toString();
}

/** Sends files or folders to the test Orthanc's DICOM port with dcmsend (one association), as a modality would. */
export async function cstore(
  paths: string[],
  opts: { calledAet: string; callingAet?: string; extra?: string[]; port?: string },
): Promise<void> {
  const port = opts.port ?? process.env.ORTHANC_DICOM_PORT;
  if (!port) throw new Error('ORTHANC_DICOM_PORT is not set (global setup starts the stack)');
  await run(
    'dcmsend',
    [
      '-aet',
      opts.callingAet ?? 'TESTSCU',
      '-aec',
      opts.calledAet,
      '+sd',
      '+r',
      '-nh',
      ...(opts.extra ?? []),
      '127.0.0.1',
      port,
      ...paths,
    ],
    { timeout: 300_000, maxBuffer: 16 * 1024 * 1024 },
  );
}

/**
 * C-STOREs files with dcmsend and answers the SOP Instance UIDs the archive acknowledged with Success (0x0000), read
 * from dcmsend's per-instance report: dcmsend exits 0 even when the peer refused an instance (for example 0xA700,
 * "out of resources", which tells the sender to try again), so its exit code says nothing about what was stored.
 * Never throws for a failed transfer: `exitCode` is null when dcmsend was killed after `timeoutMs`.
 */
export async function cstoreAcknowledged(
  paths: string[],
  opts: { calledAet: string; callingAet?: string; port?: string; timeoutMs?: number },
): Promise<{ acked: string[]; exitCode: number | null }> {
  const port = opts.port ?? process.env.ORTHANC_DICOM_PORT;
  if (!port) throw new Error('ORTHANC_DICOM_PORT is not set (global setup starts the stack)');
  const report = join(tmpdir(), `aperture-dcmsend-${randomUUID()}.txt`);
  const exitCode = await new Promise<number | null>((resolve) => {
    execFile(
      'dcmsend',
      [
        '-aet',
        opts.callingAet ?? 'TESTSCU',
        '-aec',
        opts.calledAet,
        '-nh',
        '+crf',
        report,
        '127.0.0.1',
        port,
        ...paths,
      ],
      { timeout: opts.timeoutMs ?? 300_000, maxBuffer: 16 * 1024 * 1024 },
      (err) => {
        if (!err) return resolve(0);
        const e = err as { code?: unknown; killed?: boolean };
        resolve(e.killed ? null : typeof e.code === 'number' ? e.code : 1);
      },
    );
  });
  const acked: string[] = [];
  try {
    // "SOP Instance : <uid>" ... "DIMSE Status : 0x0000 (Success)" per file.
    for (const block of readFileSync(report, 'utf8').split(/\n(?=Number\s+:)/)) {
      const uid = /SOP Instance\s+:\s+(\S+)/.exec(block)?.[1];
      if (uid && /DIMSE Status\s+:\s+0x0000/.test(block)) acked.push(uid);
    }
  } catch {
    /* no report: nothing was acknowledged */
  } finally {
    rmSync(report, { force: true });
  }
  return { acked, exitCode };
}

/** What a synthetic copy was given. */
export interface SyntheticCopy {
  path: string;
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
}

/**
 * Writes `count` copies of a sample under fresh SOP Instance UIDs into `dir`, grouped into series of `perSeries`
 * within one new study (or the given one), optionally with Patient Comments.
 */
export function syntheticCopies(
  template: string,
  dir: string,
  count: number,
  opts: {
    perSeries?: number;
    studyUid?: string;
    seriesUid?: string;
    patientComments?: (i: number) => string | undefined;
  } = {},
): SyntheticCopy[] {
  mkdirSync(dir, { recursive: true });
  const src = readFileSync(template);
  const studyUid = opts.studyUid ?? newUid();
  const perSeries = opts.perSeries ?? count;
  const out: SyntheticCopy[] = [];
  let seriesUid = opts.seriesUid ?? newUid();
  for (let i = 0; i < count; i++) {
    if (i > 0 && i % perSeries === 0 && !opts.seriesUid) seriesUid = newUid();
    const sopInstanceUid = newUid();
    const ab = src.buffer.slice(src.byteOffset, src.byteOffset + src.byteLength) as ArrayBuffer;
    const d = dcmjs.data.DicomMessage.readFile(ab);
    d.dict['0020000D'] = { vr: 'UI', Value: [studyUid] };
    d.dict['0020000E'] = { vr: 'UI', Value: [seriesUid] };
    d.dict['00080018'] = { vr: 'UI', Value: [sopInstanceUid] };
    d.dict['00200013'] = { vr: 'IS', Value: [(i % perSeries) + 1] };
    d.meta['00020003'] = { vr: 'UI', Value: [sopInstanceUid] };
    const comments = opts.patientComments?.(i);
    if (comments !== undefined) d.dict['00104000'] = { vr: 'LT', Value: [comments] };
    const path = join(dir, `${String(i).padStart(5, '0')}.dcm`);
    writeFileSync(path, Buffer.from(d.write()));
    out.push({ path, studyUid, seriesUid, sopInstanceUid });
  }
  return out;
}

/** Polls `fn` until it returns something other than undefined/false, or fails after `timeoutMs`. */
export async function waitFor<T>(
  what: string,
  fn: () => Promise<T | undefined | false>,
  timeoutMs = 30_000,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`,
      );
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A gateway running `src/main.ts` as a child process, with its log lines (pino JSON) collected. */
export interface GatewayChild {
  url: string;
  pid: number;
  child: ChildProcess;
  /** Parsed log lines so far. */
  logs: Array<Record<string, unknown>>;
  /** Lines of stdout that were not JSON (every log line should be), at most 20 kept, each cut to 200 characters. */
  nonJsonLines: string[];
  /** Log lines with this message. */
  lines(msg: string): Array<Record<string, unknown>>;
  exited: Promise<void>;
  /** SIGTERM and wait (or SIGKILL, not waiting for a graceful shutdown). */
  stop(signal?: NodeJS.Signals): Promise<void>;
}

/** One of our entry points (src/main.ts, src/worker.ts) as a child process, its pino JSON log lines collected. */
function spawnEntry(
  entry: string,
  env: NodeJS.ProcessEnv,
): {
  child: ChildProcess;
  logs: Array<Record<string, unknown>>;
  nonJsonLines: string[];
  stderr: () => string;
  exited: Promise<void>;
} {
  // `node --import tsx`, not the tsx CLI: the CLI runs the program in a grandchild, which a SIGKILL would orphan.
  // The gateway with the Node flags every launcher gives it (its heap bound), as production runs it.
  const flags = entry === 'src/main.ts' ? GATEWAY_NODE_FLAGS : [];
  const child = spawn(process.execPath, [...flags, '--import', 'tsx', join(ROOT, entry)], {
    cwd: ROOT,
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Array<Record<string, unknown>> = [];
  const nonJsonLines: string[] = [];
  let buf = '';
  child.stdout!.on('data', (chunk: Buffer) => {
    buf += chunk.toString('utf8');
    let nl: number;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      try {
        logs.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        if (line.trim() && nonJsonLines.length < 20) nonJsonLines.push(line.slice(0, 200));
      }
    }
  });
  let stderr = '';
  child.stderr!.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString('utf8')).slice(-4000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return { child, logs, nonJsonLines, stderr: () => stderr, exited };
}

/** The job worker (src/worker.ts) as its own process, started like the gateway; resolves once it has started. */
export async function spawnWorker(
  env: Record<string, string>,
  logLevel = 'info',
): Promise<{ child: ChildProcess; exited: Promise<void>; lines: Array<Record<string, unknown>> }> {
  const { child, logs, stderr, exited } = spawnEntry('src/worker.ts', {
    ...process.env,
    ...env,
    LOG_LEVEL: logLevel,
  });
  await waitFor(
    'the worker to start',
    async () => {
      if (child.exitCode !== null) throw new Error(`worker exited with ${child.exitCode}: ${stderr()}`);
      return logs.some((l) => l.msg === 'worker started');
    },
    120_000,
    200,
  );
  return { child, exited, lines: logs };
}

/** Starts the gateway as its own process against the test stack, and waits until it answers /healthz. */
export async function spawnGateway(port: number, env: Record<string, string> = {}): Promise<GatewayChild> {
  const { child, logs, nonJsonLines, stderr, exited } = spawnEntry('src/main.ts', {
    ...process.env,
    PORT: String(port),
    HOST: '127.0.0.1',
    AUTH_ENABLED: 'false',
    INDEXER_ENABLED: 'true',
    INDEXER_POLL_MS: '100',
    LOG_LEVEL: 'debug',
    ...env,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(
    'the gateway process to answer /healthz',
    async () => {
      if (child.exitCode !== null) throw new Error(`gateway exited with ${child.exitCode}: ${stderr()}`);
      return (await fetch(`${url}/healthz`)).ok;
    },
    120_000,
    200,
  );
  return {
    url,
    pid: child.pid!,
    child,
    logs,
    nonJsonLines,
    lines: (msg) => logs.filter((l) => l.msg === msg),
    exited,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill(signal);
      await exited;
    },
  };
}
