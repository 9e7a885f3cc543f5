/**
 * Withdrawal of a subject: every de-identified copy of one pseudonymised patient leaves the research project
 * (archive and index) and, since downloads are built from stored outputs, every later download; the subject is
 * barred from the research project, so no later cohort or retry adds them again.
 */
import type { Pool } from 'pg';
import { NotFoundError } from '../errors';
import { markWithdrawn, subjectOutputs } from '../index-db/cohorts';
import { removeInstance } from '../index-db/instances';
import { markSubjectWithdrawn } from '../index-db/pseudonyms';
import type { Archive } from '../orthanc/archive';

/** Removes every copy of `pseudonym` from the research project; returns how many instances went. */
export async function withdrawSubject(
  deps: { db: Pool; archive: Archive },
  researchProjectId: string,
  pseudonym: string,
): Promise<number> {
  // The bar first: a cohort running now (or any later one) stores nothing more of this subject.
  await markSubjectWithdrawn(deps.db, researchProjectId, pseudonym);
  const copies = await subjectOutputs(deps.db, researchProjectId, pseudonym);
  for (const c of copies) {
    // Archive first: if it fails the row stays 'done' and a repeated request finishes the job.
    if (c.orthanc_id) {
      try {
        await deps.archive.deleteInstance(c.orthanc_id);
      } catch (err) {
        if (!(err instanceof NotFoundError)) throw err;
      }
    }
    await removeInstance(deps.db, c.output_sop_uid);
    await markWithdrawn(deps.db, c.cohort_id, c.source_sop_uid);
  }
  return copies.length;
}
