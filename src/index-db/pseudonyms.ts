import { randomBytes } from 'node:crypto';
import type { Pool, PoolClient } from 'pg';

/** The research project's UID secret, created on first use (random, 32 bytes, kept in PostgreSQL only). */
export async function researchSecret(db: Pool | PoolClient, projectId: string): Promise<Buffer> {
  await db.query(
    'INSERT INTO research_keys (project_id, uid_secret) VALUES ($1, $2) ON CONFLICT (project_id) DO NOTHING',
    [projectId, randomBytes(32)],
  );
  const r = await db.query<{ uid_secret: Buffer }>(
    'SELECT uid_secret FROM research_keys WHERE project_id = $1',
    [projectId],
  );
  return r.rows[0].uid_secret;
}

/** A source patient's pseudonym and date offset in one research project. */
export interface PseudonymRow {
  pseudonym: string;
  date_offset_days: number;
  /** Set once the subject was withdrawn from the research project: nothing of theirs may enter it again. */
  withdrawn_at: Date | null;
}

/** A source patient as ensurePseudonyms takes it: the key, its issuer, and the values to create on first use. */
export interface PseudonymRequest {
  patientKey: string;
  /** Issuer of Patient ID, '' when none. */
  issuer: string;
  pseudonym: string;
  dateOffsetDays: number;
}

/** The map key of a source patient in ensurePseudonyms' answer. */
export const pseudonymRequestKey = (p: { patientKey: string; issuer: string }): string =>
  `${p.issuer}\u0000${p.patientKey}`;

/**
 * The pseudonyms of source patients in a research project, created with the given values on first use: one insert and
 * one read, whatever the number of patients. Answers a map keyed by pseudonymRequestKey. The rows are inserted in key
 * order, so two workers racing on the same patients never deadlock; the first insert of a patient wins and everyone
 * reads it back.
 */
export async function ensurePseudonyms(
  db: Pool | PoolClient,
  projectId: string,
  sourceProjectId: string,
  patients: readonly PseudonymRequest[],
): Promise<Map<string, PseudonymRow>> {
  const unique = new Map<string, PseudonymRequest>();
  for (const p of patients) unique.set(pseudonymRequestKey(p), p);
  const out = new Map<string, PseudonymRow>();
  if (unique.size === 0) return out;
  const records = [...unique.entries()]
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
    .map(([, p]) => ({
      patient_key: p.patientKey,
      issuer: p.issuer,
      pseudonym: p.pseudonym,
      date_offset_days: p.dateOffsetDays,
    }));
  const json = JSON.stringify(records);
  await db.query(
    `INSERT INTO research_pseudonyms (project_id, source_project_id, source_patient_key, source_issuer, pseudonym,
                                      date_offset_days)
     SELECT $1, $2, x.patient_key, x.issuer, x.pseudonym, x.date_offset_days
       FROM jsonb_to_recordset($3::jsonb) AS x(patient_key text, issuer text, pseudonym text, date_offset_days int)
     ON CONFLICT DO NOTHING`,
    [projectId, sourceProjectId, json],
  );
  const r = await db.query<PseudonymRow & { patient_key: string; issuer: string }>(
    `SELECT rp.source_patient_key AS patient_key, rp.source_issuer AS issuer, rp.pseudonym, rp.date_offset_days,
            rp.withdrawn_at
       FROM jsonb_to_recordset($3::jsonb) AS x(patient_key text, issuer text)
       JOIN research_pseudonyms rp ON rp.project_id = $1 AND rp.source_project_id = $2
                                  AND rp.source_patient_key = x.patient_key AND rp.source_issuer = x.issuer`,
    [projectId, sourceProjectId, json],
  );
  for (const { patient_key, issuer, ...row } of r.rows)
    out.set(pseudonymRequestKey({ patientKey: patient_key, issuer }), row);
  if (out.size !== unique.size) throw new Error('pseudonym collision in research project');
  return out;
}

/** `id_old,id_new` pairs of the patients of one cohort (for patid_mapping.csv), sorted by the old id. */
export async function cohortPatientMapping(
  db: Pool,
  cohortId: string,
): Promise<Array<{ id_old: string; id_new: string }>> {
  const r = await db.query<{ id_old: string; id_new: string }>(
    `SELECT DISTINCT rp.source_patient_key AS id_old, rp.pseudonym AS id_new
       FROM cohorts c
       JOIN cohort_instances ci ON ci.cohort_id = c.id AND ci.pseudonym IS NOT NULL
       JOIN research_pseudonyms rp ON rp.project_id = c.research_project_id
                                  AND rp.source_project_id = c.source_project_id
                                  AND rp.pseudonym = ci.pseudonym
      WHERE c.id = $1
      ORDER BY 1`,
    [cohortId],
  );
  return r.rows;
}

/** Bars a pseudonymised subject from the research project for good (withdrawal); true when the pseudonym exists. */
export async function markSubjectWithdrawn(
  db: Pool | PoolClient,
  projectId: string,
  pseudonym: string,
): Promise<boolean> {
  const r = await db.query(
    `UPDATE research_pseudonyms SET withdrawn_at = COALESCE(withdrawn_at, now())
      WHERE project_id = $1 AND pseudonym = $2`,
    [projectId, pseudonym],
  );
  return (r.rowCount ?? 0) > 0;
}

/** Which of the given pseudonyms were withdrawn from the research project (one query for a batch of outputs). */
export async function withdrawnAmong(
  db: Pool | PoolClient,
  projectId: string,
  pseudonyms: readonly string[],
): Promise<Set<string>> {
  if (pseudonyms.length === 0) return new Set();
  const r = await db.query<{ pseudonym: string }>(
    `SELECT pseudonym FROM research_pseudonyms
      WHERE project_id = $1 AND pseudonym = ANY ($2::text[]) AND withdrawn_at IS NOT NULL`,
    [projectId, [...new Set(pseudonyms)]],
  );
  return new Set(r.rows.map((x) => x.pseudonym));
}
