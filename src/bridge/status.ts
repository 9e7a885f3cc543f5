/**
 * Failures of DIMSE operations with remote nodes, in words a person can act on: the node cannot be reached, it
 * rejected the association, or it answered a DIMSE status (PS3.4 Annex C.4 for C-FIND/C-MOVE/C-GET, PS3.7 Annex C).
 */

/** What kind of failure it was. */
export type FailureKind = 'unreachable' | 'rejected' | 'dimse' | 'timeout' | 'other';

export interface DescribedFailure {
  kind: FailureKind;
  /** Words for a person; names AE titles and statuses, never an object's values. */
  message: string;
  /** DIMSE status as 0xHHHH, when the node answered one. */
  dimseStatus?: string;
}

/** The meaning of a C-FIND / C-MOVE / C-GET status (PS3.4 C.4.1.1.4, C.4.2.1.5, C.4.3.1.4; PS3.7 C). */
export function dimseStatusWords(status: number): string {
  if (status === 0x0000) return 'success';
  if (status === 0xfe00) return 'cancelled: the sub-operations were terminated by a cancel request';
  if (status === 0xb000) return 'warning: sub-operations complete, one or more failures or warnings';
  if (status === 0xff00 || status === 0xff01) return 'pending';
  if (status === 0xa700) return 'refused: out of resources';
  if (status === 0xa701) return 'refused: out of resources, unable to calculate the number of matches';
  if (status === 0xa702) return 'refused: out of resources, unable to perform sub-operations';
  if (status === 0xa801) return 'refused: move destination unknown (the node does not know our AE title)';
  if (status === 0xa900) return 'failed: identifier does not match the SOP class';
  if (status === 0x0122) return 'refused: SOP class not supported';
  if (status === 0x0124) return 'refused: not authorised';
  if (status === 0x0211) return 'failed: unrecognised operation';
  if (status >= 0xc000 && status <= 0xcfff) return 'failed: unable to process';
  return 'failed';
}

const hex = (n: number) => '0x' + n.toString(16).toUpperCase().padStart(4, '0');

/**
 * Reads a failure description (Orthanc's error details, or DCMTK's output) into words. Examples it knows:
 * `TCP Initialization Error: Connection refused`, `Association Rejected: ...`, `DIMSE status 0xC000`.
 */
export function describeFailure(text: string, node: string): DescribedFailure {
  const t = text.replace(/\s+/g, ' ');
  if (
    /connection refused|no route to host|host unreachable|network is unreachable|name or service not known|cannot resolve|TCP Initialization Error/i.test(
      t,
    )
  ) {
    return {
      kind: 'unreachable',
      message: `node ${node} is unreachable: nothing answers at its address and port`,
    };
  }
  if (/timeout|timed out/i.test(t) && !/status/i.test(t)) {
    return { kind: 'timeout', message: `node ${node} did not answer in time` };
  }
  if (/association rejected|association request failed|rejected/i.test(t)) {
    const why = /called ae title not recognized/i.test(t)
      ? ' (it does not know the AE title it was called by)'
      : /calling ae title not recognized/i.test(t)
        ? ' (it does not know our AE title)'
        : /no reason|permanent|transient/i.test(t)
          ? ` (${(/(permanent|transient)[^)]*/i.exec(t)?.[0] ?? '').trim()})`
          : '';
    return { kind: 'rejected', message: `node ${node} rejected the association${why}` };
  }
  const m = /status (?:0x)?([0-9a-f]{4})/i.exec(t);
  if (m) {
    const status = parseInt(m[1], 16);
    return {
      kind: 'dimse',
      message: `node ${node} answered DIMSE status ${hex(status)}: ${dimseStatusWords(status)}`,
      dimseStatus: hex(status),
    };
  }
  return { kind: 'other', message: `the operation with node ${node} failed` };
}
