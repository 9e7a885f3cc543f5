/** SQL of the jobs dashboard (src/jobs/dashboard.ts): which projects a job's subject belongs to, and its progress. */
import type { Pool } from 'pg';

/** The projects each series is linked to (series UID -> project ids); unknown series are absent. */
export async function projectsOfSeries(
  db: Pool,
  seriesUids: readonly string[],
): Promise<Map<string, string[]>> {
  const out = new Map<string, string[]>();
  if (seriesUids.length === 0) return out;
  const r = await db.query<{ series_uid: string; projects: string[] }>(
    `SELECT series_uid, array_agg(DISTINCT project_id ORDER BY project_id) AS projects
       FROM project_series WHERE series_uid = ANY($1::text[]) GROUP BY series_uid`,
    [seriesUids],
  );
  for (const row of r.rows) out.set(row.series_uid, row.projects);
  return out;
}

/** Source and research project and instance progress of each cohort (cohort id -> row); unknown ids are absent. */
export async function cohortJobSubjects(
  db: Pool,
  cohortIds: readonly string[],
): Promise<Map<string, { projects: string[]; total: number; settled: number }>> {
  const out = new Map<string, { projects: string[]; total: number; settled: number }>();
  const ids = cohortIds.filter((id) => /^[0-9a-f-]{36}$/.test(id));
  if (ids.length === 0) return out;
  const r = await db.query<{ id: string; source: string; research: string; total: number; settled: number }>(
    `SELECT c.id, c.source_project_id AS source, c.research_project_id AS research,
            (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id)::int AS total,
            (SELECT count(*) FROM cohort_instances ci WHERE ci.cohort_id = c.id AND ci.state <> 'pending')::int AS settled
       FROM cohorts c WHERE c.id = ANY($1::uuid[])`,
    [ids],
  );
  for (const row of r.rows) {
    out.set(row.id, { projects: [row.source, row.research], total: row.total, settled: row.settled });
  }
  return out;
}
