/**
 * C-GET from a remote node with DCMTK getscu (Orthanc 1.10 has no C-GET SCU). The received files land in a private
 * temporary folder and each goes through the gateway's own ingest (bounded parse, checks, store, index into the
 * project), exactly as a STOW part would: nothing reaches the archive that the gateway has not parsed. One file is in
 * memory at a time; the folder is removed whatever happens.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Pool } from 'pg';
import { ingestInstance } from '../ingest/ingest';
import type { Archive } from '../orthanc/archive';

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
}

export interface CgetNode {
  aet: string;
  host: string;
  port: number;
}

/** Runs getscu for one study and ingests what arrived into `projectId`. */
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
    const args = [
      '-v',
      '-aet',
      opts.callingAet,
      '-aec',
      node.aet,
      '-S',
      '-to',
      String(Math.min(opts.timeoutS, 30)),
      '-ta',
      String(Math.min(opts.timeoutS, 30)),
      '-td',
      String(opts.timeoutS),
      '-k',
      'QueryRetrieveLevel=STUDY',
      '-k',
      `StudyInstanceUID=${opts.studyUid}`,
      '-od',
      dir,
      node.host,
      String(node.port),
    ];
    const output = await new Promise<string>((resolve) => {
      execFile(
        'getscu',
        args,
        { timeout: (opts.timeoutS + 30) * 1000, maxBuffer: 4 * 1024 * 1024, signal: opts.signal },
        (err, so, se) => resolve(`${so ?? ''}\n${se ?? ''}${err && !so && !se ? String(err.message) : ''}`),
      );
    });
    const count = (what: string) =>
      Number(new RegExp(`Number of ${what} Suboperations\\s*:\\s*(\\d+)`).exec(output)?.[1] ?? 0);
    const responses = [...output.matchAll(/Received C-GET Response \(([^)]*)\)/g)].map((m) => m[1]);
    const last = responses[responses.length - 1];
    const fatal = /^F: (.*)$/m.exec(output)?.[1] ?? /^E: (.*)$/m.exec(output)?.[1];
    let stored = 0;
    let refused = 0;
    let bytes = 0;
    for (const name of (await readdir(dir)).sort()) {
      const path = join(dir, name);
      const size = (await stat(path)).size;
      if (size > opts.maxObjectBytes) {
        refused++;
        await rm(path, { force: true });
        continue;
      }
      const data = await readFile(path);
      await rm(path, { force: true });
      const out = await ingestInstance(deps, data, [opts.projectId], 'route');
      if (out.ok) {
        stored++;
        bytes += size;
      } else refused++;
    }
    const ok = last === 'Success' && count('Failed') === 0 && refused === 0;
    return {
      stored,
      refused,
      bytes,
      failedSubOps: count('Failed'),
      warningSubOps: count('Warning'),
      report: last ? `C-GET response: ${last}` : (fatal ?? 'getscu gave no C-GET response'),
      ok,
      aborted: opts.signal?.aborted === true,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
