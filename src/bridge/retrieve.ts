/**
 * Retrieves from remote nodes into a project (issue 14). A retrieve is a row per study in PostgreSQL and a BullMQ
 * job naming the retrieve only. Per study, in order:
 *
 * - C-MOVE (the default): the archive's AE title asks the node (DCMTK movescu, bridge/cmove.ts) to send the study to the archive's own AE title. The node's
 *   C-STORE sub-operations arrive with its AE title as calling AE; the change feed (and the re-arrival hook, for
 *   objects already archived) link each arrival of an expected study to the retrieve's project instead of routing it
 *   (ingest/arrival.ts routeInstance asks expectedArrival). The job then waits until the project holds as many
 *   instances of the study as the node announced (or the archive holds), which is when the study is done.
 * - C-GET (nodes that prefer it): DCMTK getscu, every object through the gateway's ingest (bridge/cget.ts).
 *
 * Resumable: a study's state is kept once it is finished, so a worker killed mid-way resumes at the first study not
 * finished, and anything sent twice is the same object (linked once: project membership is keyed by SOP Instance
 * UID). A cancel ends the C-MOVE or C-GET association of the study being moved (bridge/cmove.ts says why movescu
 * and not Orthanc's own C-MOVE SCU). A node's association slots (max_associations) bound how many retrieves talk to it
 * at once.
 */
import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import type { Principal, Role } from '../auth/access';
import { planCohort } from '../cohorts/plan';
import type { Deidentifier, DeidOptions } from '../cohorts/deid-port';
import type { Config } from '../config';
import { AppError, errSummary } from '../errors';
import {
  acquireNodeSlot,
  claimUnseenStudies,
  finishWatcherRun,
  getNode,
  getRetrieve,
  getWatcher,
  insertRetrieve,
  type NodeRow,
  retrieveStudies,
  setCohortOfRetrieve,
  setRetrieveState,
  setStudyState,
  startWatcherRun,
  studyInstancesInProject,
} from '../index-db/bridge';
import { withTransaction } from '../index-db/pool';
import type { Logger } from '../logger';
import type { Archive } from '../orthanc/archive';
import { DimseFailure, type RemoteNodes, type RemoteNodeSpec } from '../orthanc/remote-nodes';
import { cgetStudy } from './cget';
import { cmoveStudy } from './cmove';
import { answerInstanceCount, answerStudyUid, findKeys } from './query';
import { describeFailure, type DescribedFailure } from './status';

/** What the bridge's jobs need. */
export interface BridgeDeps {
  db: Pool;
  archive: Archive;
  nodes: RemoteNodes;
  logger: Logger;
  deid?: Pick<Deidentifier, 'profileDescription'>;
  config: Pick<
    Config,
    | 'BRIDGE_DIMSE_TIMEOUT_S'
    | 'BRIDGE_INDEX_WAIT_MS'
    | 'BRIDGE_QUERY_MAX_ANSWERS'
    | 'BRIDGE_MAX_STUDIES'
    | 'STOW_MAX_PART_BYTES'
    | 'COHORT_MAX_INSTANCES'
    | 'QIDO_MAX_LIMIT'
  > &
    Partial<Pick<Config, 'BRIDGE_CGET_DIR'>>;
  /** Queues a retrieve's job (jobs/queues.ts); given by the caller so this module has no queue of its own. */
  enqueueRetrieve?: (retrieveId: string) => Promise<void>;
  enqueueCohort?: (cohortId: string) => Promise<void>;
}

/** The node's description for the archive. */
export function nodeSpec(n: NodeRow): RemoteNodeSpec {
  return {
    id: n.id,
    aet: n.aet,
    host: n.host,
    port: n.port,
    allowFind: n.allow_find,
    allowMove: n.allow_move,
    allowGet: n.allow_get,
    allowStore: n.allow_store,
  };
}

/** A DIMSE failure (or an archive failure during one) in words. */
export function failureOf(err: unknown, node: string): DescribedFailure {
  if (err instanceof DimseFailure) return describeFailure(err.details, node);
  return { kind: 'other', message: `the operation with node ${node} failed: ${errSummary(err).message}` };
}

/** All association slots of the node are in use: the job is tried again shortly. */
export class NodeBusyError extends Error {
  constructor(readonly nodeId: string) {
    super(`all association slots of node ${nodeId} are in use`);
  }
}

/** The node refuses or cannot be reached: no study of this retrieve can succeed now. */
const NODE_LEVEL: ReadonlySet<string> = new Set(['unreachable', 'rejected', 'timeout']);

/** Outcome of one run of a retrieve. */
export interface RetrieveRunOutcome {
  state: 'done' | 'partial' | 'failed' | 'cancelled' | 'skipped';
  studies: number;
  failed: number;
}

/** Runs (or resumes) a retrieve. Throws NodeBusyError when no association slot is free, infrastructure errors as such. */
export async function runRetrieve(
  deps: BridgeDeps,
  retrieveId: string,
): Promise<RetrieveRunOutcome | undefined> {
  const { db, nodes, logger, config } = deps;
  const row = await getRetrieve(db, retrieveId);
  if (!row) return undefined;
  if (row.state !== 'queued' && row.state !== 'running') return { state: 'skipped', studies: 0, failed: 0 };
  const node = await getNode(db, row.node_id);
  if (!node) return undefined;
  const release = await acquireNodeSlot(db, node.id, node.max_associations);
  if (!release) throw new NodeBusyError(node.id);
  try {
    if (!(await setRetrieveState(db, retrieveId, 'running')))
      return { state: 'cancelled', studies: 0, failed: 0 };
    await nodes.ensure(nodeSpec(node));
    const ownAet = await nodes.ownAet();
    let nodeFailure: DescribedFailure | undefined;
    for (const study of await retrieveStudies(db, retrieveId)) {
      if (study.state !== 'pending') continue;
      const now = await getRetrieve(db, retrieveId);
      if (!now || now.state === 'cancelled') return { state: 'cancelled', studies: 0, failed: 0 };
      if (nodeFailure) {
        await setStudyState(db, retrieveId, study.study_uid, 'failed', { error: nodeFailure.message });
        continue;
      }
      try {
        if (row.method === 'move') {
          const moved = await untilCancelled(db, retrieveId, (signal) =>
            cmoveStudy({
              node,
              ownAet,
              studyUid: study.study_uid,
              timeoutS: config.BRIDGE_DIMSE_TIMEOUT_S,
              signal,
            }),
          );
          if (moved.result === 'aborted') return { state: 'cancelled', studies: 0, failed: 0 };
          const expected = study.expected ?? (await nodes.studyInstanceCount(study.study_uid));
          if (expected === 0) {
            // The node reported success and sent nothing: never `done` with nothing.
            await setStudyState(db, retrieveId, study.study_uid, 'failed', {
              error: `node ${node.id} reported the C-MOVE complete but sent no instance of the study`,
            });
            continue;
          }
          const have = await waitForIndexed(deps, row.project_id, study.study_uid, expected);
          if (have >= expected) await setStudyState(db, retrieveId, study.study_uid, 'done');
          else {
            const held = await nodes.studyInstanceCount(study.study_uid);
            const waitS = Math.round(config.BRIDGE_INDEX_WAIT_MS / 1000);
            await setStudyState(db, retrieveId, study.study_uid, 'partial', {
              error:
                held >= expected
                  ? `partial: the archive holds all ${expected} instances but only ${have} were indexed into the project within ${waitS} s (the indexer is behind): retry`
                  : `partial: ${have} of ${expected} instances arrived`,
            });
          }
        } else {
          const got = await untilCancelled(db, retrieveId, (signal) =>
            cgetStudy(deps, node, {
              callingAet: ownAet,
              studyUid: study.study_uid,
              projectId: row.project_id,
              timeoutS: config.BRIDGE_DIMSE_TIMEOUT_S,
              maxObjectBytes: config.STOW_MAX_PART_BYTES,
              dir: config.BRIDGE_CGET_DIR,
              signal,
            }),
          );
          if (got.aborted) return { state: 'cancelled', studies: 0, failed: 0 };
          if (got.ok && got.stored > 0) await setStudyState(db, retrieveId, study.study_uid, 'done');
          else {
            const f =
              got.stored === 0 && got.failedSubOps === 0 ? describeFailure(got.report, node.id) : undefined;
            if (f && NODE_LEVEL.has(f.kind)) throw new DimseFailure(got.report);
            const words = f
              ? f.message
              : `partial: ${got.stored} stored, ${got.failedSubOps} sub-operations failed, ${got.refused} objects refused by the gateway`;
            await setStudyState(db, retrieveId, study.study_uid, got.stored > 0 ? 'partial' : 'failed', {
              error: got.stored === 0 && !f ? `nothing arrived (${got.report})` : words,
              dimseStatus: f?.dimseStatus ?? (got.failedSubOps > 0 ? '0xB000' : null),
            });
          }
        }
      } catch (err) {
        if (!(err instanceof DimseFailure)) throw err;
        const f = failureOf(err, node.id);
        logger.warn(
          { retrieve: retrieveId, node: node.id, kind: f.kind, status: f.dimseStatus },
          'bridge: study retrieve failed',
        );
        await setStudyState(db, retrieveId, study.study_uid, 'failed', {
          error: f.message,
          dimseStatus: f.dimseStatus,
        });
        if (NODE_LEVEL.has(f.kind)) nodeFailure = f;
      }
    }
    const studies = await retrieveStudies(db, retrieveId);
    const done = studies.filter((s) => s.state === 'done').length;
    const failed = studies.length - done;
    const state =
      failed === 0 ? 'done' : done === 0 && studies.every((s) => s.state === 'failed') ? 'failed' : 'partial';
    const first = studies.find((s) => s.state !== 'done');
    let error = first
      ? failed > 1
        ? `${failed} of ${studies.length} studies: ${first.error}`
        : first.error
      : null;
    let finalState: RetrieveRunOutcome['state'] = state;
    // The cohort is planned before the retrieve is seen to finish: a retrieve never reads `done` while its
    // de-identified copy is still to be planned. A plan the request itself makes impossible (4xx) ends the retrieve
    // `partial` in words (retry plans again); anything else is thrown and the job tried again, still `running`.
    if (done > 0 && row.research_project_id) {
      const planFailure = await anonymiseOnImport(deps, retrieveId);
      if (planFailure) {
        finalState = 'partial';
        error = error ? `${error}; ${planFailure}` : planFailure;
      }
    }
    await setRetrieveState(db, retrieveId, finalState, {
      error,
      dimseStatus: first?.dimse_status ?? null,
    });
    return { state: finalState, studies: studies.length, failed };
  } finally {
    await release();
  }
}

/** How often a running C-MOVE or C-GET looks whether its retrieve was cancelled. */
const CANCEL_POLL_MS = 500;

/**
 * Runs one DIMSE operation with a signal that fires when the retrieve is cancelled (its state in PostgreSQL, set by
 * the API from any process), so a cancel ends the association mid-study.
 */
async function untilCancelled<T>(
  db: Pool,
  retrieveId: string,
  op: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  const ac = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  let stopped = false;
  const look = async () => {
    const r = await getRetrieve(db, retrieveId).catch(() => undefined);
    if (r?.state === 'cancelled') ac.abort();
    else if (!stopped) timer = setTimeout(() => void look(), CANCEL_POLL_MS);
  };
  timer = setTimeout(() => void look(), CANCEL_POLL_MS);
  try {
    return await op(ac.signal);
  } finally {
    stopped = true;
    clearTimeout(timer);
  }
}

async function waitForIndexed(
  deps: BridgeDeps,
  projectId: string,
  studyUid: string,
  expected: number,
): Promise<number> {
  const deadline = Date.now() + deps.config.BRIDGE_INDEX_WAIT_MS;
  for (let delay = 50; ; delay = Math.min(delay * 2, 1000)) {
    const have = await studyInstancesInProject(deps.db, projectId, studyUid);
    if (have >= expected || Date.now() > deadline) return have;
    await new Promise((r) => setTimeout(r, delay));
  }
}

/**
 * Anonymise on import: a cohort of the retrieved studies from the retrieve's (clinical) project into its research
 * project, through the cohort machinery. The identified copies stay in the clinical project, which readers of the
 * research project do not see; the research project only ever receives the de-identified output.
 */
async function anonymiseOnImport(deps: BridgeDeps, retrieveId: string): Promise<string | undefined> {
  const row = await getRetrieve(deps.db, retrieveId);
  if (!row?.research_project_id || !deps.deid) return undefined;
  if (row.cohort_id) {
    // Planned by an earlier run that stopped before it finished: the cohort job may not have been queued.
    await deps.enqueueCohort?.(row.cohort_id);
    return undefined;
  }
  const studies = (await retrieveStudies(deps.db, retrieveId))
    .filter((s) => s.state === 'done')
    .map((s) => s.study_uid);
  // The creator's rights were checked when the retrieve (or its watcher) was created: curator of the source,
  // administrator of the research project, as planCohort requires.
  const principal: Principal = {
    id: row.created_by,
    kind: 'service',
    globalAdmin: false,
    projects: new Map<string, Set<Role>>([
      [row.project_id, new Set<Role>(['curator'])],
      [row.research_project_id, new Set<Role>(['admin'])],
    ]),
  };
  let planned: { id: string };
  try {
    planned = await planCohort(
      { db: deps.db, deid: deps.deid },
      principal,
      row.project_id,
      {
        name: `bridge retrieve ${retrieveId}`,
        studies,
        options: (row.deid_options ?? {}) as Partial<DeidOptions>,
        target: { project: row.research_project_id },
      },
      { maxInstances: deps.config.COHORT_MAX_INSTANCES, qidoMaxLimit: deps.config.QIDO_MAX_LIMIT },
    );
  } catch (err) {
    if (!(err instanceof AppError) || err.status >= 500) throw err;
    deps.logger.warn({ retrieve: retrieveId, err: err.message }, 'bridge: anonymise on import not planned');
    return `the studies arrived in the clinical project but their de-identified cohort could not be planned: ${err.message}`;
  }
  await setCohortOfRetrieve(deps.db, retrieveId, planned.id);
  await deps.enqueueCohort?.(planned.id);
  deps.logger.info({ retrieve: retrieveId, cohort: planned.id }, 'bridge: anonymise on import queued');
  return undefined;
}

/** A retrieve as asked for (API or watcher). */
export interface RetrieveRequest {
  node: NodeRow;
  projectId: string;
  studies: Array<{ uid: string; expected?: number | null }>;
  method?: 'move' | 'get';
  researchProjectId?: string | null;
  deidOptions?: Record<string, boolean> | null;
  createdBy: string;
  watcherId?: string;
}

/** The method a retrieve uses: the one asked for if the node allows it, else the node's preference. */
export function retrieveMethod(node: NodeRow, asked?: 'move' | 'get'): 'move' | 'get' {
  const m = asked ?? node.retrieve_method;
  if (m === 'move' && !node.allow_move)
    throw new AppError(409, 'conflict', `node ${node.id} does not allow C-MOVE`);
  if (m === 'get' && !node.allow_get)
    throw new AppError(409, 'conflict', `node ${node.id} does not allow C-GET`);
  return m;
}

/** Records a retrieve (and, for a watcher, which studies it has now seen) and queues its job. */
export async function createRetrieve(deps: BridgeDeps, req: RetrieveRequest): Promise<string> {
  const id = randomUUID();
  const method = retrieveMethod(req.node, req.method);
  await withTransaction(deps.db, (c) =>
    insertRetrieve(c, {
      id,
      nodeId: req.node.id,
      callingAet: req.node.aet,
      projectId: req.projectId,
      researchProjectId: req.researchProjectId,
      deidOptions: req.deidOptions,
      watcherId: req.watcherId,
      method,
      createdBy: req.createdBy,
      studies: req.studies,
    }),
  );
  await deps.enqueueRetrieve?.(id);
  return id;
}

/** Outcome of a watcher run. */
export interface WatcherRunOutcome {
  matched: number;
  newStudies: number;
  retrieveId?: string;
  error?: string;
}

/**
 * One run of a watcher: its saved query as a study-level C-FIND, then one retrieve of the studies it has never
 * queued before (bridge_watcher_seen, claimed in the same transaction as the retrieve: never the same study twice).
 */
export async function runWatcher(
  deps: BridgeDeps,
  watcherId: string,
): Promise<WatcherRunOutcome | undefined> {
  const { db, nodes } = deps;
  const w = await getWatcher(db, watcherId);
  if (!w || !w.enabled) return undefined;
  const node = await getNode(db, w.node_id);
  if (!node) return undefined;
  const runId = await startWatcherRun(db, watcherId);
  try {
    await nodes.ensure(nodeSpec(node));
    const { answers } = await nodes.find(
      node.id,
      'Study',
      findKeys('study', w.query),
      deps.config.BRIDGE_DIMSE_TIMEOUT_S,
      deps.config.BRIDGE_MAX_STUDIES,
    );
    const found = new Map<string, number | undefined>();
    for (const a of answers) {
      const uid = answerStudyUid(a);
      if (uid) found.set(uid, answerInstanceCount(a));
    }
    const retrieveId = randomUUID();
    const method = retrieveMethod(node);
    const fresh = await withTransaction(db, async (c) => {
      const unseen = await claimUnseenStudies(c, watcherId, [...found.keys()], retrieveId);
      if (unseen.length === 0) return unseen;
      await insertRetrieve(c, {
        id: retrieveId,
        nodeId: node.id,
        callingAet: node.aet,
        projectId: w.project_id,
        researchProjectId: w.research_project_id,
        deidOptions: w.deid_options,
        watcherId,
        method,
        createdBy: w.created_by,
        studies: unseen.map((uid) => ({ uid, expected: found.get(uid) ?? null })),
      });
      return unseen;
    });
    if (fresh.length) await deps.enqueueRetrieve?.(retrieveId);
    const out = {
      matched: found.size,
      newStudies: fresh.length,
      retrieveId: fresh.length ? retrieveId : undefined,
    };
    await finishWatcherRun(db, runId, { ...out, retrieveId: out.retrieveId ?? null });
    return out;
  } catch (err) {
    const words =
      err instanceof DimseFailure
        ? failureOf(err, node.id).message
        : `watcher run failed: ${errSummary(err).message}`;
    await finishWatcherRun(db, runId, { error: words }).catch(() => undefined);
    if (err instanceof DimseFailure) return { matched: 0, newStudies: 0, error: words };
    throw err;
  }
}
