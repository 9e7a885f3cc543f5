/**
 * Indexing an object Orthanc already holds (it arrived by C-STORE, or a re-index finds it): read it, route it to a
 * project or to quarantine, index it through the same code path as STOW. Shared by the change feed and `reindex`.
 */
import { buffer } from 'node:stream/consumers';
import type { Pool } from 'pg';
import type { Config } from '../config';
import { FailureReason } from '../dicom/parse';
import { NotFoundError } from '../errors';
import { indexText } from '../dicom/text';
import {
  type ArchivedObject,
  findInstance,
  findInstanceByOrthancId,
  indexInstance,
  isClaimed,
  removeInstance,
} from '../index-db/instances';
import {
  activeRules,
  clearFailure,
  isPlaced,
  quarantineInstance,
  recordFailure,
  type RouteDecision,
  stickyDecision,
} from '../index-db/routing';
import { findUnlisted, projectExists, projectsOf } from '../index-db/arrivals';
import { expectedArrival } from '../index-db/bridge';
import type { Logger } from '../logger';
import type { Archive, ArrivalOrigin } from '../orthanc/archive';
import { failureMessage } from './failures';
import { readObject } from './ingest';
import { type ArrivalRoute, firstMatchingRule } from './routing';

/** What arrival indexing needs. */
export interface ArrivalDeps {
  db: Pool;
  archive: Archive;
  config: Pick<Config, 'DEFAULT_PROJECT'> & Partial<Pick<Config, 'INDEXER_CLAIM_TTL_MS'>>;
  logger: Logger;
}

/** Default of INDEXER_CLAIM_TTL_MS for callers whose config lacks it. */
const CLAIM_TTL_MS = 120_000;

/** What happened to one archived object. */
export type ArrivalOutcome =
  /** Newly placed: in a project (projectId) or in quarantine (projectId null). */
  | { status: 'indexed'; sopInstanceUid: string; seriesUid: string; projectId: string | null }
  /** Already placed; its row was rewritten because the archived copy or its parse differ (re-index). */
  | { status: 'updated'; sopInstanceUid: string }
  /** Already placed and identical: nothing to do. */
  | { status: 'unchanged'; sopInstanceUid: string }
  /** The index refused it; recorded in index_failures. */
  | { status: 'failed'; reason: number; message: string }
  /** No longer in the archive. */
  | { status: 'gone' }
  /** Stored over REST by a gateway process that has not indexed it yet: its writer will (see deferRest). */
  | { status: 'deferred' };

/** Options of indexArrival. */
export interface ArrivalOptions {
  /**
   * Re-read and re-parse objects that are already placed, rewriting their rows when the parse differs
   * (re-index after an upgrade). Without it, a placed object is answered 'unchanged' without touching Orthanc.
   */
  refresh?: boolean;
  /**
   * Answer 'deferred' for an object stored over Orthanc's REST API (Origin RestApi), not indexed yet, whose SOP
   * Instance UID a gateway STOW has claimed (ingest_claims): that writer stores first and indexes right after, into
   * the uploader's project, and must win the race. Objects others stored over REST are not claimed: indexed at once.
   */
  deferRest?: boolean;
}

/** The route an object took into the archive; empty strings for objects that did not come by DIMSE. */
export function routeOf(meta: ArrivalOrigin): ArrivalRoute {
  // indexText: an AE title is whatever bytes the peer sent, and these strings go into text columns.
  return {
    calledAet: indexText(meta.calledAet ?? '').trim(),
    callingAet: indexText(meta.callingAet ?? '').trim(),
    remoteIp: indexText(meta.remoteIp ?? '').trim(),
  };
}

/** An archived object read and parsed, ready to be placed. */
export interface ReadArrival {
  orthancId: string;
  route: ArrivalRoute;
  obj: ArchivedObject;
}

/**
 * Indexes one archived object by its Orthanc id: readArrival then placeArrival. Idempotent: running it again for
 * the same object changes nothing, so the change feed may replay events after a crash. Throws only for
 * infrastructure failures (archive or database unavailable); an object the index cannot take is recorded as a
 * failure and answered 'failed'.
 */
export async function indexArrival(
  deps: ArrivalDeps,
  orthancId: string,
  opts: ArrivalOptions = {},
): Promise<ArrivalOutcome> {
  const read = await readArrival(deps, orthancId, opts);
  return 'status' in read ? read : placeArrival(deps, read);
}

/**
 * The reading half of indexArrival: what Orthanc knows of the object (route metadata, bytes) and its parse. Reads
 * run concurrently; placing runs in arrival order so that the first instance of a series decides its route.
 * Answers an outcome directly when there is nothing to place.
 */
export async function readArrival(
  deps: ArrivalDeps,
  orthancId: string,
  opts: ArrivalOptions = {},
): Promise<ReadArrival | ArrivalOutcome> {
  const { db, archive } = deps;
  const known = await findInstanceByOrthancId(db, orthancId);
  if (known && !opts.refresh && (await isPlaced(db, known.sop_instance_uid))) {
    return { status: 'unchanged', sopInstanceUid: known.sop_instance_uid };
  }
  let meta: ArrivalOrigin;
  let bytes: Buffer;
  try {
    meta = await archive.arrivalOrigin(orthancId);
    if (!known && opts.deferRest && meta.origin === 'RestApi' && (await claimedByWriter(deps, orthancId))) {
      return { status: 'deferred' };
    }
    const file = await archive.openInstance(orthancId);
    bytes = await buffer(file.body);
  } catch (err) {
    if (err instanceof NotFoundError) return { status: 'gone' };
    throw err;
  }
  const route = routeOf(meta);
  const read = readObject(bytes);
  if (!read.ok) {
    // Our parse failed, so the UIDs come from Orthanc's database (its main DICOM tags), not from the file.
    let ids: ArchivedIdentity;
    try {
      ids = await archivedIdentity(archive, orthancId);
    } catch (err) {
      if (err instanceof NotFoundError) return { status: 'gone' };
      throw err;
    }
    await recordFailure(db, { orthancId, ...ids, reason: read.reason, message: read.message, route });
    deps.logger.warn(
      { orthancId, sopInstanceUid: ids.sopInstanceUid, reason: read.reason, message: read.message },
      'archived object not indexable',
    );
    return { status: 'failed', reason: read.reason, message: read.message };
  }
  return {
    orthancId,
    route,
    obj: {
      parsed: read.parsed,
      orthancId,
      fileSize: bytes.length,
      md5: read.md5,
      datasetMd5: read.datasetMd5,
    },
  };
}

/**
 * Whether a gateway STOW claimed this archived object (by its SOP Instance UID, read from Orthanc's database) and
 * may still index it.
 */
async function claimedByWriter(deps: ArrivalDeps, orthancId: string): Promise<boolean> {
  const tags = await deps.archive.instanceTags(orthancId);
  const sop = indexText(tags.SOPInstanceUID ?? '').trim();
  if (!sop) return false;
  return isClaimed(deps.db, sop, deps.config.INDEXER_CLAIM_TTL_MS ?? CLAIM_TTL_MS);
}

/** The placing half of indexArrival: refuses a second copy of a UID, refreshes a placed object, or routes a new one. */
export async function placeArrival(deps: ArrivalDeps, arrival: ReadArrival): Promise<ArrivalOutcome> {
  const { db, archive } = deps;
  const { orthancId, route, obj } = arrival;
  const { parsed } = obj;

  // Orthanc keys instances by Patient ID too, so one SOP Instance UID can sit in the archive twice (a re-send with a
  // corrected Patient ID). The index holds one object per UID: the second copy is refused while the first exists.
  const bySop = await findInstance(db, parsed.sopInstanceUid);
  if (bySop && bySop.orthanc_id !== orthancId && (await archive.hasInstance(bySop.orthanc_id))) {
    const message = 'a different archived object already holds this SOP Instance UID';
    await recordFailure(db, {
      orthancId,
      sopInstanceUid: parsed.sopInstanceUid,
      seriesUid: parsed.seriesInstanceUid,
      studyUid: parsed.studyInstanceUid,
      reason: FailureReason.DuplicateSopInstance,
      message,
      route,
    });
    deps.logger.warn({ orthancId, sopInstanceUid: parsed.sopInstanceUid }, message);
    return { status: 'failed', reason: FailureReason.DuplicateSopInstance, message };
  }

  await clearFailure(db, orthancId);
  if (bySop && (await isPlaced(db, bySop.sop_instance_uid))) {
    const { row } = await indexInstance(db, obj, [], 'route');
    if (row === 'unchanged') return { status: 'unchanged', sopInstanceUid: parsed.sopInstanceUid };
    // Rewritten: refresh the per-project series and study rows built from it.
    const projects = await projectsOf(db, parsed.sopInstanceUid);
    if (projects.length) await indexInstance(db, obj, projects, 'route');
    return { status: 'updated', sopInstanceUid: parsed.sopInstanceUid };
  }

  const decision = await routeInstance(deps, obj, route, { indexUnrouted: true });
  deps.logger.debug(
    {
      orthancId,
      sopInstanceUid: parsed.sopInstanceUid,
      projectId: decision.projectId,
      ruleId: decision.ruleId,
    },
    'instance indexed',
  );
  return {
    status: 'indexed',
    sopInstanceUid: parsed.sopInstanceUid,
    seriesUid: parsed.seriesInstanceUid,
    projectId: decision.projectId,
  };
}

/**
 * Files an object under the project its route decides (sticky per series and route), or in quarantine when none
 * does. `indexUnrouted`: give a quarantined object its index row too (a re-arrival's archived copy has one).
 */
export async function routeInstance(
  deps: Pick<ArrivalDeps, 'db' | 'config' | 'logger'>,
  obj: ArchivedObject,
  route: ArrivalRoute,
  opts: { indexUnrouted: boolean; quarantineUnrouted?: boolean },
): Promise<RouteDecision> {
  const { db } = deps;
  const { parsed } = obj;
  // bridge (issue 14): a study a running retrieve asked this node for belongs to the retrieve's project, whatever
  // the routing rules say (and whatever an earlier arrival of the series by the same route decided).
  const expected = await expectedArrival(db, route.callingAet, parsed.studyInstanceUid);
  const decision = expected
    ? { projectId: expected.projectId, ruleId: null }
    : await stickyDecision(db, parsed.seriesInstanceUid, route, () => decideRoute(deps, route, parsed.json));
  if (decision.projectId) {
    await indexInstance(db, obj, [decision.projectId], 'route');
  } else if (opts.quarantineUnrouted !== false) {
    if (opts.indexUnrouted) await indexInstance(db, obj, [], 'route');
    await quarantineInstance(db, {
      sopInstanceUid: parsed.sopInstanceUid,
      studyUid: parsed.studyInstanceUid,
      seriesUid: parsed.seriesInstanceUid,
      route,
      reason: 'no matching routing rule',
    });
  }
  return decision;
}

/** The routing rules' verdict for a new series: the first matching rule, else DEFAULT_PROJECT, else quarantine. */
export async function decideRoute(
  deps: Pick<ArrivalDeps, 'db' | 'config' | 'logger'>,
  route: ArrivalRoute,
  ds: Parameters<typeof firstMatchingRule>[2],
): Promise<RouteDecision> {
  const rule = firstMatchingRule(await activeRules(deps.db), route, ds);
  if (rule) return { projectId: rule.project_id, ruleId: rule.id };
  const fallback = deps.config.DEFAULT_PROJECT;
  if (fallback) {
    if (await projectExists(deps.db, fallback)) return { projectId: fallback, ruleId: null };
    deps.logger.warn({ project: fallback }, 'DEFAULT_PROJECT does not exist: arrivals go to quarantine');
  }
  return { projectId: null, ruleId: null };
}

/** The UIDs of an archived instance as Orthanc's own database holds them (empty when Orthanc has none). */
export interface ArchivedIdentity {
  sopInstanceUid?: string;
  seriesUid?: string;
  studyUid?: string;
}

/**
 * An instance's UIDs from the archive's database (the instance's and its parent series' and study's), answered
 * without opening or parsing the file: it works for objects our parser refuses and is safe for objects that would
 * upset the archive's parser. Cleaned as index text. NotFoundError when it is gone.
 */
export async function archivedIdentity(archive: Archive, orthancId: string): Promise<ArchivedIdentity> {
  const uid = (v: string | undefined) => (v === undefined ? undefined : indexText(v).trim() || undefined);
  const ids = await archive.instanceIdentity(orthancId);
  return {
    sopInstanceUid: uid(ids.sopInstanceUid),
    seriesUid: uid(ids.seriesUid),
    studyUid: uid(ids.studyUid),
  };
}

/**
 * Sets an archived object aside after indexing it failed for a reason of its own (see isInfrastructureError): it
 * is recorded in index_failures with the UIDs and route Orthanc holds for it and the reason, so that the caller can
 * move on. 'gone' when Orthanc no longer has it. Throws only when the archive or the database is unavailable.
 */
export async function setAside(
  deps: ArrivalDeps,
  orthancId: string,
  err: unknown,
  known?: ReadArrival,
): Promise<ArrivalOutcome> {
  let ids: ArchivedIdentity;
  let route: ArrivalRoute;
  try {
    if (known) {
      const p = known.obj.parsed;
      ids = {
        sopInstanceUid: p.sopInstanceUid,
        seriesUid: p.seriesInstanceUid,
        studyUid: p.studyInstanceUid,
      };
      route = known.route;
    } else {
      ids = await archivedIdentity(deps.archive, orthancId);
      route = routeOf(await deps.archive.arrivalOrigin(orthancId));
    }
  } catch (e) {
    if (e instanceof NotFoundError) return { status: 'gone' };
    throw e;
  }
  const message = failureMessage(err);
  await recordFailure(deps.db, {
    orthancId,
    ...ids,
    reason: FailureReason.ProcessingFailure,
    message,
    route,
  });
  deps.logger.warn({ orthancId, sopInstanceUid: ids.sopInstanceUid, message }, 'archived object set aside');
  return { status: 'failed', reason: FailureReason.ProcessingFailure, message };
}

export { failureMessage, isInfrastructureError } from './failures';

/** Progress of a stale-row sweep. */
export interface SweepResult {
  /** Instances Orthanc listed. */
  archived: number;
  /** Index rows removed because Orthanc no longer holds their object. */
  removed: number;
  /** Failure records dropped for the same reason. */
  failuresCleared: number;
  /** Orthanc ids the listing missed but Orthanc still holds (listing raced with changes): re-checked. */
  missed: string[];
  /** Orthanc ids listed that have neither an index row nor a failure record (not acted on here). */
  unindexed: string[];
}

const LIST_PAGE = 1000;

/**
 * Removes from the index every instance whose object Orthanc no longer holds. Orthanc 1.10's change log does not
 * record deletions (the changes of a deleted resource vanish with it), so deletions are found by comparing the
 * index with Orthanc's instance list. The list is paged into a temporary table (memory stays flat); every
 * candidate is confirmed gone with its own request before its row goes, so rows added while the sweep runs, or
 * objects the paging skipped because the archive changed under it, are never removed.
 */
export async function sweepDeleted(
  deps: Pick<ArrivalDeps, 'db' | 'archive' | 'logger'>,
  onPage?: (listed: number) => void,
): Promise<SweepResult> {
  const { db, archive } = deps;
  async function* pages(): AsyncGenerator<string[]> {
    for (let since = 0; ; since += LIST_PAGE) {
      const ids = await archive.listInstances(since, LIST_PAGE);
      yield ids;
      if (ids.length < LIST_PAGE) return;
    }
  }
  const {
    archived,
    instances: candidates,
    failures: failureCandidates,
    unindexed,
  } = await findUnlisted(db, pages(), onPage);

  let removed = 0;
  const missed: string[] = [];
  for (const c of candidates) {
    if (await archive.hasInstance(c.orthanc_id)) {
      missed.push(c.orthanc_id);
      continue;
    }
    // A re-send may have moved the row to another copy meanwhile: only the row still pointing here goes.
    const now = await findInstance(db, c.sop_instance_uid);
    if (now?.orthanc_id !== c.orthanc_id) continue;
    if (await removeInstance(db, c.sop_instance_uid)) removed++;
  }
  let failuresCleared = 0;
  for (const id of failureCandidates) {
    if (await archive.hasInstance(id)) continue;
    await clearFailure(db, id);
    failuresCleared++;
  }
  if (removed || failuresCleared)
    deps.logger.info({ removed, failuresCleared }, 'index rows of deleted objects removed');
  return { archived, removed, failuresCleared, missed, unindexed };
}
