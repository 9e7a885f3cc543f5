/**
 * C-GET from a remote node with DCMTK getscu (Orthanc 1.10 has no C-GET SCU). getscu writes each received object to
 * a private temporary folder; each is handed to the gateway's own ingest (bounded parse, checks, store, index into the
 * project) as soon as getscu has answered its C-STORE, while the node goes on sending, exactly as a STOW part would
 * be: nothing reaches the archive that the gateway has not parsed. Disk use is bounded: when MAX_BACKLOG received
 * objects wait for the ingest, getscu is paused (SIGSTOP: the node waits for its C-STORE answer) until half are done.
 * One file is in memory at a time; the folder is removed whatever happens.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { ingestInstance } from '../ingest/ingest';
import type { Archive } from '../orthanc/archive';
import { studyRetrieveArgs } from './cmove';

/** Received objects waiting for the ingest before getscu is paused. */
export const CGET_MAX_BACKLOG = 16;
/** Output kept from getscu: its last lines only (a line per object would grow with the study). */
const TAIL_BYTES = 16 * 1024;

/** What a C-GET of one study did. */
export interface CgetOutcome {
  /** Objects the node sent and the gateway stored (or already held identically) in the project. */
  stored: number;
  /** Objects the node sent that the gateway refused (unreadable, too large, a different object under a UID). */
  refused: number;
  bytes: number;
  /** The node's final sub-operation counts and status, as getscu reported them. */
  failedSubOps: number;
  warningSubOps: number;
  /** The last C-GET response status (e.g. Success, or a status text), or the association failure text. */
  report: string;
  ok: boolean;
  /** The signal ended getscu before the node finished. */
  aborted: boolean;
  /** Most received objects that waited for the ingest at once (bounded by CGET_MAX_BACKLOG, plus one being written). */
  maxBacklog: number;
}

export interface CgetNode {
  aet: string;
  host: string;
  port: number;
}

/** Runs getscu for one study and ingests what arrives into `projectId` while it runs. */
export async function cgetStudy(
  deps: { db: Pool; archive: Archive },
  node: CgetNode,
  opts: {
    callingAet: string;
    studyUid: string;
    projectId: string;
    timeoutS: number;
    maxObjectBytes: number;
    dir?: string;
    /** Ends getscu (aborting the association); what arrived until then is still ingested. */
    signal?: AbortSignal;
  },
): Promise<CgetOutcome> {
  const dir = await mkdtemp(join(opts.dir ?? tmpdir(), 'aperture-cget-'));
  try {
    const args = studyRetrieveArgs(opts.callingAet, node, opts.studyUid, opts.timeoutS, ['-od', dir]);
    let tail = '';
    let answered = 0;
    let last: string | undefined;
    let exited = false;
    let paused = false;
    let wake: (() => void) | undefined;
    const poke = () => {
      wake?.();
      wake = undefined;
    };
    const child = spawn('getscu', args, { stdio: ['ignore', 'pipe', 'pipe'] });
    const reader = () => {
      let partial = '';
      return (chunk: Buffer) => {
        const lines = (partial + chunk.toString('latin1')).split('\n');
        partial = (lines.pop() ?? '').slice(-TAIL_BYTES);
        for (const line of lines) {
          // getscu answers a C-STORE once the object is written to its file.
          if (/Sending C-STORE Response/.test(line)) answered++;
          const m = /Received C-GET Response \(([^)]*)\)/.exec(line);
          if (m) last = m[1];
          tail = (tail + line + '\n').slice(-TAIL_BYTES);
        }
        poke();
      };
    };
    child.stdout.on('data', reader());
    child.stderr.on('data', reader());
    const closed = new Promise<void>((resolve) => {
      const end = (err?: Error) => {
        if (err) tail += `\nF: ${err.message}\n`;
        exited = true;
        poke();
        resolve();
      };
      child.once('error', end);
      child.once('close', () => end());
    });
    const resume = () => {
      if (paused) child.kill('SIGCONT');
      paused = false;
    };
    const stop = () => {
      resume();
      child.kill('SIGTERM');
    };
    if (opts.signal?.aborted) stop();
    opts.signal?.addEventListener('abort', stop, { once: true });
    const deadline = setTimeout(stop, (opts.timeoutS + 30) * 1000);
    const ingested = new Set<string>();
    let stored = 0;
    let refused = 0;
    let bytes = 0;
    let maxBacklog = 0;
    try {
      for (;;) {
        const finished = exited;
        const waiting = (await readdir(dir)).filter((n) => !ingested.has(n));
        maxBacklog = Math.max(maxBacklog, waiting.length);
        // Written and answered: every file once getscu has ended, else the oldest `answered - ingested` ones (the
        // newest file may still be being written).
        const complete = finished ? waiting.length : Math.max(0, answered - ingested.size);
        let ready = waiting;
        if (waiting.length > complete) {
          const times = await Promise.all(
            waiting.map(async (n) => ({ n, t: (await stat(join(dir, n))).mtimeMs })),
          );
          ready = times
            .sort((a, b) => a.t - b.t)
            .slice(0, complete)
            .map((x) => x.n);
        }
        if (!finished && !paused && answered - ingested.size >= CGET_MAX_BACKLOG) {
          child.kill('SIGSTOP');
          paused = true;
        }
        for (const name of ready) {
          ingested.add(name);
          const path = join(dir, name);
          const size = (await stat(path)).size;
          if (size > opts.maxObjectBytes) {
            refused++;
            await rm(path, { force: true });
          } else {
            const data = await readFile(path);
            await rm(path, { force: true });
            const out = await ingestInstance(deps, data, [opts.projectId], 'route');
            if (out.ok) {
              stored++;
              bytes += size;
            } else refused++;
          }
          if (paused && answered - ingested.size < CGET_MAX_BACKLOG / 2) resume();
        }
        if (finished && ready.length === 0) break;
        if (ready.length === 0) {
          await new Promise<void>((r) => {
            wake = r;
            setTimeout(r, 500);
          });
        }
      }
    } finally {
      clearTimeout(deadline);
      opts.signal?.removeEventListener('abort', stop);
      if (!exited) stop();
      await closed;
    }
    const count = (what: string) =>
      Number(new RegExp(`Number of ${what} Suboperations\\s*:\\s*(\\d+)`).exec(tail)?.[1] ?? 0);
    const fatal = [...tail.matchAll(/^[FE]: (.*)$/gm)]
      .map((m) => m[1].trim())
      .filter(Boolean)
      .join(' ');
    const ok = last === 'Success' && count('Failed') === 0 && refused === 0;
    return {
      stored,
      refused,
      bytes,
      failedSubOps: count('Failed'),
      warningSubOps: count('Warning'),
      report: last ? `C-GET response: ${last}` : fatal || 'getscu gave no C-GET response',
      ok,
      aborted: opts.signal?.aborted === true,
      maxBacklog,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
