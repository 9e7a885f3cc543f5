/**
 * A C-STORE arrival of an object the archive already holds (issue 15, defect 2). Orthanc 1.10 would answer it
 * AlreadyStored and log no change, so its C-STORE filter hands the received bytes here before Orthanc stores
 * anything, and answers the modality with the DIMSE status decided here.
 *
 * Only an identical data set (ingest/identity.ts: group 0002 excluded) links the project the route leads to: a
 * sender that merely knows a SOP Instance UID must not gain access to the archived object, and must never overwrite
 * it, so a different data set is refused (Orthanc then stores nothing).
 */
import type { Pool } from 'pg';
import type { Config } from '../config';
import { findInstance, type InstanceRow } from '../index-db/instances';
import type { Logger } from '../logger';
import type { Archive } from '../orthanc/archive';
import { NotFoundError } from '../errors';
import { recordFailure } from '../index-db/routing';
import { projectsOf } from '../index-db/arrivals';
import { archivedIdentity, routeInstance } from './arrival';
import { readObject } from './ingest';
import type { ArrivalRoute } from './routing';
import { dataSetMd5, digestArchived } from './identity';

/** DIMSE statuses of C-STORE answers (PS3.7 Annex C and §9.1.1.1.9). */
export const DimseStatus = {
  Success: 0x0000,
  /** The SOP Instance UID is archived with another data set (the same code STOW-RS uses, 0x0111). */
  DuplicateSopInstance: 0x0111,
  /** Transient: the sender should try again later (the archived copy is not indexed yet, the index is down). */
  RefusedOutOfResources: 0xa700,
  CannotUnderstand: 0xc000,
} as const;

/** What deciding a re-arrival needs. */
export interface RearrivalDeps {
  db: Pool;
  archive: Archive;
  config: Pick<Config, 'DEFAULT_PROJECT'>;
  logger: Logger;
}

/** How long a re-arrival waits for the change feed to index the archived copy it repeats. */
const WAIT_FOR_INDEX_MS = 3000;
const WAIT_STEP_MS = 100;

/** The verdict on one re-arrival, and what it did. */
export interface RearrivalVerdict {
  status: number;
  /** The project it was linked to, null for quarantine, undefined when refused or left as it was (a re-send). */
  projectId?: string | null;
}

/**
 * Decides a C-STORE arrival of an archived SOP Instance UID from the received bytes and the association's route.
 * Throws only when the index or the archive is unavailable (the caller answers "retry later").
 */
export async function handleRearrival(
  deps: RearrivalDeps,
  bytes: Buffer,
  route: ArrivalRoute,
): Promise<RearrivalVerdict> {
  const read = readObject(bytes);
  if (!read.ok) return unindexableRearrival(deps, bytes, read, route);
  const { parsed } = read;
  const row = await waitForIndexed(deps.db, parsed.sopInstanceUid);
  if (!row) {
    // Handed over as a possible race with a first copy (orthanc-config/aperture-arrivals.py) that is not in the archive
    // after all (it failed, or was deleted since): a new object, which Orthanc stores and the change feed routes.
    if ((await deps.archive.findInstance(parsed.sopInstanceUid)) === null) {
      deps.logger.debug(
        { sopInstanceUid: parsed.sopInstanceUid },
        'C-STORE arrival not archived: stored as new',
      );
      return { status: DimseStatus.Success };
    }
    // The change feed has not indexed the archived copy yet (or could not): the sender tries again later, when the
    // identity can be judged. Refusing is what keeps the arrival from being dropped.
    deps.logger.info({ sopInstanceUid: parsed.sopInstanceUid }, 'C-STORE re-arrival before indexing: retry');
    return { status: DimseStatus.RefusedOutOfResources };
  }
  const archivedDataSet = row.dataset_md5 ?? (await archivedDataSetMd5(deps, row, bytes.length));
  if (archivedDataSet !== read.datasetMd5) {
    deps.logger.warn(
      { sopInstanceUid: parsed.sopInstanceUid, calledAet: route.calledAet, callingAet: route.callingAet },
      'C-STORE of a different data set under an archived SOP Instance UID: refused',
    );
    return { status: DimseStatus.DuplicateSopInstance };
  }

  // Identical: describe the archived file (what the index holds), not the bytes received (their File Meta differs).
  const obj = {
    parsed,
    orthancId: row.orthanc_id,
    fileSize: Number(row.file_size),
    md5: row.md5,
    datasetMd5: read.datasetMd5,
  };
  // The same sender sending the same object again (a batch re-sent after a failed association, a modality's retry)
  // repeats an arrival that was routed already. Orthanc's filter does not see the called AE title, so its route here
  // may find no rule where the first arrival's did: that must not put a placed object in quarantine as well.
  const resend = await resentBySameSender(deps, row, route);
  const decision = await routeInstance(deps, obj, route, {
    indexUnrouted: false,
    quarantineUnrouted: !resend,
  });
  deps.logger.debug(
    { sopInstanceUid: parsed.sopInstanceUid, projectId: decision.projectId, ruleId: decision.ruleId, resend },
    decision.projectId || !resend
      ? 'C-STORE re-arrival linked'
      : 'C-STORE re-send of a placed object: left as it is',
  );
  return { status: DimseStatus.Success, projectId: decision.projectId ?? (resend ? undefined : null) };
}

/** Whether the archived copy is already in a project and arrived from the calling AE title this re-arrival has. */
async function resentBySameSender(
  deps: RearrivalDeps,
  row: InstanceRow,
  route: ArrivalRoute,
): Promise<boolean> {
  if (!route.callingAet || (await projectsOf(deps.db, row.sop_instance_uid)).length === 0) return false;
  try {
    const first = await deps.archive.arrivalOrigin(row.orthanc_id);
    return (first.callingAet ?? '').trim() === route.callingAet.trim();
  } catch (err) {
    if (err instanceof NotFoundError) return false;
    throw err;
  }
}

async function waitForIndexed(db: Pool, sopInstanceUid: string): Promise<InstanceRow | undefined> {
  const deadline = Date.now() + WAIT_FOR_INDEX_MS;
  for (;;) {
    const row = await findInstance(db, sopInstanceUid);
    if (row || Date.now() >= deadline) return row;
    await new Promise((r) => setTimeout(r, WAIT_STEP_MS));
  }
}

/** Data-set hash of an archived file indexed before the hash was kept; undefined when it cannot be the same. */
async function archivedDataSetMd5(
  deps: RearrivalDeps,
  row: InstanceRow,
  size: number,
): Promise<string | undefined> {
  const max = 2 * size + 1024 * 1024;
  const file = await deps.archive.openInstance(row.orthanc_id);
  const digest = await digestArchived(file.body, max);
  return digest === 'too-large' ? undefined : digest.datasetMd5;
}

/**
 * A re-arrival the index cannot take (the parse refuses it). When the archived copy under its SOP Instance UID holds
 * the same data set, it is the object that arrived before and was set aside (index_failures): the arrival is recorded
 * there with its route, and answered as the first arrival was (Success, Orthanc keeps its copy), so that re-sending
 * it is not refused for the wrong reason. A copy whose data set cannot be walked, or differs, is refused.
 */
async function unindexableRearrival(
  deps: RearrivalDeps,
  bytes: Buffer,
  read: Extract<ReturnType<typeof readObject>, { ok: false }>,
  route: ArrivalRoute,
): Promise<RearrivalVerdict> {
  const orthancId = read.sopInstanceUid ? await deps.archive.findInstance(read.sopInstanceUid) : null;
  if (read.sopInstanceUid && orthancId === null) {
    // Handed over as a possible race with a first copy that is not in the archive after all (it failed, or was
    // deleted since): a new object, which Orthanc stores and the change feed sets aside with its UIDs, as it does for
    // any object the index cannot take. Refusing it would leave no trace of the arrival anywhere.
    deps.logger.debug(
      { sopInstanceUid: read.sopInstanceUid, reason: read.reason },
      'C-STORE arrival the index cannot take, not archived: stored as new',
    );
    return { status: DimseStatus.Success };
  }
  const datasetMd5 = dataSetMd5(bytes);
  if (datasetMd5 && orthancId) {
    let archived: string | undefined;
    try {
      const file = await deps.archive.openInstance(orthancId);
      const digest = await digestArchived(file.body, 2 * bytes.length + 1024 * 1024);
      archived = digest === 'too-large' ? undefined : digest.datasetMd5;
    } catch (err) {
      if (!(err instanceof NotFoundError)) throw err;
    }
    if (archived === datasetMd5) {
      const ids = await archivedIdentity(deps.archive, orthancId);
      await recordFailure(deps.db, { orthancId, ...ids, reason: read.reason, message: read.message, route });
      deps.logger.warn(
        { orthancId, sopInstanceUid: read.sopInstanceUid, reason: read.reason },
        'C-STORE re-arrival of an object the index cannot take: set aside again',
      );
      return { status: DimseStatus.Success, projectId: null };
    }
  }
  // Orthanc holds an object under this UID; a copy we cannot read cannot be shown to be the same one.
  deps.logger.warn(
    { sopInstanceUid: read.sopInstanceUid, reason: read.reason },
    'C-STORE re-arrival unreadable: refused',
  );
  return { status: DimseStatus.CannotUnderstand };
}
