import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import type { Pool } from 'pg';
import { DicomParseError, FailureReason, type ParsedInstance, parsePart10 } from '../dicom/parse';
import { AppError, NotFoundError } from '../errors';
import {
  type ArchivedObject,
  claimAndFind,
  indexInstances,
  type InstanceRow,
  type MembershipSource,
  setDataSetMd5,
} from '../index-db/instances';
import { type Archive, isRefusedByArchive, type StoreOutcome } from '../orthanc/archive';
import { failureMessage, isInfrastructureError } from './failures';
import { type ArchivedDigest, dataSetMd5, digestArchived } from './identity';

/** The outcome for one object, as the Store Instances Response reports it. No PHI in `message`. */
export type IngestOutcome =
  | {
      ok: true;
      parsed: ParsedInstance;
      /** True when the same object was already archived (an idempotent re-send). */
      alreadyStored: boolean;
    }
  | {
      ok: false;
      /** Failure Reason (0008,1197), PS3.18 Table I.2-2. */
      reason: number;
      message: string;
      /** What could be read of the object, for the FailedSOPSequence item. */
      sopClassUid?: string;
      sopInstanceUid?: string;
      studyInstanceUid?: string;
    };

/** Checks an object must pass besides being readable, decided by the caller (e.g. STOW's study in the URL). */
export interface IngestExpectations {
  studyInstanceUid?: string;
}

/** An object the archive holds and the index must still describe (the first half of ingestInstance). */
export interface ArchivedForIndex {
  ok: true;
  parsed: ParsedInstance;
  obj: ArchivedObject;
  /** The index already held this SOP Instance UID before this request. */
  known: boolean;
  /** The archive answered that it already held this object. */
  archiveHadIt: boolean;
}

/** A failure of one object, as the Store Instances Response reports it. */
export type IngestFailure = Extract<IngestOutcome, { ok: false }>;

/**
 * Archives one Part-10 object into Orthanc and indexes it into the given projects: archiveObject then
 * indexArchived. Never throws for a bad object: it answers a failure with a reason, so that one bad part never fails
 * the others. Throws only for infrastructure failures (database down), which the caller turns into a 5xx.
 */
export async function ingestInstance(
  deps: { db: Pool; archive: Archive },
  bytes: Buffer,
  projects: readonly string[],
  source: MembershipSource,
  expect: IngestExpectations = {},
): Promise<IngestOutcome> {
  const archived = await archiveObject(deps, bytes, expect);
  if (!archived.ok) return archived;
  return (await indexArchived(deps, [archived], projects, source))[0];
}

/**
 * The first half of ingest: one parse of the object (bounded structure walk, then the index JSON), the checks, a
 * claim on its SOP Instance UID (the change feed leaves a claimed object to its writer), and the store into the
 * archive. Nothing is indexed yet: indexArchived does it, for many objects at once. Never throws for a bad object.
 *
 * A different object under a SOP Instance UID that is already archived is refused (0x0111): accepting it would
 * either overwrite another project's data or grant the uploader access to bytes it never had. "Different" is judged
 * on the data set and its transfer syntax (ingest/identity.ts), not on the File Meta or preamble it was wrapped in.
 */
export async function archiveObject(
  deps: { db: Pool; archive: Archive },
  bytes: Buffer,
  expect: IngestExpectations = {},
): Promise<ArchivedForIndex | IngestFailure> {
  const read = readObject(bytes);
  if (!read.ok) return read;
  const { parsed } = read;
  // CVE-2019-11687: a preamble can make the file also a PE, ELF, HTML or PDF. PS3.10 §7.5 lets it be cleared, so
  // the archive only ever holds zeros there; the object is checksummed and stored as archived, without a copy.
  const archived = parsed.preambleIsZero === false ? withZeroPreamble(bytes) : undefined;
  const md5 = archived ? archived.md5 : read.md5;
  const ids = {
    sopClassUid: parsed.sopClassUid,
    sopInstanceUid: parsed.sopInstanceUid,
    studyInstanceUid: parsed.studyInstanceUid,
  };
  if (expect.studyInstanceUid && expect.studyInstanceUid !== parsed.studyInstanceUid) {
    return {
      ok: false,
      reason: FailureReason.StudyUidMismatch,
      message: 'Study Instance UID does not match the study in the request URL',
      ...ids,
    };
  }

  const datasetMd5 = read.datasetMd5;
  // Claimed before the archive has it, so that the change feed leaves it to this writer (see ingest_claims); the
  // index row of the UID comes back in the same round trip.
  const known = await claimAndFind(deps.db, parsed.sopInstanceUid);
  if (known && known.md5 !== md5) {
    const knownDataSet = await indexedDataSetMd5(deps, known, bytes.length);
    if (knownDataSet !== 'gone' && knownDataSet !== datasetMd5) return duplicate(ids);
  }

  let stored: StoreOutcome;
  try {
    stored = await deps.archive.storeInstance(archived ? archived.open() : bytes, bytes.length);
  } catch (err) {
    if (isRefusedByArchive(err)) {
      // Orthanc could not parse or accept the object itself (e.g. truncated data): this object fails, alone.
      return {
        ok: false,
        reason: FailureReason.CannotUnderstand,
        message: 'the archive could not read the object',
        ...ids,
      };
    }
    if (err instanceof AppError) {
      return {
        ok: false,
        reason: FailureReason.ProcessingFailure,
        message: 'the archive is unavailable',
        ...ids,
      };
    }
    throw err;
  }
  const archiveHadIt = stored.status === 'alreadyStored';
  // What the archive holds, which the index must describe: the bytes sent, unless Orthanc kept an earlier copy.
  let archivedFile = { md5, fileSize: bytes.length };
  if (archiveHadIt) {
    const archivedMd5 = await deps.archive.storedFileMd5(stored.archiveId);
    if (archivedMd5 !== md5) {
      if (
        archivedMd5 &&
        known &&
        known.orthanc_id === stored.archiveId &&
        known.md5 === archivedMd5 &&
        known.dataset_md5 === datasetMd5
      ) {
        archivedFile = { md5: archivedMd5, fileSize: Number(known.file_size) };
      } else {
        // Not known to the index (e.g. a C-STORE the change feed has not reached yet): read the archived file back.
        const digest = await archivedDigest(deps, stored.archiveId, bytes.length);
        if (typeof digest === 'string' || digest.datasetMd5 !== datasetMd5) return duplicate(ids);
        archivedFile = { md5: digest.md5, fileSize: digest.size };
      }
    }
  }
  return {
    ok: true,
    parsed,
    obj: { parsed, orthancId: stored.archiveId, ...archivedFile, datasetMd5 },
    known: known !== undefined,
    archiveHadIt,
  };
}

/**
 * The second half of ingest: indexes archived objects into the given projects in one statement (one commit), and
 * answers one outcome per object, in order. When the index refuses the batch for a reason of its data (not an
 * outage), each object is tried alone, so that only the one at fault fails. Throws only for infrastructure failures.
 */
export async function indexArchived(
  deps: { db: Pool },
  items: readonly ArchivedForIndex[],
  projects: readonly string[],
  source: MembershipSource,
): Promise<IngestOutcome[]> {
  if (items.length === 0) return [];
  const ok = (a: ArchivedForIndex): IngestOutcome => ({
    ok: true,
    parsed: a.parsed,
    alreadyStored: a.archiveHadIt && a.known,
  });
  try {
    await indexInstances(
      deps.db,
      items.map((a) => a.obj),
      projects,
      source,
    );
    return items.map(ok);
  } catch (err) {
    if (isInfrastructureError(err)) throw err;
    if (items.length === 1) {
      // The index refused this object (not a database outage): it fails alone. The archive holds it; its claim is
      // released, so the change feed sets it aside with its UIDs, as it does for C-STORE.
      const p = items[0].parsed;
      return [
        {
          ok: false,
          reason: FailureReason.ProcessingFailure,
          message: failureMessage(err),
          sopClassUid: p.sopClassUid,
          sopInstanceUid: p.sopInstanceUid,
          studyInstanceUid: p.studyInstanceUid,
        },
      ];
    }
    const out: IngestOutcome[] = [];
    for (const a of items) out.push(...(await indexArchived(deps, [a], projects, source)));
    return out;
  }
}

/** A Part-10 object read for indexing, or why it cannot be. */
export type ReadOutcome =
  | { ok: true; parsed: ParsedInstance; md5: string; datasetMd5: string }
  | { ok: false; reason: number; message: string; sopClassUid?: string; sopInstanceUid?: string };

/**
 * Parses an object and checksums its bytes, applying the checks every way into the index shares (STOW here, the
 * change feed and re-index for objects Orthanc already holds). Never throws for a bad object.
 */
export function readObject(bytes: Buffer): ReadOutcome {
  try {
    const parsed = parsePart10(bytes);
    const datasetMd5 = dataSetMd5(bytes);
    // parsePart10 has walked the File Meta already; a head it accepts is always one locateDataSet reads.
    if (datasetMd5 === undefined)
      throw new DicomParseError(FailureReason.CannotUnderstand, 'no File Meta group');
    return { ok: true, parsed, md5: createHash('md5').update(bytes).digest('hex'), datasetMd5 };
  } catch (err) {
    if (err instanceof DicomParseError)
      return { ok: false, reason: err.reason, message: err.message, ...err.known };
    return { ok: false, reason: FailureReason.CannotUnderstand, message: 'unreadable DICOM object' };
  }
}

/**
 * The data-set hash of an indexed object: kept in its row, or (rows indexed before it was kept) computed from the
 * archived file and stored for the next time. 'gone' when the archive no longer holds it, 'different' when the
 * archived file cannot hold the same data set as an object of `size` bytes.
 */
async function indexedDataSetMd5(
  deps: { db: Pool; archive: Archive },
  row: InstanceRow,
  size: number,
): Promise<string | 'gone' | 'different'> {
  if (row.dataset_md5) return row.dataset_md5;
  const digest = await archivedDigest(deps, row.orthanc_id, size);
  if (typeof digest === 'string') return digest;
  if (!digest.datasetMd5) return 'different';
  await setDataSetMd5(deps.db, row.sop_instance_uid, digest.datasetMd5);
  return digest.datasetMd5;
}

/**
 * Reads an archived file back from Orthanc (the raw attachment, which Orthanc serves without parsing it) to compare it
 * with an object of `size` bytes. At most twice that plus 1 MiB is read: re-encoding lengths, File Meta and padding
 * change a file's size by far less, so a larger file is another data set and is answered 'different' unread.
 */
async function archivedDigest(
  deps: { archive: Archive },
  orthancId: string,
  size: number,
): Promise<ArchivedDigest | 'gone' | 'different'> {
  try {
    const file = await deps.archive.openInstance(orthancId);
    const digest = await digestArchived(file.body, 2 * size + 1024 * 1024);
    return digest === 'too-large' ? 'different' : digest;
  } catch (err) {
    if (err instanceof NotFoundError) return 'gone';
    throw err;
  }
}

const ZERO_PREAMBLE = Buffer.alloc(128);

/** The object with its 128-byte preamble zeroed, as a stream of two slices, and the MD5 of those bytes. */
function withZeroPreamble(bytes: Buffer): { md5: string; open(): Readable } {
  const rest = bytes.subarray(128);
  return {
    md5: createHash('md5').update(ZERO_PREAMBLE).update(rest).digest('hex'),
    open: () => Readable.from([ZERO_PREAMBLE, rest], { objectMode: false }),
  };
}

function duplicate(ids: {
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
}): IngestFailure {
  return {
    ok: false,
    reason: FailureReason.DuplicateSopInstance,
    message: 'a different object is already archived under this SOP Instance UID',
    ...ids,
  };
}
