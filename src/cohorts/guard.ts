import type { Pool } from 'pg';
import { ForbiddenError } from '../errors';
import { isResearchProjectCached } from '../index-db/projects';

/**
 * Research projects hold de-identified cohort output only: their readers are promised that nothing identifying is
 * in them, so STOW, routing rules and quarantine assignment into them are refused.
 */
export async function refuseIntoResearchProject(db: Pool, projectId: string): Promise<void> {
  if (await isResearchProjectCached(db, projectId))
    throw new ForbiddenError('a research project accepts only the output of cohort jobs');
}
