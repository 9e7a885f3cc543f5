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

/**
 * The pseudonym of a source patient in a research project, created with the given values on first use. Concurrent
 * workers may race on the same patient: the first insert wins and everyone reads it back.
 */
export async function ensurePseudonym(
  db: Pool | PoolClient,
  p: {
    projectId: string;
    sourceProjectId: string;
    patientKey: string;
    /** Issuer of Patient ID, '' when none. */
    issuer?: string;
    pseudonym: string;
    dateOffsetDays: number;
  },
): Promise<PseudonymRow> {
  await db.query(
    `INSERT INTO research_pseudonyms (project_id, source_project_id, source_patient_key, source_issuer, pseudonym,
                                      date_offset_days)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
    [p.projectId, p.sourceProjectId, p.patientKey, p.issuer ?? '', p.pseudonym, p.dateOffsetDays],
  );
  const r = await db.query<PseudonymRow>(
    `SELECT pseudonym, date_offset_days, withdrawn_at FROM research_pseudonyms
      WHERE project_id = $1 AND source_project_id = $2 AND source_patient_key = $3 AND source_issuer = $4`,
    [p.projectId, p.sourceProjectId, p.patientKey, p.issuer ?? ''],
  );
  if (!r.rows[0]) throw new Error('pseudonym collision in research project');
  return r.rows[0];
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

/** True when the subject was withdrawn from the research project. */
export async function isSubjectWithdrawn(
  db: Pool | PoolClient,
  projectId: string,
  pseudonym: string,
): Promise<boolean> {
  const r = await db.query(
    'SELECT 1 FROM research_pseudonyms WHERE project_id = $1 AND pseudonym = $2 AND withdrawn_at IS NOT NULL',
    [projectId, pseudonym],
  );
  return (r.rowCount ?? 0) > 0;
}
