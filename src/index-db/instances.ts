import type { Pool, PoolClient } from 'pg';
import { type DicomJson, getInt, getString, getStrings, pick } from '../dicom/json';
import type { ParsedInstance } from '../dicom/parse';
import { SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS, Tag } from '../dicom/tags';
import { foldName, normaliseDate, normaliseTime } from '../dicom/text';
import { withTransaction } from './pool';

/** Where an instance came from into a project. */
export type MembershipSource = 'stow' | 'route' | 'share' | 'assign' | 'cohort';

/** An archived object as the index knows it. */
export interface InstanceRow {
  sop_instance_uid: string;
  study_uid: string;
  series_uid: string;
  sop_class_uid: string;
  transfer_syntax: string;
  orthanc_id: string;
  file_size: string; // bigint comes back as a string
  md5: string | null;
  /** MD5 of transfer syntax + data set (see ingest/identity.ts); null for rows indexed before it existed. */
  dataset_md5: string | null;
  number_of_frames: number | null;
}

/** What a membership needs of an indexed object: its UIDs and its DICOM JSON (series and study attributes). */
export type LinkedInstance = Pick<
  ParsedInstance,
  'sopInstanceUid' | 'seriesInstanceUid' | 'studyInstanceUid' | 'sopClassUid' | 'json'
>;

/** What indexing needs besides the parsed object: where Orthanc keeps it. */
export interface ArchivedObject {
  parsed: ParsedInstance;
  orthancId: string;
  fileSize: number;
  md5: string | null;
  /** See InstanceRow.dataset_md5; null keeps what the row holds. */
  datasetMd5?: string | null;
}

/**
 * A value for an `integer` column: IS values beyond the 32-bit range PS3.5 allows occur in the wild, and PostgreSQL
 * would refuse the whole row (22003). The DICOM JSON keeps the value as sent; the column, used for sorting, is empty.
 */
function int4(n: number | undefined): number | null {
  return n !== undefined && Number.isSafeInteger(n) && n >= -2147483648 && n <= 2147483647 ? n : null;
}

const INSTANCE_COLUMNS = `sop_instance_uid, study_uid, series_uid, sop_class_uid, transfer_syntax, orthanc_id, file_size,
  md5, dataset_md5, number_of_frames`;

/** The instance row for a SOP Instance UID, if indexed. */
export async function findInstance(
  db: Pool | PoolClient,
  sopInstanceUid: string,
): Promise<InstanceRow | undefined> {
  const r = await db.query<InstanceRow>(
    `SELECT ${INSTANCE_COLUMNS} FROM instances WHERE sop_instance_uid = $1`,
    [sopInstanceUid],
  );
  return r.rows[0];
}

/** The instance row for an Orthanc instance id, if indexed. */
export async function findInstanceByOrthancId(
  db: Pool | PoolClient,
  orthancId: string,
): Promise<InstanceRow | undefined> {
  const r = await db.query<InstanceRow>(`SELECT ${INSTANCE_COLUMNS} FROM instances WHERE orthanc_id = $1`, [
    orthancId,
  ]);
  return r.rows[0];
}

/** Records the data-set hash of a row indexed before it was kept (computed from the archived file). */
export async function setDataSetMd5(
  db: Pool | PoolClient,
  sopInstanceUid: string,
  datasetMd5: string,
): Promise<void> {
  await db.query(
    'UPDATE instances SET dataset_md5 = $2 WHERE sop_instance_uid = $1 AND dataset_md5 IS NULL',
    [sopInstanceUid, datasetMd5],
  );
}

/**
 * Indexes an archived object and makes it visible in the given projects, in one statement (see indexInstances).
 * Idempotent: indexing the same object again changes nothing. Used by STOW-RS and the change-feed indexer alike.
 */
export async function indexInstance(
  db: Pool,
  obj: ArchivedObject,
  projects: readonly string[],
  source: MembershipSource,
): Promise<{ newInProjects: string[]; row: UpsertStatus }> {
  const r = await indexInstances(db, [obj], projects, source);
  return { newInProjects: r.newInProjects[0], row: r.rows[0] };
}

/**
 * Indexes archived objects and makes them visible in the given projects: one statement (so one round trip and one
 * commit) whatever their number, writing each table once: the instances' rows, their memberships, and each
 * project's series and study rows computed once over the batch, not rewritten per instance. The writers' ingest
 * claims are fulfilled in the same statement, so the change feed never sees an object unclaimed and unindexed at
 * once. Idempotent. Results are in the order of `objs`; an object given twice counts once (its last copy wins).
 */
export async function indexInstances(
  db: Pool,
  objs: readonly ArchivedObject[],
  projects: readonly string[],
  source: MembershipSource,
): Promise<{ newInProjects: string[][]; rows: UpsertStatus[] }> {
  const bySop = new Map<string, ArchivedObject>();
  for (const o of objs) {
    bySop.delete(o.parsed.sopInstanceUid);
    bySop.set(o.parsed.sopInstanceUid, o);
  }
  const unique = [...bySop.values()];
  const sops = unique.map((o) => o.parsed.sopInstanceUid);
  try {
    // Named, so that each connection parses and plans the statement once: unnamed, PostgreSQL parsed and planned it
    // on every batch, which cost more than running it for a single-instance STOW (bench/REPORT.md, issue 15).
    const r = await db.query<{ rows: Record<string, boolean>; links: Array<[string, string]> }>({
      name: 'aperture_index_batch',
      text: INDEX_BATCH_SQL,
      values: [
        JSON.stringify(unique.map(instanceRecord)),
        projects,
        source,
        JSON.stringify(projects.length ? seriesRecords(unique) : []),
        JSON.stringify(projects.length ? studyRecords(unique) : []),
      ],
    });
    const { rows, links } = r.rows[0];
    const added = new Map<string, string[]>();
    for (const [projectId, sop] of links) {
      const list = added.get(sop) ?? [];
      list.push(projectId);
      added.set(sop, list);
    }
    return {
      rows: objs.map((o) => {
        const inserted = rows[o.parsed.sopInstanceUid];
        return inserted === undefined ? 'unchanged' : inserted ? 'inserted' : 'updated';
      }),
      newInProjects: objs.map((o) => projects.filter((p) => added.get(o.parsed.sopInstanceUid)?.includes(p))),
    };
  } catch (err) {
    // The writer failed to index: give the objects to the change feed now rather than when the claims expire.
    await releaseClaims(db, sops).catch(() => undefined);
    throw err;
  }
}

/** The instances row of an object, as the batch statement reads it (jsonb_to_recordset). */
function instanceRecord(obj: ArchivedObject): Record<string, unknown> {
  const { parsed } = obj;
  const ds = parsed.json;
  return {
    sop_instance_uid: parsed.sopInstanceUid,
    study_uid: parsed.studyInstanceUid,
    series_uid: parsed.seriesInstanceUid,
    sop_class_uid: parsed.sopClassUid,
    instance_number: int4(getInt(ds, Tag.InstanceNumber)),
    transfer_syntax: parsed.transferSyntaxUid,
    rows: int4(getInt(ds, Tag.Rows)),
    columns: int4(getInt(ds, Tag.Columns)),
    number_of_frames: int4(getInt(ds, Tag.NumberOfFrames) ?? (ds[Tag.PixelData] ? 1 : undefined)),
    bits_allocated: int4(getInt(ds, Tag.BitsAllocated)),
    orthanc_id: obj.orthancId,
    file_size: obj.fileSize,
    md5: obj.md5,
    dicom_json: ds,
    dataset_md5: obj.datasetMd5 ?? null,
  };
}

/**
 * Folds per-instance values into one record per key, as writing them one instance after the other would: a later
 * instance's value wins when it has one (COALESCE), `last` fields come from the last instance, `union` fields
 * collect distinct values in order of arrival.
 */
function fold(
  objs: readonly { parsed: LinkedInstance }[],
  key: (p: LinkedInstance) => string,
  values: (p: LinkedInstance) => Record<string, unknown>,
  last: readonly string[],
  union: readonly string[],
): Record<string, unknown>[] {
  const out = new Map<string, Record<string, unknown>>();
  for (const { parsed } of objs) {
    const v = values(parsed);
    const k = key(parsed);
    const acc = out.get(k) ?? Object.fromEntries(union.map((u) => [u, [] as unknown[]]));
    for (const [name, value] of Object.entries(v)) {
      if (union.includes(name)) {
        const list = acc[name] as unknown[];
        if (value !== null && value !== undefined && !list.includes(value)) list.push(value);
      } else if (last.includes(name) || (value !== null && value !== undefined)) {
        acc[name] = value;
      } else if (!(name in acc)) {
        acc[name] = null;
      }
    }
    out.set(k, acc);
  }
  // Sorted by key: every writer locks rows in key order, so concurrent batches cannot deadlock.
  return [...out.entries()].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([, v]) => v);
}

function seriesRecords(objs: readonly { parsed: LinkedInstance }[]): Record<string, unknown>[] {
  return fold(
    objs,
    (p) => p.seriesInstanceUid,
    (p) => {
      const ds = p.json;
      return {
        series_uid: p.seriesInstanceUid,
        study_uid: p.studyInstanceUid,
        modality: getString(ds, Tag.Modality) ?? null,
        series_number: int4(getInt(ds, Tag.SeriesNumber)),
        series_description: getString(ds, Tag.SeriesDescription) ?? null,
        series_date: normaliseDate(getString(ds, Tag.SeriesDate)) ?? null,
        series_time: normaliseTime(getString(ds, Tag.SeriesTime)) ?? null,
        body_part_examined: getString(ds, Tag.BodyPartExamined) ?? null,
        performed_procedure_step_start_date:
          normaliseDate(getString(ds, Tag.PerformedProcedureStepStartDate)) ?? null,
        performed_procedure_step_start_time:
          normaliseTime(getString(ds, Tag.PerformedProcedureStepStartTime)) ?? null,
        series_json: pick(ds, SERIES_LEVEL_TAGS),
      };
    },
    ['series_uid', 'study_uid', 'series_json'],
    [],
  );
}

function studyRecords(objs: readonly { parsed: LinkedInstance }[]): Record<string, unknown>[] {
  return fold(
    objs,
    (p) => p.studyInstanceUid,
    (p) => {
      const ds = p.json;
      const patientName = getString(ds, Tag.PatientName) ?? null;
      const referring = getString(ds, Tag.ReferringPhysicianName) ?? null;
      return {
        study_uid: p.studyInstanceUid,
        patient_name: patientName,
        patient_name_norm: foldName(patientName ?? undefined) ?? null,
        patient_id: getString(ds, Tag.PatientID) ?? null,
        patient_birth_date: normaliseDate(getString(ds, Tag.PatientBirthDate)) ?? null,
        patient_sex: getString(ds, Tag.PatientSex) ?? null,
        study_date: normaliseDate(getString(ds, Tag.StudyDate)) ?? null,
        study_time: normaliseTime(getString(ds, Tag.StudyTime)) ?? null,
        accession_number: getString(ds, Tag.AccessionNumber) ?? null,
        study_id: getString(ds, Tag.StudyID) ?? null,
        study_description: getString(ds, Tag.StudyDescription) ?? null,
        referring_physician_name: referring,
        referring_physician_name_norm: foldName(referring ?? undefined) ?? null,
        modalities: getString(ds, Tag.Modality) ?? null,
        sop_classes: p.sopClassUid,
        study_json: pick(ds, STUDY_LEVEL_TAGS),
      };
    },
    ['study_uid', 'study_json'],
    ['modalities', 'sop_classes'],
  );
}

/** The objects of a statement, $1: instance records (instanceRecord), or only their three UIDs to link them. */
const OBJECTS_CTE = `x AS MATERIALIZED (
  SELECT * FROM jsonb_to_recordset($1::jsonb) AS t(
    sop_instance_uid text, study_uid text, series_uid text, sop_class_uid text, instance_number integer,
    transfer_syntax text, rows integer, columns integer, number_of_frames integer, bits_allocated integer,
    orthanc_id text, file_size bigint, md5 text, dicom_json jsonb, dataset_md5 text)
)`;

/**
 * Memberships of the objects in $2 (project ids) with source $3, and each project's series ($4) and study ($5) rows
 * folded over them. Data-modifying CTEs all run, in one snapshot: the series and study counters add what the
 * memberships CTE reports as new, and a study counts the series the series CTE created. Series before study: every
 * writer locks in this order, so concurrent ingests cannot deadlock.
 */
const LINK_CTES = `links AS (
  INSERT INTO project_instances (project_id, sop_instance_uid, series_uid, study_uid, source)
  SELECT p.id, x.sop_instance_uid, x.series_uid, x.study_uid, $3
    FROM unnest($2::text[]) AS p(id) CROSS JOIN x ORDER BY 1, 2
  ON CONFLICT DO NOTHING
  RETURNING project_id, sop_instance_uid, series_uid, study_uid
),
ser AS (
  INSERT INTO project_series (project_id, series_uid, study_uid, modality, series_number, series_description,
                              series_date, series_time, body_part_examined, performed_procedure_step_start_date,
                              performed_procedure_step_start_time, num_instances, series_json)
  SELECT p.id, s.series_uid, s.study_uid, s.modality, s.series_number, s.series_description, s.series_date,
         s.series_time, s.body_part_examined, s.performed_procedure_step_start_date,
         s.performed_procedure_step_start_time,
         (SELECT count(*) FROM links l WHERE l.project_id = p.id AND l.series_uid = s.series_uid), s.series_json
    FROM unnest($2::text[]) AS p(id)
   CROSS JOIN jsonb_to_recordset($4::jsonb) AS s(
     series_uid text, study_uid text, modality text, series_number integer, series_description text,
     series_date text, series_time text, body_part_examined text, performed_procedure_step_start_date text,
     performed_procedure_step_start_time text, series_json jsonb)
   ORDER BY 1, 2
  ON CONFLICT (project_id, series_uid) DO UPDATE SET
    modality = COALESCE(EXCLUDED.modality, project_series.modality),
    series_number = COALESCE(EXCLUDED.series_number, project_series.series_number),
    series_description = COALESCE(EXCLUDED.series_description, project_series.series_description),
    series_date = COALESCE(EXCLUDED.series_date, project_series.series_date),
    series_time = COALESCE(EXCLUDED.series_time, project_series.series_time),
    body_part_examined = COALESCE(EXCLUDED.body_part_examined, project_series.body_part_examined),
    performed_procedure_step_start_date = COALESCE(EXCLUDED.performed_procedure_step_start_date,
                                                   project_series.performed_procedure_step_start_date),
    performed_procedure_step_start_time = COALESCE(EXCLUDED.performed_procedure_step_start_time,
                                                   project_series.performed_procedure_step_start_time),
    num_instances = project_series.num_instances + EXCLUDED.num_instances,
    series_json = EXCLUDED.series_json,
    updated_at = now()
  RETURNING project_id, study_uid, (xmax = 0) AS inserted
),
st AS (
  INSERT INTO project_studies (project_id, study_uid, patient_name, patient_name_norm, patient_id, patient_birth_date,
                               patient_sex, study_date, study_time, accession_number, study_id, study_description,
                               referring_physician_name, referring_physician_name_norm, modalities, sop_classes,
                               num_series, num_instances, study_json)
  SELECT p.id, t.study_uid, t.patient_name, t.patient_name_norm, t.patient_id, t.patient_birth_date, t.patient_sex,
         t.study_date, t.study_time, t.accession_number, t.study_id, t.study_description, t.referring_physician_name,
         t.referring_physician_name_norm, t.modalities, t.sop_classes,
         (SELECT count(*) FROM ser WHERE ser.project_id = p.id AND ser.study_uid = t.study_uid AND ser.inserted),
         (SELECT count(*) FROM links l WHERE l.project_id = p.id AND l.study_uid = t.study_uid), t.study_json
    FROM unnest($2::text[]) AS p(id)
   CROSS JOIN jsonb_to_recordset($5::jsonb) AS t(
     study_uid text, patient_name text, patient_name_norm text, patient_id text, patient_birth_date text,
     patient_sex text, study_date text, study_time text, accession_number text, study_id text,
     study_description text, referring_physician_name text, referring_physician_name_norm text,
     modalities text[], sop_classes text[], study_json jsonb)
   ORDER BY 1, 2
  ON CONFLICT (project_id, study_uid) DO UPDATE SET
    patient_name = COALESCE(EXCLUDED.patient_name, project_studies.patient_name),
    patient_name_norm = COALESCE(EXCLUDED.patient_name_norm, project_studies.patient_name_norm),
    patient_id = COALESCE(EXCLUDED.patient_id, project_studies.patient_id),
    patient_birth_date = COALESCE(EXCLUDED.patient_birth_date, project_studies.patient_birth_date),
    patient_sex = COALESCE(EXCLUDED.patient_sex, project_studies.patient_sex),
    study_date = COALESCE(EXCLUDED.study_date, project_studies.study_date),
    study_time = COALESCE(EXCLUDED.study_time, project_studies.study_time),
    accession_number = COALESCE(EXCLUDED.accession_number, project_studies.accession_number),
    study_id = COALESCE(EXCLUDED.study_id, project_studies.study_id),
    study_description = COALESCE(EXCLUDED.study_description, project_studies.study_description),
    referring_physician_name = COALESCE(EXCLUDED.referring_physician_name, project_studies.referring_physician_name),
    referring_physician_name_norm = COALESCE(EXCLUDED.referring_physician_name_norm,
                                             project_studies.referring_physician_name_norm),
    modalities = project_studies.modalities || ARRAY(
      SELECT m FROM unnest(EXCLUDED.modalities) WITH ORDINALITY AS u(m, o)
       WHERE NOT (m = ANY (project_studies.modalities)) ORDER BY o),
    sop_classes = project_studies.sop_classes || ARRAY(
      SELECT c FROM unnest(EXCLUDED.sop_classes) WITH ORDINALITY AS u(c, o)
       WHERE NOT (c = ANY (project_studies.sop_classes)) ORDER BY o),
    num_series = project_studies.num_series + EXCLUDED.num_series,
    num_instances = project_studies.num_instances + EXCLUDED.num_instances,
    study_json = EXCLUDED.study_json,
    updated_at = now()
  RETURNING 1
)`;

/** The batch statement of indexInstances: the instances' rows, LINK_CTES, and the writers' claims fulfilled. */
const INDEX_BATCH_SQL = `
WITH ${OBJECTS_CTE},
inst AS (
  INSERT INTO instances (sop_instance_uid, study_uid, series_uid, sop_class_uid, instance_number, transfer_syntax,
                         rows, columns, number_of_frames, bits_allocated, orthanc_id, file_size, md5, dicom_json,
                         dataset_md5)
  SELECT sop_instance_uid, study_uid, series_uid, sop_class_uid, instance_number, transfer_syntax, rows, columns,
         number_of_frames, bits_allocated, orthanc_id, file_size, md5, dicom_json, dataset_md5
    FROM x ORDER BY sop_instance_uid
  ON CONFLICT (sop_instance_uid) DO UPDATE SET
    orthanc_id = EXCLUDED.orthanc_id, file_size = EXCLUDED.file_size, md5 = EXCLUDED.md5,
    dataset_md5 = COALESCE(EXCLUDED.dataset_md5, instances.dataset_md5),
    dicom_json = EXCLUDED.dicom_json, transfer_syntax = EXCLUDED.transfer_syntax,
    instance_number = EXCLUDED.instance_number, rows = EXCLUDED.rows, columns = EXCLUDED.columns,
    number_of_frames = EXCLUDED.number_of_frames, bits_allocated = EXCLUDED.bits_allocated, indexed_at = now()
  WHERE instances.md5 IS DISTINCT FROM EXCLUDED.md5 OR instances.orthanc_id <> EXCLUDED.orthanc_id
     OR instances.dicom_json IS DISTINCT FROM EXCLUDED.dicom_json
     OR (EXCLUDED.dataset_md5 IS NOT NULL AND instances.dataset_md5 IS DISTINCT FROM EXCLUDED.dataset_md5)
  RETURNING sop_instance_uid, (xmax = 0) AS inserted
),
${LINK_CTES},
done AS (
  DELETE FROM ingest_claims WHERE sop_instance_uid IN (SELECT sop_instance_uid FROM x) RETURNING 1
)
SELECT (SELECT COALESCE(jsonb_object_agg(sop_instance_uid, inserted), '{}'::jsonb) FROM inst) AS rows,
       (SELECT COALESCE(jsonb_agg(jsonb_build_array(project_id, sop_instance_uid)), '[]'::jsonb) FROM links) AS links,
       (SELECT count(*) FROM st) AS studies,
       (SELECT count(*) FROM done) AS claims`;

/**
 * Claims a SOP Instance UID the caller is about to store in the archive and index itself (STOW-RS): until the claim
 * is released (indexInstance does it) or expires, the change feed leaves the object to its writer.
 */
export async function claimIngest(db: Pool | PoolClient, sopInstanceUid: string): Promise<void> {
  await db.query(
    `INSERT INTO ingest_claims (sop_instance_uid) VALUES ($1)
     ON CONFLICT (sop_instance_uid) DO UPDATE SET claimed_at = now()`,
    [sopInstanceUid],
  );
}

/** Gives up a claim (the writer will not index the object after all). */
export async function releaseClaim(db: Pool | PoolClient, sopInstanceUid: string): Promise<void> {
  await releaseClaims(db, [sopInstanceUid]);
}

/** Gives up claims (the writer will not index these objects after all). */
export async function releaseClaims(
  db: Pool | PoolClient,
  sopInstanceUids: readonly string[],
): Promise<void> {
  await db.query('DELETE FROM ingest_claims WHERE sop_instance_uid = ANY ($1::text[])', [sopInstanceUids]);
}

const CLAIM_AND_FIND_SQL = `WITH claim AS (
       INSERT INTO ingest_claims (sop_instance_uid) VALUES ($1)
       ON CONFLICT (sop_instance_uid) DO UPDATE SET claimed_at = now() RETURNING 1)
     SELECT ${INSTANCE_COLUMNS}, (SELECT count(*) FROM claim) AS claimed FROM instances WHERE sop_instance_uid = $1`;

/**
 * Claims a SOP Instance UID (see claimIngest) and answers its index row, if any, in the same round trip: a STOW
 * writer needs both before it stores the object.
 */
export async function claimAndFind(
  db: Pool | PoolClient,
  sopInstanceUid: string,
): Promise<InstanceRow | undefined> {
  // Named (parsed and planned once per connection): one of these runs for every object a STOW stores.
  const r = await db.query<InstanceRow>({
    name: 'aperture_claim_and_find',
    text: CLAIM_AND_FIND_SQL,
    values: [sopInstanceUid],
  });
  const row = r.rows[0] as (InstanceRow & { claimed?: unknown }) | undefined;
  if (row) delete row.claimed;
  return row;
}

/**
 * Whether a writer may still index this SOP Instance UID: it claimed it less than `ttlMs` ago, or the claims may have
 * been lost less than `ttlMs` ago (crash recovery of PostgreSQL empties the unlogged ingest_claims, and with it
 * ingest_claims_epoch, whose row this query writes back with the time it found it missing; see migration 300).
 */
export async function isClaimed(
  db: Pool | PoolClient,
  sopInstanceUid: string,
  ttlMs: number,
): Promise<boolean> {
  const r = await db.query<{ claimed: boolean }>(
    `WITH epoch AS (
       INSERT INTO ingest_claims_epoch (one, since) VALUES (true, now()) ON CONFLICT (one) DO NOTHING RETURNING since)
     SELECT EXISTS (SELECT 1 FROM ingest_claims
                     WHERE sop_instance_uid = $1 AND claimed_at > now() - make_interval(secs => $2))
         OR COALESCE((SELECT since FROM epoch), (SELECT since FROM ingest_claims_epoch))
              > now() - make_interval(secs => $2) AS claimed`,
    [sopInstanceUid, ttlMs / 1000],
  );
  return r.rows[0]?.claimed === true;
}

/** Forgets claims older than `ttlMs` (writers that died between storing and indexing). */
export async function expireClaims(db: Pool | PoolClient, ttlMs: number): Promise<number> {
  const r = await db.query(
    'DELETE FROM ingest_claims WHERE claimed_at <= now() - make_interval(secs => $1)',
    [ttlMs / 1000],
  );
  return r.rowCount ?? 0;
}

/** What an upsert did to the global row: created it, rewrote it (other bytes or other parse), or left it alone. */
export type UpsertStatus = 'inserted' | 'updated' | 'unchanged';

/**
 * Makes one instance visible in a project and keeps that project's series and study rows in step, with the
 * statement indexInstances uses for memberships (LINK_CTES). Returns true when the instance was not yet in the project.
 */
export async function linkInstance(
  client: PoolClient,
  projectId: string,
  parsed: LinkedInstance,
  source: MembershipSource,
): Promise<boolean> {
  const objs = [{ parsed }];
  const r = await client.query<{ added: string }>(
    `WITH ${OBJECTS_CTE},\n${LINK_CTES}\nSELECT count(*) AS added FROM links`,
    [
      JSON.stringify([
        {
          sop_instance_uid: parsed.sopInstanceUid,
          series_uid: parsed.seriesInstanceUid,
          study_uid: parsed.studyInstanceUid,
        },
      ]),
      [projectId],
      source,
      JSON.stringify(seriesRecords(objs)),
      JSON.stringify(studyRecords(objs)),
    ],
  );
  return Number(r.rows[0]?.added ?? 0) > 0;
}

/**
 * Removes an instance from the index entirely (it was deleted from the archive), keeping every project's
 * series and study rows in step; empty series and studies disappear.
 */
export async function removeInstance(db: Pool, sopInstanceUid: string): Promise<boolean> {
  return withTransaction(db, async (client) => {
    const memberships = await client.query<{ project_id: string }>(
      'SELECT project_id FROM project_instances WHERE sop_instance_uid = $1 ORDER BY project_id',
      [sopInstanceUid],
    );
    for (const { project_id } of memberships.rows) await unlinkInstance(client, project_id, sopInstanceUid);
    const del = await client.query('DELETE FROM instances WHERE sop_instance_uid = $1', [sopInstanceUid]);
    return (del.rowCount ?? 0) > 0;
  });
}

/** Removes one instance from one project, recomputing that project's series and study aggregates. */
export async function unlinkInstance(
  client: PoolClient,
  projectId: string,
  sopInstanceUid: string,
): Promise<boolean> {
  const del = await client.query<{ series_uid: string; study_uid: string }>(
    'DELETE FROM project_instances WHERE project_id = $1 AND sop_instance_uid = $2 RETURNING series_uid, study_uid',
    [projectId, sopInstanceUid],
  );
  const row = del.rows[0];
  if (!row) return false;
  const left = await client.query(
    `UPDATE project_series SET num_instances = num_instances - 1, updated_at = now()
      WHERE project_id = $1 AND series_uid = $2 RETURNING num_instances`,
    [projectId, row.series_uid],
  );
  const seriesGone = (left.rows[0]?.num_instances ?? 0) <= 0;
  if (seriesGone) {
    await client.query('DELETE FROM project_series WHERE project_id = $1 AND series_uid = $2', [
      projectId,
      row.series_uid,
    ]);
  }
  // Recompute the study's derived attributes from what the project still sees.
  await client.query(
    `UPDATE project_studies ps SET
       num_instances = ps.num_instances - 1,
       num_series = ps.num_series - $3,
       modalities = COALESCE((SELECT array_agg(DISTINCT s.modality) FROM project_series s
                               WHERE s.project_id = $1 AND s.study_uid = $2 AND s.modality IS NOT NULL), '{}'),
       sop_classes = COALESCE((SELECT array_agg(DISTINCT i.sop_class_uid) FROM project_instances pi
                                 JOIN instances i USING (sop_instance_uid)
                                WHERE pi.project_id = $1 AND pi.study_uid = $2), '{}'),
       updated_at = now()
     WHERE ps.project_id = $1 AND ps.study_uid = $2`,
    [projectId, row.study_uid, seriesGone ? 1 : 0],
  );
  await client.query(
    'DELETE FROM project_studies WHERE project_id = $1 AND study_uid = $2 AND num_instances <= 0',
    [projectId, row.study_uid],
  );
  return true;
}

/** The DICOM JSON of an indexed instance. */
export async function getInstanceJson(db: Pool, sopInstanceUid: string): Promise<DicomJson | undefined> {
  const r = await db.query<{ dicom_json: DicomJson }>(
    'SELECT dicom_json FROM instances WHERE sop_instance_uid = $1',
    [sopInstanceUid],
  );
  return r.rows[0]?.dicom_json;
}

export { getStrings };
