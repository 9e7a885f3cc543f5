/** The PACS bridge's tables (migration 200): remote nodes, retrieves and their studies, watchers and their runs. */
import type { Pool, PoolClient } from 'pg';

type Queryable = Pool | PoolClient;

/** A remote DICOM node as stored. */
export interface NodeRow {
  id: string;
  aet: string;
  host: string;
  port: number;
  allow_find: boolean;
  allow_move: boolean;
  allow_get: boolean;
  allow_store: boolean;
  retrieve_method: 'move' | 'get';
  max_associations: number;
  created_at: string;
  updated_at: string;
}

/** A node as the API accepts it. */
export type NodeInput = Omit<NodeRow, 'id' | 'created_at' | 'updated_at'>;

export async function listNodes(db: Queryable): Promise<NodeRow[]> {
  return (await db.query<NodeRow>('SELECT * FROM remote_nodes ORDER BY id')).rows;
}

export async function getNode(db: Queryable, id: string): Promise<NodeRow | undefined> {
  return (await db.query<NodeRow>('SELECT * FROM remote_nodes WHERE id = $1', [id])).rows[0];
}

/** Creates or replaces a node; `created` tells which. */
export async function putNode(
  db: Queryable,
  id: string,
  n: NodeInput,
): Promise<{ row: NodeRow; created: boolean }> {
  const r = await db.query<NodeRow & { inserted: boolean }>(
    `INSERT INTO remote_nodes (id, aet, host, port, allow_find, allow_move, allow_get, allow_store, retrieve_method,
                               max_associations)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
     ON CONFLICT (id) DO UPDATE SET aet = EXCLUDED.aet, host = EXCLUDED.host, port = EXCLUDED.port,
       allow_find = EXCLUDED.allow_find, allow_move = EXCLUDED.allow_move, allow_get = EXCLUDED.allow_get,
       allow_store = EXCLUDED.allow_store, retrieve_method = EXCLUDED.retrieve_method,
       max_associations = EXCLUDED.max_associations, updated_at = now()
     RETURNING *, (xmax = 0) AS inserted`,
    [
      id,
      n.aet,
      n.host,
      n.port,
      n.allow_find,
      n.allow_move,
      n.allow_get,
      n.allow_store,
      n.retrieve_method,
      n.max_associations,
    ],
  );
  const { inserted, ...row } = r.rows[0];
  return { row, created: inserted };
}

export async function deleteNode(db: Queryable, id: string): Promise<boolean> {
  return ((await db.query('DELETE FROM remote_nodes WHERE id = $1', [id])).rowCount ?? 0) > 0;
}

export type RetrieveState = 'queued' | 'running' | 'done' | 'partial' | 'failed' | 'cancelled';
export type StudyState = 'pending' | 'done' | 'partial' | 'failed';

/** A retrieve as stored, with its progress. */
export interface RetrieveRow {
  id: string;
  node_id: string;
  project_id: string;
  research_project_id: string | null;
  deid_options: Record<string, boolean> | null;
  cohort_id: string | null;
  watcher_id: string | null;
  method: 'move' | 'get';
  state: RetrieveState;
  error: string | null;
  dimse_status: string | null;
  attempts: number;
  created_by: string;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
}

export interface RetrieveStudyRow {
  study_uid: string;
  calling_aet: string;
  state: StudyState;
  expected: number | null;
  error: string | null;
  dimse_status: string | null;
}

/** Creates a retrieve and its studies. */
export async function insertRetrieve(
  c: PoolClient,
  r: {
    id: string;
    nodeId: string;
    callingAet: string;
    projectId: string;
    researchProjectId?: string | null;
    deidOptions?: Record<string, boolean> | null;
    watcherId?: string | null;
    method: 'move' | 'get';
    createdBy: string;
    studies: Array<{ uid: string; expected?: number | null }>;
  },
): Promise<void> {
  {
    await c.query(
      `INSERT INTO bridge_retrieves (id, node_id, project_id, research_project_id, deid_options, watcher_id, method,
                                     created_by)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [
        r.id,
        r.nodeId,
        r.projectId,
        r.researchProjectId ?? null,
        r.deidOptions ? JSON.stringify(r.deidOptions) : null,
        r.watcherId ?? null,
        r.method,
        r.createdBy,
      ],
    );
    await c.query(
      `INSERT INTO bridge_retrieve_studies (retrieve_id, study_uid, calling_aet, expected)
       SELECT $1, s.uid, $2, s.expected FROM unnest($3::text[], $4::int[]) AS s (uid, expected)
       ON CONFLICT DO NOTHING`,
      [r.id, r.callingAet, r.studies.map((s) => s.uid), r.studies.map((s) => s.expected ?? null)],
    );
  }
}

export async function getRetrieve(db: Queryable, id: string): Promise<RetrieveRow | undefined> {
  return (await db.query<RetrieveRow>('SELECT * FROM bridge_retrieves WHERE id = $1', [id])).rows[0];
}

export async function listRetrieves(db: Queryable, projectId: string, limit = 100): Promise<RetrieveRow[]> {
  return (
    await db.query<RetrieveRow>(
      'SELECT * FROM bridge_retrieves WHERE project_id = $1 ORDER BY created_at DESC LIMIT $2',
      [projectId, limit],
    )
  ).rows;
}

export async function retrieveStudies(db: Queryable, id: string): Promise<RetrieveStudyRow[]> {
  return (
    await db.query<RetrieveStudyRow>(
      `SELECT study_uid, calling_aet, state, expected, error, dimse_status FROM bridge_retrieve_studies
        WHERE retrieve_id = $1 ORDER BY study_uid`,
      [id],
    )
  ).rows;
}

/** Progress of a retrieve: instances and bytes of its studies now linked to its project. */
export async function retrieveProgress(
  db: Queryable,
  id: string,
): Promise<{ studies: number; studiesDone: number; instances: number; bytes: number }> {
  const r = await db.query<{ studies: string; done: string; instances: string; bytes: string }>(
    `SELECT (SELECT count(*) FROM bridge_retrieve_studies WHERE retrieve_id = $1) AS studies,
            (SELECT count(*) FROM bridge_retrieve_studies WHERE retrieve_id = $1 AND state <> 'pending') AS done,
            count(i.sop_instance_uid) AS instances, coalesce(sum(i.file_size), 0) AS bytes
       FROM bridge_retrieves r
       JOIN bridge_retrieve_studies s ON s.retrieve_id = r.id
       JOIN project_instances pi ON pi.project_id = r.project_id AND pi.study_uid = s.study_uid
       JOIN instances i ON i.sop_instance_uid = pi.sop_instance_uid
      WHERE r.id = $1`,
    [id],
  );
  const row = r.rows[0];
  return {
    studies: Number(row?.studies ?? 0),
    studiesDone: Number(row?.done ?? 0),
    instances: Number(row?.instances ?? 0),
    bytes: Number(row?.bytes ?? 0),
  };
}

/** Instances of a study linked to a project (and the archive ids of those, for waiting on the change feed). */
export async function studyInstancesInProject(
  db: Queryable,
  projectId: string,
  studyUid: string,
): Promise<number> {
  const r = await db.query<{ n: string }>(
    'SELECT count(*) AS n FROM project_instances WHERE project_id = $1 AND study_uid = $2',
    [projectId, studyUid],
  );
  return Number(r.rows[0].n);
}

/** Sets the state of a retrieve; a cancelled retrieve keeps that state (only `queued` may leave it). */
export async function setRetrieveState(
  db: Queryable,
  id: string,
  state: RetrieveState,
  extra: { error?: string | null; dimseStatus?: string | null } = {},
): Promise<boolean> {
  const finished = state === 'done' || state === 'partial' || state === 'failed' || state === 'cancelled';
  const r = await db.query(
    `UPDATE bridge_retrieves SET state = $2, error = $3, dimse_status = $4,
            started_at = CASE WHEN $2 = 'running' THEN coalesce(started_at, now()) ELSE started_at END,
            attempts = attempts + CASE WHEN $2 = 'running' THEN 1 ELSE 0 END,
            finished_at = CASE WHEN $5 THEN now() ELSE NULL END
      WHERE id = $1 AND (state <> 'cancelled' OR $2 IN ('queued', 'cancelled'))`,
    [id, state, extra.error ?? null, extra.dimseStatus ?? null, finished],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Ends a retrieve still `queued` or `running` as failed, in words (its job gave up). */
export async function failRetrieve(db: Queryable, id: string, error: string): Promise<void> {
  await db.query(
    `UPDATE bridge_retrieves SET state = 'failed', error = $2, finished_at = now()
      WHERE id = $1 AND state IN ('queued', 'running')`,
    [id, error],
  );
}

export async function setCohortOfRetrieve(db: Queryable, id: string, cohortId: string): Promise<void> {
  await db.query('UPDATE bridge_retrieves SET cohort_id = $2 WHERE id = $1', [id, cohortId]);
}

export async function setStudyState(
  db: Queryable,
  retrieveId: string,
  studyUid: string,
  state: StudyState,
  extra: { error?: string | null; dimseStatus?: string | null } = {},
): Promise<void> {
  await db.query(
    `UPDATE bridge_retrieve_studies SET state = $3, error = $4, dimse_status = $5, updated_at = now()
      WHERE retrieve_id = $1 AND study_uid = $2`,
    [retrieveId, studyUid, state, extra.error ?? null, extra.dimseStatus ?? null],
  );
}

/** Puts failed and partial studies of a retrieve back to pending; answers how many. */
export async function resetFailedStudies(db: Queryable, retrieveId: string): Promise<number> {
  const r = await db.query(
    `UPDATE bridge_retrieve_studies SET state = 'pending', error = NULL, dimse_status = NULL, updated_at = now()
      WHERE retrieve_id = $1 AND state IN ('failed', 'partial')`,
    [retrieveId],
  );
  return r.rowCount ?? 0;
}

/**
 * Minutes after a cancel during which arrivals of the cancelled retrieve are still linked to its project: what the
 * node sent before the association was aborted is indexed by the change feed after the cancel.
 */
const CANCELLED_ARRIVALS_MIN = 10;

/**
 * The project an arrival belongs to when a running (or just cancelled) retrieve expects it: the node's AE title called, and the study
 * is one the retrieve asked for. The oldest running retrieve wins when two expect the same study.
 */
export async function expectedArrival(
  db: Queryable,
  callingAet: string,
  studyUid: string,
): Promise<{ retrieveId: string; projectId: string } | undefined> {
  if (!callingAet) return undefined;
  const r = await db.query<{ id: string; project_id: string }>(
    `SELECT r.id, r.project_id FROM bridge_retrieve_studies s JOIN bridge_retrieves r ON r.id = s.retrieve_id
      WHERE s.study_uid = $1 AND upper(s.calling_aet) = upper($2)
        AND (r.state IN ('queued', 'running')
             OR (r.state = 'cancelled' AND r.finished_at > now() - interval '${CANCELLED_ARRIVALS_MIN} minutes'))
      ORDER BY r.created_at LIMIT 1`,
    [studyUid, callingAet.trim()],
  );
  return r.rows[0] ? { retrieveId: r.rows[0].id, projectId: r.rows[0].project_id } : undefined;
}

/** A watcher as stored. */
export interface WatcherRow {
  id: string;
  name: string;
  node_id: string;
  project_id: string;
  research_project_id: string | null;
  deid_options: Record<string, boolean> | null;
  query: Record<string, string>;
  interval_s: number;
  enabled: boolean;
  created_by: string;
  created_at: string;
}

export async function insertWatcher(
  db: Queryable,
  w: Omit<WatcherRow, 'created_at' | 'enabled'>,
): Promise<WatcherRow> {
  const r = await db.query<WatcherRow>(
    `INSERT INTO bridge_watchers (id, name, node_id, project_id, research_project_id, deid_options, query,
                                  interval_s, created_by)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING *`,
    [
      w.id,
      w.name,
      w.node_id,
      w.project_id,
      w.research_project_id,
      w.deid_options ? JSON.stringify(w.deid_options) : null,
      JSON.stringify(w.query),
      w.interval_s,
      w.created_by,
    ],
  );
  return r.rows[0];
}

export async function getWatcher(db: Queryable, id: string): Promise<WatcherRow | undefined> {
  return (await db.query<WatcherRow>('SELECT * FROM bridge_watchers WHERE id = $1', [id])).rows[0];
}

export async function listWatchers(db: Queryable, projectId?: string): Promise<WatcherRow[]> {
  return projectId
    ? (
        await db.query<WatcherRow>(
          'SELECT * FROM bridge_watchers WHERE project_id = $1 ORDER BY created_at',
          [projectId],
        )
      ).rows
    : (await db.query<WatcherRow>('SELECT * FROM bridge_watchers ORDER BY created_at')).rows;
}

export async function deleteWatcher(db: Queryable, id: string): Promise<boolean> {
  return ((await db.query('DELETE FROM bridge_watchers WHERE id = $1', [id])).rowCount ?? 0) > 0;
}

export interface WatcherRunRow {
  id: string;
  started_at: string;
  finished_at: string | null;
  matched: number | null;
  new_studies: number | null;
  retrieve_id: string | null;
  error: string | null;
}

export async function startWatcherRun(db: Queryable, watcherId: string): Promise<string> {
  const r = await db.query<{ id: string }>(
    'INSERT INTO bridge_watcher_runs (watcher_id) VALUES ($1) RETURNING id',
    [watcherId],
  );
  return r.rows[0].id;
}

export async function finishWatcherRun(
  db: Queryable,
  runId: string,
  r: { matched?: number; newStudies?: number; retrieveId?: string | null; error?: string | null },
): Promise<void> {
  await db.query(
    `UPDATE bridge_watcher_runs SET finished_at = now(), matched = $2, new_studies = $3, retrieve_id = $4, error = $5
      WHERE id = $1`,
    [runId, r.matched ?? null, r.newStudies ?? null, r.retrieveId ?? null, r.error ?? null],
  );
}

export async function watcherRuns(db: Queryable, watcherId: string, limit = 50): Promise<WatcherRunRow[]> {
  return (
    await db.query<WatcherRunRow>(
      `SELECT id, started_at, finished_at, matched, new_studies, retrieve_id, error FROM bridge_watcher_runs
        WHERE watcher_id = $1 ORDER BY id DESC LIMIT $2`,
      [watcherId, limit],
    )
  ).rows;
}

/**
 * Marks studies as seen by a watcher and answers those that were not seen before (in the given order). Run in the
 * transaction that creates their retrieve, so a study is queued exactly once.
 */
export async function claimUnseenStudies(
  db: Queryable,
  watcherId: string,
  studyUids: readonly string[],
  retrieveId: string,
): Promise<string[]> {
  const r = await db.query<{ study_uid: string }>(
    `INSERT INTO bridge_watcher_seen (watcher_id, study_uid, retrieve_id)
     SELECT $1, u, $3 FROM unnest($2::text[]) AS u ON CONFLICT DO NOTHING RETURNING study_uid`,
    [watcherId, studyUids, retrieveId],
  );
  const fresh = new Set(r.rows.map((x) => x.study_uid));
  return studyUids.filter((u) => fresh.has(u));
}

/** Advisory-lock class of the bridge's association slots (any constant unused by other locks). */
const SLOT_LOCK_CLASS = 0x4272_6467; // 'Brdg'

/**
 * Takes one of a node's `max` association slots: a session advisory lock (class, hash of node and slot) held on a
 * dedicated connection, so a worker that dies frees its slot with its connection. Undefined when all are taken.
 */
export async function acquireNodeSlot(
  db: Pool,
  nodeId: string,
  max: number,
): Promise<(() => Promise<void>) | undefined> {
  const client = await db.connect();
  try {
    for (let slot = 0; slot < max; slot++) {
      const r = await client.query<{ ok: boolean }>(`SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok`, [
        SLOT_LOCK_CLASS,
        `${nodeId}#${slot}`,
      ]);
      if (r.rows[0].ok) {
        return async () => {
          try {
            await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [
              SLOT_LOCK_CLASS,
              `${nodeId}#${slot}`,
            ]);
            client.release();
          } catch {
            client.release(true);
          }
        };
      }
    }
  } catch (err) {
    client.release(true);
    throw err;
  }
  client.release();
  return undefined;
}
