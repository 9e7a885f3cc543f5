import type { Pool } from 'pg';
import { ConflictError } from '../errors';

/** A project row with its size. */
export interface ProjectRow {
  id: string;
  name: string;
  description: string;
  created_at: Date;
  num_studies: number;
  num_series: number;
  num_instances: number;
}

/** Creates a project; 409 when the id exists. */
export async function createProject(
  db: Pool,
  p: { id: string; name: string; description?: string },
): Promise<ProjectRow> {
  const r = await db.query<ProjectRow>(
    `INSERT INTO projects (id, name, description) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING
     RETURNING id, name, description, created_at, 0 AS num_studies, 0 AS num_series, 0 AS num_instances`,
    [p.id, p.name, p.description ?? ''],
  );
  if (!r.rows[0]) throw new ConflictError(`project '${p.id}' already exists`);
  forgetProjectIds();
  return r.rows[0];
}

/** Creates a project unless it exists; returns whether it was created. */
export async function ensureProject(
  db: Pool,
  p: { id: string; name: string; description?: string },
): Promise<boolean> {
  const r = await db.query(
    'INSERT INTO projects (id, name, description) VALUES ($1, $2, $3) ON CONFLICT (id) DO NOTHING',
    [p.id, p.name, p.description ?? ''],
  );
  if (r.rowCount === 1) forgetProjectIds();
  return r.rowCount === 1;
}

const SELECT_PROJECTS = `
  SELECT p.id, p.name, p.description, p.created_at,
         COALESCE(st.num_studies, 0)::int AS num_studies,
         COALESCE(st.num_series, 0)::int AS num_series,
         COALESCE(st.num_instances, 0)::int AS num_instances
    FROM projects p
    LEFT JOIN LATERAL (
      SELECT count(*) AS num_studies, sum(num_series) AS num_series, sum(num_instances) AS num_instances
        FROM project_studies s WHERE s.project_id = p.id
    ) st ON true`;

/** Projects, all or only the given ids, with their sizes. */
export async function listProjects(db: Pool, ids?: readonly string[]): Promise<ProjectRow[]> {
  const r = ids
    ? await db.query<ProjectRow>(`${SELECT_PROJECTS} WHERE p.id = ANY ($1) ORDER BY p.id`, [ids])
    : await db.query<ProjectRow>(`${SELECT_PROJECTS} ORDER BY p.id`);
  return r.rows;
}

/** One project with its size, if it exists. */
export async function getProject(db: Pool, id: string): Promise<ProjectRow | undefined> {
  return (await db.query<ProjectRow>(`${SELECT_PROJECTS} WHERE p.id = $1`, [id])).rows[0];
}

/**
 * How long the list of project ids is reused. Global administrators' requests need it every time (their scope is
 * every project); a project created by another process shows up for them at most this late.
 */
const PROJECT_IDS_TTL_MS = 1000;
let projectIdsCache: { db: Pool; at: number; rows: Promise<Array<{ id: string; kind: string }>> } | undefined;

function projectRows(db: Pool): Promise<Array<{ id: string; kind: string }>> {
  const now = Date.now();
  if (!projectIdsCache || projectIdsCache.db !== db || now - projectIdsCache.at > PROJECT_IDS_TTL_MS) {
    const rows = db
      .query<{ id: string; kind: string }>('SELECT id, kind FROM projects ORDER BY id')
      .then((r) => r.rows);
    projectIdsCache = { db, at: now, rows };
    rows.catch(() => {
      if (projectIdsCache?.rows === rows) projectIdsCache = undefined;
    });
  }
  return projectIdsCache.rows;
}

/** Every project id, reused for up to a second (creating a project in this process refreshes it at once). */
export async function allProjectIds(db: Pool): Promise<string[]> {
  return (await projectRows(db)).map((r) => r.id);
}

/**
 * Whether a project is a research project, from the same list (a project's kind is set when it is created and never
 * changes; a project re-created under the same id by another process is seen at most a second late).
 */
export async function isResearchProjectCached(db: Pool, id: string): Promise<boolean> {
  return (await projectRows(db)).some((r) => r.id === id && r.kind === 'research');
}

/** Drops the cached project ids (after creating or deleting a project). */
export function forgetProjectIds(): void {
  projectIdsCache = undefined;
}
