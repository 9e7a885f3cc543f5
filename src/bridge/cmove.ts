/**
 * C-MOVE of one study with DCMTK movescu: the gateway's worker asks the node (calling AE = the archive's own AE title)
 * to send the study to the archive's AE title, so the objects still arrive through the archive's one DICOM port and
 * its change feed, exactly as with Orthanc's own C-MOVE SCU. The reason for movescu: Orthanc 1.10's
 * `/modalities/{id}/move` is synchronous and its job form (`/queries/{id}/retrieve` with `Asynchronous`) cannot be
 * cancelled while a study is being moved (its cancel waits for the step: tried, the whole study still arrived).
 * Ending movescu aborts the association, and the node stops its sub-operations at once (tried against Orthanc 1.10:
 * one more instance arrived after the abort). So a cancel takes effect mid-study.
 */
import { spawn } from 'node:child_process';
import { DimseFailure } from '../orthanc/remote-nodes';

/**
 * DCMTK `movescu` / `getscu` arguments of a study-level retrieve from `node` (Study Root, verbose so the progress
 * lines can be read), with the tool's own options (`extra`) before the peer's address. Timeouts: connection and ACSE at
 * most 30 s, DIMSE as given.
 */
export function studyRetrieveArgs(
  callingAet: string,
  node: { aet: string; host: string; port: number },
  studyUid: string,
  timeoutS: number,
  extra: string[],
): string[] {
  const t = String(Math.min(timeoutS, 30));
  return [
    '-v',
    '-aet',
    callingAet,
    '-aec',
    node.aet,
    ...extra,
    '-S',
    '-to',
    t,
    '-ta',
    t,
    '-td',
    String(timeoutS),
    '-k',
    'QueryRetrieveLevel=STUDY',
    '-k',
    `StudyInstanceUID=${studyUid}`,
    node.host,
    String(node.port),
  ];
}

/** How the move ended when the node did not refuse it. */
export interface CmoveOutcome {
  /** `success`, `warning` (some sub-operations failed), or `aborted` (the signal fired). */
  result: 'success' | 'warning' | 'aborted';
  /** Move responses received (pending ones count about one per sub-operation). */
  responses: number;
}

/** DCMTK's words for C-MOVE statuses (DU_cmoveStatusString) -> the status (PS3.4 C.4.2.1.5). */
const STATUS_OF: Array<[RegExp, number]> = [
  [/move ?destination ?unknown/i, 0xa801],
  [/unable to calculate|numberofmatches/i, 0xa701],
  [/unable to perform sub-?operations|outofresourcessuboperations/i, 0xa702],
  [/out ?of ?resources/i, 0xa700],
  [/sop ?class ?not ?supported/i, 0x0122],
  [/not ?authori[sz]ed/i, 0x0124],
  [/identifier ?does ?not ?match/i, 0xa900],
  [/unable ?to ?process/i, 0xc000],
  [/^cancel/i, 0xfe00],
];

/** The final C-MOVE response's DCMTK status text as a DIMSE status, when it names one. */
export function moveStatusOf(text: string): number | undefined {
  if (/^success/i.test(text)) return 0x0000;
  if (/^warning/i.test(text)) return 0xb000;
  for (const [re, status] of STATUS_OF) if (re.test(text)) return status;
  return undefined;
}

/** Output kept from movescu: its last lines only (one line per pending response would grow with the study). */
const TAIL_BYTES = 16 * 1024;

/**
 * Runs movescu for one study. Resolves `success`/`warning`/`aborted`; throws DimseFailure with a description
 * status.ts reads into words (unreachable, association rejected, "DIMSE status 0xA801") when the node refused.
 */
export async function cmoveStudy(opts: {
  node: { aet: string; host: string; port: number };
  /** The archive's AE title: the caller and the move destination. */
  ownAet: string;
  studyUid: string;
  timeoutS: number;
  signal?: AbortSignal;
}): Promise<CmoveOutcome> {
  const args = studyRetrieveArgs(opts.ownAet, opts.node, opts.studyUid, opts.timeoutS, ['-aem', opts.ownAet]);
  if (opts.signal?.aborted) return { result: 'aborted', responses: 0 };
  let tail = '';
  let responses = 0;
  let last: string | undefined;
  const child = spawn('movescu', args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const reader = () => {
    let partial = '';
    return (chunk: Buffer) => {
      const lines = (partial + chunk.toString('latin1')).split('\n');
      partial = lines.pop() ?? '';
      if (partial.length > TAIL_BYTES) partial = partial.slice(-TAIL_BYTES);
      for (const line of lines) {
        const m = /Received (?:Final )?Move Response(?: \d+)? \(([^)]*)\)/.exec(line);
        if (m) {
          responses++;
          last = m[1];
        }
        tail = (tail + line + '\n').slice(-TAIL_BYTES);
      }
    };
  };
  child.stdout.on('data', reader());
  child.stderr.on('data', reader());
  const abort = () => child.kill('SIGTERM');
  opts.signal?.addEventListener('abort', abort, { once: true });
  const deadline = setTimeout(() => child.kill('SIGKILL'), (opts.timeoutS + 30) * 1000);
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('close', (c) => resolve(c));
    });
    if (opts.signal?.aborted) return { result: 'aborted', responses };
    if (last !== undefined && /^success/i.test(last) && code === 0) return { result: 'success', responses };
    if (last !== undefined && /^warning/i.test(last)) return { result: 'warning', responses };
    if (last !== undefined && !/^pending/i.test(last)) {
      const status = moveStatusOf(last);
      throw new DimseFailure(
        status === undefined
          ? `C-MOVE answered ${last}`
          : `C-MOVE answered DIMSE status 0x${status.toString(16).toUpperCase().padStart(4, '0')} (${last})`,
      );
    }
    // DCMTK spreads one failure over several lines ("Association Request Failed:", then its reason).
    const fatal = [...tail.matchAll(/^[FE]: (.*)$/gm)]
      .map((m) => m[1].trim())
      .filter(Boolean)
      .join(' ');
    throw new DimseFailure(fatal || `movescu ended (exit ${code}) before the node answered the C-MOVE`);
  } finally {
    clearTimeout(deadline);
    opts.signal?.removeEventListener('abort', abort);
  }
}
