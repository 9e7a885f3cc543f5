import type { ReadScope } from '../auth/access';
import type { DicomJson } from '../dicom/json';
import type { Queryable } from './pool';

/** An archived image as rendering needs it. */
export interface RenderableRow {
  sopInstanceUid: string;
  seriesUid: string;
  studyUid: string;
  orthancId: string;
  transferSyntax: string;
  md5: string | null;
  dicomJson: DicomJson;
}

interface RawRow {
  sop_instance_uid: string;
  series_uid: string;
  study_uid: string;
  orthanc_id: string;
  transfer_syntax: string;
  md5: string | null;
  dicom_json: DicomJson;
}

const COLUMNS =
  'i.sop_instance_uid, i.series_uid, i.study_uid, i.orthanc_id, i.transfer_syntax, i.md5, i.dicom_json';

function toRow(r: RawRow): RenderableRow {
  return {
    sopInstanceUid: r.sop_instance_uid,
    seriesUid: r.series_uid,
    studyUid: r.study_uid,
    orthancId: r.orthanc_id,
    transferSyntax: r.transfer_syntax,
    md5: r.md5,
    dicomJson: r.dicom_json,
  };
}

/** Scopes as three parallel arrays, for `unnest` in SQL (null = the whole project / study). */
function scopeParams(scopes: readonly ReadScope[]): [string[], Array<string | null>, Array<string | null>] {
  return [
    scopes.map((s) => s.projectId),
    scopes.map((s) => s.studyUid ?? null),
    scopes.map((s) => s.seriesUid ?? null),
  ];
}

/** SQL condition: instance `alias` is visible through one of the scopes passed as parameters $p, $p+1, $p+2. */
function visible(alias: string, p: number): string {
  return `EXISTS (
    SELECT 1 FROM project_instances pi
      JOIN unnest($${p}::text[], $${p + 1}::text[], $${p + 2}::text[]) AS s (project_id, study_uid, series_uid)
        ON pi.project_id = s.project_id
       AND (s.study_uid IS NULL OR pi.study_uid = s.study_uid)
       AND (s.series_uid IS NULL OR pi.series_uid = s.series_uid)
     WHERE pi.sop_instance_uid = ${alias}.sop_instance_uid)`;
}

/** An instance with pixel data the scopes can see, or undefined (callers answer 404). */
export async function findRenderableInstance(
  db: Queryable,
  scopes: readonly ReadScope[],
  ids: { studyUid: string; seriesUid: string; sopInstanceUid: string },
): Promise<RenderableRow | undefined> {
  const r = await db.query<RawRow>(
    `SELECT ${COLUMNS} FROM instances i
      WHERE i.sop_instance_uid = $1 AND i.series_uid = $2 AND i.study_uid = $3 AND ${visible('i', 4)}`,
    [ids.sopInstanceUid, ids.seriesUid, ids.studyUid, ...scopeParams(scopes)],
  );
  return r.rows[0] ? toRow(r.rows[0]) : undefined;
}

/**
 * The instance that stands for a series: the middle image by Instance Number (then SOP Instance UID) among those
 * the scopes can see, or among all indexed ones when `scopes` is null (the thumbnail job). Both orders agree, so a
 * caller who sees the whole series gets the thumbnail the job cached.
 */
export async function seriesRepresentative(
  db: Queryable,
  scopes: readonly ReadScope[] | null,
  seriesUid: string,
  studyUid?: string,
): Promise<RenderableRow | undefined> {
  const params: unknown[] = [seriesUid, studyUid ?? null];
  const scoped = scopes ? `AND ${visible('i', 3)}` : '';
  if (scopes) params.push(...scopeParams(scopes));
  const r = await db.query<RawRow>(
    `WITH candidates AS (
       SELECT i.sop_instance_uid,
              row_number() OVER (ORDER BY i.instance_number NULLS LAST, i.sop_instance_uid) AS rn,
              count(*) OVER () AS n
         FROM instances i
        WHERE i.series_uid = $1 AND ($2::text IS NULL OR i.study_uid = $2) AND i.rows IS NOT NULL ${scoped})
     SELECT ${COLUMNS} FROM candidates c JOIN instances i USING (sop_instance_uid) WHERE c.rn = c.n / 2 + 1`,
    params,
  );
  return r.rows[0] ? toRow(r.rows[0]) : undefined;
}

/** The series that stands for a study: the first by Series Number with an image the scopes can see. */
export async function studyRepresentativeSeries(
  db: Queryable,
  scopes: readonly ReadScope[],
  studyUid: string,
): Promise<string | undefined> {
  const r = await db.query<{ series_uid: string }>(
    `SELECT ps.series_uid FROM project_series ps
      WHERE ps.study_uid = $1 AND ps.project_id = ANY ($2::text[])
        AND EXISTS (SELECT 1 FROM instances i
                     WHERE i.series_uid = ps.series_uid AND i.study_uid = $1 AND i.rows IS NOT NULL AND ${visible('i', 2)})
      ORDER BY ps.series_number NULLS LAST, ps.series_uid
      LIMIT 1`,
    [studyUid, ...scopeParams(scopes)],
  );
  return r.rows[0]?.series_uid;
}

/** Number of indexed instances of a series (with or without pixel data). */
export async function countSeriesInstances(db: Queryable, seriesUid: string): Promise<number> {
  const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM instances WHERE series_uid = $1', [
    seriesUid,
  ]);
  return r.rows[0]?.n ?? 0;
}

/** A cached thumbnail. */
export interface ThumbnailRow {
  bytes: Buffer;
  contentType: string;
}

/** The cached thumbnail of an instance at this size, unless the object changed since it was rendered. */
export async function getThumbnail(
  db: Queryable,
  sopInstanceUid: string,
  size: number,
): Promise<ThumbnailRow | undefined> {
  const r = await db.query<{ bytes: Buffer; content_type: string }>(
    `SELECT t.bytes, t.content_type FROM thumbnails t JOIN instances i USING (sop_instance_uid)
      WHERE t.sop_instance_uid = $1 AND t.size = $2 AND t.frame = 1 AND t.source_md5 IS NOT DISTINCT FROM i.md5`,
    [sopInstanceUid, size],
  );
  const row = r.rows[0];
  return row ? { bytes: row.bytes, contentType: row.content_type } : undefined;
}

/**
 * The cached thumbnail of an instance the scopes can see, in one statement and without the instance's DICOM JSON: the
 * path a thumbnail list takes for every image, so it costs one index lookup. Undefined when the instance is not
 * visible, has no fresh thumbnail at this size, or does not exist (callers then take the full path, which tells these
 * apart).
 */
export async function findVisibleThumbnail(
  db: Queryable,
  scopes: readonly ReadScope[],
  ids: { studyUid: string; seriesUid: string; sopInstanceUid: string },
  size: number,
): Promise<ThumbnailRow | undefined> {
  const r = await db.query<{ bytes: Buffer; content_type: string }>(
    `SELECT t.bytes, t.content_type FROM instances i JOIN thumbnails t USING (sop_instance_uid)
      WHERE i.sop_instance_uid = $1 AND i.series_uid = $2 AND i.study_uid = $3
        AND t.size = $4 AND t.frame = 1 AND t.source_md5 IS NOT DISTINCT FROM i.md5 AND ${visible('i', 5)}`,
    [ids.sopInstanceUid, ids.seriesUid, ids.studyUid, size, ...scopeParams(scopes)],
  );
  const row = r.rows[0];
  return row ? { bytes: row.bytes, contentType: row.content_type } : undefined;
}

/** Stores (or replaces) the thumbnail of an instance. A concurrently removed instance is not an error. */
export async function putThumbnail(
  db: Queryable,
  t: { sopInstanceUid: string; size: number; contentType: string; bytes: Buffer; sourceMd5: string | null },
): Promise<void> {
  await db.query(
    `INSERT INTO thumbnails (sop_instance_uid, frame, size, content_type, bytes, source_md5)
     SELECT $1, 1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM instances WHERE sop_instance_uid = $1)
     ON CONFLICT (sop_instance_uid, size) DO UPDATE SET
       content_type = EXCLUDED.content_type, bytes = EXCLUDED.bytes,
       source_md5 = EXCLUDED.source_md5, created_at = now()`,
    [t.sopInstanceUid, t.size, t.contentType, t.bytes, t.sourceMd5],
  );
}
