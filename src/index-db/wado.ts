import type { Pool } from 'pg';
import type { ReadScope } from '../auth/access';

/** What the gateway needs to fetch an instance from the archive and frame its answer. */
export interface RetrievableInstance {
  sop_instance_uid: string;
  series_uid: string;
  study_uid: string;
  sop_class_uid: string;
  transfer_syntax: string;
  orthanc_id: string;
  file_size: string; // bigint comes back as a string
  number_of_frames: number | null;
  rows: number | null;
  columns: number | null;
  bits_allocated: number | null;
  samples_per_pixel: number | null;
}

/** A study, a series of it, or one instance of that series (PS3.18 §10.4.1 target resources). */
export interface InstanceSelector {
  studyUid: string;
  seriesUid?: string;
  sopInstanceUid?: string;
}

/** One instance's data set as stored DICOM JSON text (relative BulkDataURIs), for the metadata stream. */
export interface MetadataRow {
  sop_instance_uid: string;
  series_uid: string;
  study_uid: string;
  json: string;
}

/**
 * SQL that keeps an `instances i` row only when one of the scopes can see it. Scopes become three parallel arrays,
 * so the filter happens in the database whatever their number (none → nothing visible).
 */
function scopeFilter(scopes: readonly ReadScope[], params: unknown[]): string {
  params.push(
    scopes.map((s) => s.projectId),
    scopes.map((s) => s.studyUid ?? null),
    scopes.map((s) => s.seriesUid ?? null),
  );
  const n = params.length;
  return `EXISTS (
    SELECT 1 FROM project_instances pi
      JOIN unnest($${n - 2}::text[], $${n - 1}::text[], $${n}::text[]) AS sc(project_id, study_uid, series_uid)
        ON pi.project_id = sc.project_id
       AND (sc.study_uid IS NULL OR pi.study_uid = sc.study_uid)
       AND (sc.series_uid IS NULL OR pi.series_uid = sc.series_uid)
     WHERE pi.sop_instance_uid = i.sop_instance_uid)`;
}

function selectorFilter(sel: InstanceSelector, params: unknown[]): string {
  params.push(sel.studyUid);
  const parts = [`i.study_uid = $${params.length}`];
  if (sel.seriesUid !== undefined) {
    params.push(sel.seriesUid);
    parts.push(`i.series_uid = $${params.length}`);
  }
  if (sel.sopInstanceUid !== undefined) {
    params.push(sel.sopInstanceUid);
    parts.push(`i.sop_instance_uid = $${params.length}`);
  }
  return parts.join(' AND ');
}

const ORDER = 'i.series_uid, COALESCE(i.instance_number, 2147483647), i.sop_instance_uid';

/** The instances of a study, series or single instance that the scopes can see, in series then instance order. */
export async function listRetrievableInstances(
  db: Pool,
  scopes: readonly ReadScope[],
  sel: InstanceSelector,
): Promise<RetrievableInstance[]> {
  const params: unknown[] = [];
  const where = selectorFilter(sel, params);
  const r = await db.query<RetrievableInstance>(
    `SELECT i.sop_instance_uid, i.series_uid, i.study_uid, i.sop_class_uid, i.transfer_syntax, i.orthanc_id,
            i.file_size, i.number_of_frames, i.rows, i.columns, i.bits_allocated,
            (i.dicom_json #>> '{00280002,Value,0}')::int AS samples_per_pixel
       FROM instances i
      WHERE ${where} AND ${scopeFilter(scopes, params)}
      ORDER BY ${ORDER}`,
    params,
  );
  return r.rows;
}

/**
 * A fingerprint of what a metadata answer would hold: how many instances the scopes see and when they were last
 * (re)indexed or linked. Changes whenever the answer could.
 */
export async function metadataFingerprint(
  db: Pool,
  scopes: readonly ReadScope[],
  sel: InstanceSelector,
): Promise<{ count: number; fingerprint: string }> {
  const params: unknown[] = [];
  const where = selectorFilter(sel, params);
  const r = await db.query<{ count: number; fingerprint: string }>(
    `SELECT count(*)::int AS count,
            concat_ws(':', count(*), extract(epoch FROM max(i.indexed_at)), sum(hashtext(i.sop_instance_uid)::bigint))
              AS fingerprint
       FROM instances i
      WHERE ${where} AND ${scopeFilter(scopes, params)}`,
    params,
  );
  return r.rows[0] ?? { count: 0, fingerprint: '' };
}

/** Instances per page of streamInstanceMetadata: at most this many rows of DICOM JSON are held at once. */
export const METADATA_PAGE_SIZE = 250;

/**
 * Streams the DICOM JSON of every instance the scopes see, in pages (keyset pagination), so a study of any size is
 * served without holding it in memory and without holding a pooled connection while the client reads.
 */
export async function* streamInstanceMetadata(
  db: Pool,
  scopes: readonly ReadScope[],
  sel: InstanceSelector,
  pageSize = METADATA_PAGE_SIZE,
): AsyncGenerator<MetadataRow, void, undefined> {
  let after: { series: string; number: number; sop: string } | undefined;
  for (;;) {
    const params: unknown[] = [];
    const where = [selectorFilter(sel, params), scopeFilter(scopes, params)];
    if (after) {
      params.push(after.series, after.number, after.sop);
      const n = params.length;
      where.push(`(${ORDER}) > ($${n - 2}::text, $${n - 1}::int, $${n}::text)`);
    }
    params.push(pageSize);
    const r = await db.query<MetadataRow & { ord_number: number }>(
      `SELECT i.sop_instance_uid, i.series_uid, i.study_uid, i.metadata_text AS json,
              COALESCE(i.instance_number, 2147483647) AS ord_number
         FROM instances i
        WHERE ${where.join(' AND ')}
        ORDER BY ${ORDER}
        LIMIT $${params.length}`,
      params,
    );
    for (const row of r.rows) {
      yield {
        sop_instance_uid: row.sop_instance_uid,
        series_uid: row.series_uid,
        study_uid: row.study_uid,
        json: row.json,
      };
    }
    if (r.rows.length < pageSize) return;
    const last = r.rows[r.rows.length - 1];
    after = { series: last.series_uid, number: last.ord_number, sop: last.sop_instance_uid };
  }
}

/**
 * The element a relative BulkDataURI names in an instance the scopes see (its VR), or undefined when the instance
 * is not visible or holds no bulk data at that path. `jsonPath` is the path inside the DICOM JSON
 * (e.g. ['00540016', 'Value', '0', '00181078']).
 */
export async function findBulkElement(
  db: Pool,
  scopes: readonly ReadScope[],
  sel: Required<InstanceSelector>,
  jsonPath: readonly string[],
  relativeUri: string,
): Promise<{ instance: RetrievableInstance; vr: string } | undefined> {
  const params: unknown[] = [];
  const where = selectorFilter(sel, params);
  params.push(jsonPath);
  const pathParam = params.length;
  params.push(relativeUri);
  const uriParam = params.length;
  const r = await db.query<RetrievableInstance & { vr: string }>(
    `SELECT i.sop_instance_uid, i.series_uid, i.study_uid, i.sop_class_uid, i.transfer_syntax, i.orthanc_id,
            i.file_size, i.number_of_frames, i.rows, i.columns, i.bits_allocated,
            (i.dicom_json #>> '{00280002,Value,0}')::int AS samples_per_pixel,
            (i.dicom_json #> $${pathParam}::text[]) ->> 'vr' AS vr
       FROM instances i
      WHERE ${where}
        AND (i.dicom_json #> $${pathParam}::text[]) ->> 'BulkDataURI' = $${uriParam}
        AND ${scopeFilter(scopes, params)}`,
    params,
  );
  const row = r.rows[0];
  if (!row) return undefined;
  const { vr, ...instance } = row;
  return { instance, vr };
}
