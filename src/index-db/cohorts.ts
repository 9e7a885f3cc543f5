import type { Pool, PoolClient } from 'pg';

/** States of a cohort as a whole. */
export type CohortState = 'queued' | 'running' | 'done' | 'cancelled';
/** States of one source instance in a cohort. */
export type CohortInstanceState = 'pending' | 'done' | 'withheld' | 'failed' | 'withdrawn';

/** A cohort with its progress counts. */
export interface CohortRow {
  id: string;
  name: string;
  source_project_id: string;
  research_project_id: string;
  created_by: string;
  created_at: Date;
  state: CohortState;
  profile: Record<string, unknown>;
  options: Record<string, boolean>;
  source_studies: string[];
  finished_at: Date | null;
  total: number;
  pending: number;
  done: number;
  withheld: number;
  failed: number;
  withdrawn: number;
  bytes: number;
}

/** Creates a cohort record (provenance frozen at creation). */
export async function insertCohort(
  client: PoolClient,
  c: {
    id: string;
    name: string;
    sourceProjectId: string;
    researchProjectId: string;
    createdBy: string;
    profile: unknown;
    options: Record<string, boolean>;
    sourceStudies: string[];
  },
): Promise<void> {
  await client.query(
    `INSERT INTO cohorts (id, name, source_project_id, research_project_id, created_by, profile, options, source_studies)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
    [
      c.id,
      c.name,
      c.sourceProjectId,
      c.researchProjectId,
      c.createdBy,
      JSON.stringify(c.profile),
      JSON.stringify(c.options),
      c.sourceStudies,
    ],
  );
}

/**
 * Adds a row per instance the source project sees in the given studies (the unit of idempotent work); returns how
 * many. Done in SQL so that a large cohort is never held in memory.
 */
export async function planCohortInstances(
  client: PoolClient,
  cohortId: string,
  sourceProjectId: string,
  studyUids: readonly string[],
): Promise<number> {
  const r = await client.query(
    `INSERT INTO cohort_instances (cohort_id, source_sop_uid, source_series_uid, source_study_uid)
     SELECT $1, pi.sop_instance_uid, pi.series_uid, pi.study_uid
       FROM project_instances pi
      WHERE pi.project_id = $2 AND pi.study_uid = ANY ($3)`,
    [cohortId, sourceProjectId, studyUids],
  );
  return r.rowCount ?? 0;
}

/** Study UIDs among `studyUids` that the source project does not see. */
export async function unknownStudies(
  db: Pool | PoolClient,
  projectId: string,
  studyUids: readonly string[],
): Promise<string[]> {
  const r = await db.query<{ uid: string }>(
    `SELECT u AS uid FROM unnest($2::text[]) u
      WHERE NOT EXISTS (SELECT 1 FROM project_studies s WHERE s.project_id = $1 AND s.study_uid = u)`,
    [projectId, studyUids],
  );
  return r.rows.map((x) => x.uid);
}

const COUNTS = `
  (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id)::int AS total,
  (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state = 'pending')::int AS pending,
  (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state = 'done')::int AS done,
  (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state = 'withheld')::int AS withheld,
  (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state = 'failed')::int AS failed,
  (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state = 'withdrawn')::int AS withdrawn,
  (SELECT COALESCE(sum(bytes), 0) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state = 'done')::bigint::float8 AS bytes`;

/** One cohort with its counts. */
export async function getCohort(db: Pool | PoolClient, id: string): Promise<CohortRow | undefined> {
  const r = await db.query<CohortRow>(`SELECT c.*, ${COUNTS} FROM cohorts c WHERE c.id = $1`, [id]);
  return r.rows[0];
}

/** Cohorts made from a source project, newest first. */
export async function listCohorts(db: Pool, sourceProjectId: string): Promise<CohortRow[]> {
  const r = await db.query<CohortRow>(
    `SELECT c.*, ${COUNTS} FROM cohorts c WHERE c.source_project_id = $1 ORDER BY c.created_at DESC LIMIT 1000`,
    [sourceProjectId],
  );
  return r.rows;
}

/** Failure, withholding and withdrawal reason codes of a cohort with how many instances each. */
export async function cohortReasons(
  db: Pool,
  id: string,
): Promise<Array<{ state: string; reason: string; count: number }>> {
  const r = await db.query<{ state: string; reason: string; count: number }>(
    `SELECT state, reason, count(*)::int AS count FROM cohort_instances
      WHERE cohort_id = $1 AND state IN ('failed', 'withheld', 'withdrawn') GROUP BY state, reason
      ORDER BY state, reason`,
    [id],
  );
  return r.rows;
}

/** Sets the state of a cohort, unless it was cancelled (a cancel always wins over the worker). */
export async function setCohortState(db: Pool, id: string, state: CohortState): Promise<boolean> {
  const r = await db.query(
    `UPDATE cohorts SET state = $2, finished_at = CASE WHEN $2 IN ('done', 'cancelled') THEN now() END
      WHERE id = $1 AND (state <> 'cancelled' OR $2 = 'cancelled')`,
    [id, state],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Puts failed instances back to pending and the cohort back to queued; returns how many instances. */
export async function resetFailed(db: Pool, id: string): Promise<number> {
  const r = await db.query(
    `UPDATE cohort_instances SET state = 'pending', reason = NULL, updated_at = now()
      WHERE cohort_id = $1 AND state = 'failed'`,
    [id],
  );
  await db.query(`UPDATE cohorts SET state = 'queued', finished_at = NULL WHERE id = $1`, [id]);
  return r.rowCount ?? 0;
}

/** What a worker needs to process one source instance. */
export interface PendingInstance {
  source_sop_uid: string;
  source_study_uid: string;
  orthanc_id: string | null;
  file_size: number | null;
  patient_id: string | null;
  patient_name: string | null;
  /** Issuer of Patient ID (0010,0021), null when the instance has none. */
  patient_issuer: string | null;
}

/** The next pending instances of a cohort after `afterSop` (keyset order), with what the index knows of them. */
export async function pendingInstances(
  db: Pool,
  cohortId: string,
  afterSop: string,
  limit: number,
): Promise<PendingInstance[]> {
  const r = await db.query<PendingInstance>(
    `SELECT ci.source_sop_uid, ci.source_study_uid, i.orthanc_id, i.file_size::float8 AS file_size,
            i.dicom_json->'00100020'->'Value'->>0 AS patient_id,
            i.dicom_json->'00100010'->'Value'->0->>'Alphabetic' AS patient_name,
            i.dicom_json->'00100021'->'Value'->>0 AS patient_issuer
       FROM cohort_instances ci
       LEFT JOIN instances i ON i.sop_instance_uid = ci.source_sop_uid
      WHERE ci.cohort_id = $1 AND ci.state = 'pending' AND ci.source_sop_uid > $2
      ORDER BY ci.source_sop_uid
      LIMIT $3`,
    [cohortId, afterSop, limit],
  );
  return r.rows;
}

/** The outcome of one source instance, as recorded on its row. */
export interface InstanceOutcomeRecord {
  state: Exclude<CohortInstanceState, 'pending'>;
  reason?: string;
  pseudonym?: string;
  output?: { study: string; series: string; sop: string };
  bytes?: number;
}

/**
 * Records the outcomes of many source instances of a cohort in one statement (one commit). Only a pending row changes,
 * so a re-run never rewrites history; rows are updated in source UID order, so two writers never wait on each other in
 * a cycle.
 */
export async function finishInstances(
  db: Pool,
  cohortId: string,
  outcomes: ReadonlyArray<InstanceOutcomeRecord & { sourceSop: string }>,
): Promise<void> {
  if (outcomes.length === 0) return;
  const records = [...outcomes]
    .sort((a, b) => (a.sourceSop < b.sourceSop ? -1 : a.sourceSop > b.sourceSop ? 1 : 0))
    .map((o) => ({
      source_sop_uid: o.sourceSop,
      state: o.state,
      reason: o.reason ?? null,
      pseudonym: o.pseudonym ?? null,
      output_study_uid: o.output?.study ?? null,
      output_series_uid: o.output?.series ?? null,
      output_sop_uid: o.output?.sop ?? null,
      bytes: o.bytes ?? 0,
    }));
  await db.query(
    `UPDATE cohort_instances ci
        SET state = x.state, reason = x.reason, pseudonym = x.pseudonym, output_study_uid = x.output_study_uid,
            output_series_uid = x.output_series_uid, output_sop_uid = x.output_sop_uid, bytes = x.bytes,
            attempts = ci.attempts + 1, updated_at = now()
       FROM jsonb_to_recordset($2::jsonb) AS x(source_sop_uid text, state text, reason text, pseudonym text,
                                               output_study_uid text, output_series_uid text, output_sop_uid text,
                                               bytes bigint)
      WHERE ci.cohort_id = $1 AND ci.source_sop_uid = x.source_sop_uid AND ci.state = 'pending'`,
    [cohortId, JSON.stringify(records)],
  );
}

/** The state of a cohort alone (no counts): what a worker polls between pages to notice a cancel. */
export async function cohortState(db: Pool, id: string): Promise<CohortState | undefined> {
  const r = await db.query<{ state: CohortState }>('SELECT state FROM cohorts WHERE id = $1', [id]);
  return r.rows[0]?.state;
}

/** One output instance of a cohort, for the archive and the manifest. */
export interface OutputInstance {
  source_sop_uid: string;
  source_series_uid: string;
  source_study_uid: string;
  pseudonym: string;
  output_study_uid: string;
  output_series_uid: string;
  output_sop_uid: string;
  orthanc_id: string | null;
  file_size: number | null;
}

/**
 * Streams the stored outputs of a cohort in a fixed order (pseudonym, study, series, instance UIDs), page by page,
 * so manifests and archives of any size are produced without holding them in memory.
 */
export async function* streamOutputs(
  db: Pool,
  cohortId: string,
  pageSize = 500,
): AsyncGenerator<OutputInstance, void, undefined> {
  let after: [string, string, string, string] = ['', '', '', ''];
  for (;;) {
    const r = await db.query<OutputInstance>(
      `SELECT ci.source_sop_uid, ci.source_series_uid, ci.source_study_uid, ci.pseudonym, ci.output_study_uid,
              ci.output_series_uid, ci.output_sop_uid, i.orthanc_id, i.file_size::float8 AS file_size
         FROM cohort_instances ci
         LEFT JOIN instances i ON i.sop_instance_uid = ci.output_sop_uid
        WHERE ci.cohort_id = $1 AND ci.state = 'done'
          AND (ci.pseudonym, ci.output_study_uid, ci.output_series_uid, ci.output_sop_uid) > ($2, $3, $4, $5)
        ORDER BY ci.pseudonym, ci.output_study_uid, ci.output_series_uid, ci.output_sop_uid
        LIMIT $6`,
      [cohortId, ...after, pageSize],
    );
    for (const row of r.rows) yield row;
    if (r.rows.length < pageSize) return;
    const l = r.rows[r.rows.length - 1];
    after = [l.pseudonym, l.output_study_uid, l.output_series_uid, l.output_sop_uid];
  }
}

/** Every stored copy of one pseudonymised subject in a research project, whichever cohort made it. */
export async function subjectOutputs(
  db: Pool,
  researchProjectId: string,
  pseudonym: string,
): Promise<
  Array<{ cohort_id: string; source_sop_uid: string; output_sop_uid: string; orthanc_id: string | null }>
> {
  const r = await db.query<{
    cohort_id: string;
    source_sop_uid: string;
    output_sop_uid: string;
    orthanc_id: string | null;
  }>(
    `SELECT ci.cohort_id, ci.source_sop_uid, ci.output_sop_uid, i.orthanc_id
       FROM cohorts c
       JOIN cohort_instances ci ON ci.cohort_id = c.id
       LEFT JOIN instances i ON i.sop_instance_uid = ci.output_sop_uid
      WHERE c.research_project_id = $1 AND ci.pseudonym = $2 AND ci.state = 'done'
      ORDER BY ci.cohort_id, ci.source_sop_uid`,
    [researchProjectId, pseudonym],
  );
  return r.rows;
}

/** True when the cohort holds the pseudonym (done, withheld, failed or already withdrawn). */
export async function cohortHasSubject(db: Pool, cohortId: string, pseudonym: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM cohort_instances WHERE cohort_id = $1 AND pseudonym = $2 LIMIT 1', [
    cohortId,
    pseudonym,
  ]);
  return (r.rowCount ?? 0) > 0;
}

/** Marks one instance of a cohort withdrawn (its copy removed). */
export async function markWithdrawn(db: Pool, cohortId: string, sourceSop: string): Promise<void> {
  await db.query(
    `UPDATE cohort_instances SET state = 'withdrawn', reason = 'subject_withdrawn', updated_at = now()
      WHERE cohort_id = $1 AND source_sop_uid = $2`,
    [cohortId, sourceSop],
  );
}

/** True when the project is a research project (only cohort output may enter it). */
export async function isResearchProject(db: Pool | PoolClient, projectId: string): Promise<boolean> {
  const r = await db.query<{ kind: string }>('SELECT kind FROM projects WHERE id = $1', [projectId]);
  return r.rows[0]?.kind === 'research';
}

/** Creates a research project; false when the id is taken. */
export async function createResearchProject(
  client: PoolClient,
  p: { id: string; name: string },
): Promise<boolean> {
  const r = await client.query(
    `INSERT INTO projects (id, name, description, kind) VALUES ($1, $2, '', 'research') ON CONFLICT (id) DO NOTHING`,
    [p.id, p.name],
  );
  return r.rowCount === 1;
}
