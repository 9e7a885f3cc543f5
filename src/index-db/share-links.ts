import type { Queryable } from './pool';

/** A row of `share_links` as stored (the token itself never is; only its SHA-256). */
export interface ShareLinkRow {
  id: string;
  project_id: string;
  study_uid: string | null;
  series_uid: string | null;
  created_by: string;
  created_at: Date;
  expires_at: Date;
  revoked_at: Date | null;
  description: string;
}

const SHARE_COLUMNS =
  'id, project_id, study_uid, series_uid, created_by, created_at, expires_at, revoked_at, description';

/** The study of a series the project holds, or undefined when the project does not hold it. */
export async function studyOfProjectSeries(
  db: Queryable,
  projectId: string,
  seriesUid: string,
): Promise<string | undefined> {
  const r = await db.query<{ study_uid: string }>(
    'SELECT study_uid FROM project_series WHERE project_id = $1 AND series_uid = $2',
    [projectId, seriesUid],
  );
  return r.rows[0]?.study_uid;
}

/** True when the project holds (some series of) the study. */
export async function projectHasStudy(db: Queryable, projectId: string, studyUid: string): Promise<boolean> {
  const r = await db.query('SELECT 1 FROM project_studies WHERE project_id = $1 AND study_uid = $2', [
    projectId,
    studyUid,
  ]);
  return (r.rowCount ?? 0) > 0;
}

/** Stores a new share link that expires `expiresInS` seconds from the database's now. */
export async function insertShareLink(
  db: Queryable,
  link: {
    id: string;
    tokenHash: Buffer;
    projectId: string;
    studyUid: string | null;
    seriesUid: string | null;
    createdBy: string;
    expiresInS: number;
    description: string;
  },
): Promise<ShareLinkRow> {
  const r = await db.query<ShareLinkRow>(
    `INSERT INTO share_links (id, token_hash, project_id, study_uid, series_uid, created_by, expires_at, description)
     VALUES ($1, $2, $3, $4, $5, $6, now() + make_interval(secs => $7), $8)
     RETURNING ${SHARE_COLUMNS}`,
    [
      link.id,
      link.tokenHash,
      link.projectId,
      link.studyUid,
      link.seriesUid,
      link.createdBy,
      link.expiresInS,
      link.description,
    ],
  );
  return r.rows[0];
}

/** The project's share links, newest first. */
export async function listShareLinkRows(db: Queryable, projectId: string): Promise<ShareLinkRow[]> {
  const r = await db.query<ShareLinkRow>(
    `SELECT ${SHARE_COLUMNS} FROM share_links WHERE project_id = $1 ORDER BY created_at DESC, id`,
    [projectId],
  );
  return r.rows;
}

/** Marks a link of the project revoked (keeping the first revocation time); undefined when there is no such link. */
export async function revokeShareLinkRow(
  db: Queryable,
  projectId: string,
  id: string,
): Promise<ShareLinkRow | undefined> {
  const r = await db.query<ShareLinkRow>(
    `UPDATE share_links SET revoked_at = COALESCE(revoked_at, now())
      WHERE project_id = $1 AND id = $2
      RETURNING ${SHARE_COLUMNS}`,
    [projectId, id],
  );
  return r.rows[0];
}

/** The link whose token hashes to `tokenHash`, if it is neither revoked nor expired. */
export async function findActiveShareLink(
  db: Queryable,
  tokenHash: Buffer,
): Promise<Pick<ShareLinkRow, 'id' | 'project_id' | 'study_uid' | 'series_uid'> | undefined> {
  const r = await db.query<Pick<ShareLinkRow, 'id' | 'project_id' | 'study_uid' | 'series_uid'>>(
    `SELECT id, project_id, study_uid, series_uid FROM share_links
      WHERE token_hash = $1 AND revoked_at IS NULL AND expires_at > now()`,
    [tokenHash],
  );
  return r.rows[0];
}
