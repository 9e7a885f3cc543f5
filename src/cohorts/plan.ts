/**
 * Planning a cohort: resolve the source studies (a list of UIDs, or a QIDO query run against the source project's
 * index), create the research project when asked (its creator becomes its admin), freeze the provenance and add a
 * row per source instance, all in one transaction; the job is queued by the caller once it commits.
 */
import { randomUUID } from 'node:crypto';
import type { Pool } from 'pg';
import type { Principal } from '../auth/access';
import { hasRole } from '../auth/access';
import { parseQidoQuery } from '../dicom/matching';
import { projectQidoResults } from '../dicom/qido-projector';
import { BadRequestError, ConflictError, NotFoundError } from '../errors';
import {
  createResearchProject,
  insertCohort,
  isResearchProject,
  planCohortInstances,
  unknownStudies,
} from '../index-db/cohorts';
import { putMember } from '../index-db/memberships';
import { withTransaction } from '../index-db/pool';
import { forgetProjectIds, getProject } from '../index-db/projects';
import { searchQido } from '../index-db/qido';
import { COHORT_OPTION_NAMES, type CohortOptions, type Deidentifier } from './deid-port';

/** A cohort request as the API validated it. */
export interface CohortRequest {
  name: string;
  studies?: string[];
  query?: Record<string, string | string[]>;
  options: Partial<CohortOptions>;
  target: { project: string } | { new: { id: string; name: string } };
}

/** Limits of planning (from config). */
export interface PlanLimits {
  maxInstances: number;
  qidoMaxLimit: number;
}

const STUDY_INSTANCE_UID = '0020000D';

/** Creates a cohort from a source project; returns its id and research project. */
export async function planCohort(
  deps: { db: Pool; deid: Pick<Deidentifier, 'profileDescription'> },
  principal: Principal,
  sourceProjectId: string,
  req: CohortRequest,
  limits: PlanLimits,
): Promise<{ id: string; researchProjectId: string; instances: number }> {
  const source = await getProject(deps.db, sourceProjectId);
  if (!source) throw new NotFoundError('project not found');
  if (await isResearchProject(deps.db, sourceProjectId))
    throw new BadRequestError('a cohort is made from a clinical project, not from a research project');

  const options = Object.fromEntries(
    COHORT_OPTION_NAMES.map((n) => [n, req.options[n] === true]),
  ) as CohortOptions;
  if (options.retainLongitudinalFullDates && options.retainLongitudinalModifiedDates)
    throw new BadRequestError(
      'retainLongitudinalFullDates and retainLongitudinalModifiedDates exclude each other',
    );
  const profile = deps.deid.profileDescription(options);

  const studies = req.studies
    ? [...new Set(req.studies)].sort()
    : await studiesMatching(deps.db, sourceProjectId, req.query ?? {}, limits);
  if (studies.length === 0) throw new BadRequestError('the cohort selects no study');
  const missing = await unknownStudies(deps.db, sourceProjectId, studies);
  // The same answer for a study of another project as for one that does not exist.
  if (missing.length)
    throw new BadRequestError(`${missing.length} of the studies are not in the source project`);

  let researchProjectId: string;
  if ('project' in req.target) {
    researchProjectId = req.target.project;
    if (researchProjectId === sourceProjectId) throw new BadRequestError('the target is the source project');
    if (!hasRole(principal, researchProjectId, 'admin') || !(await getProject(deps.db, researchProjectId)))
      throw new NotFoundError('target project not found');
    if (!(await isResearchProject(deps.db, researchProjectId)))
      throw new BadRequestError('the target project is not a research project');
  } else {
    researchProjectId = req.target.new.id;
  }

  const id = randomUUID();
  const instances = await withTransaction(deps.db, async (client) => {
    if ('new' in req.target) {
      if (!(await createResearchProject(client, req.target.new)))
        throw new ConflictError(`project '${req.target.new.id}' already exists`);
      // The curator who creates a research project administers it, without any change in Keycloak.
      await putMember(client, {
        projectId: researchProjectId,
        kind: 'sub',
        subject: principal.id,
        role: 'admin',
        grantedBy: principal.id,
      });
    }
    await insertCohort(client, {
      id,
      name: req.name,
      sourceProjectId,
      researchProjectId,
      createdBy: principal.id,
      profile,
      options,
      sourceStudies: studies,
    });
    const n = await planCohortInstances(client, id, sourceProjectId, studies);
    if (n === 0) throw new BadRequestError('the selected studies hold no instance');
    if (n > limits.maxInstances)
      throw new BadRequestError(
        `the cohort holds ${n} instances, more than the ${limits.maxInstances} allowed`,
      );
    return n;
  });
  if ('new' in req.target) forgetProjectIds();
  return { id, researchProjectId, instances };
}

/** The Study Instance UIDs a QIDO query matches in the source project (every page of it). */
async function studiesMatching(
  db: Pool,
  projectId: string,
  params: Record<string, string | string[]>,
  limits: PlanLimits,
): Promise<string[]> {
  const pairs: Array<[string, string]> = [];
  for (const [k, v] of Object.entries(params)) {
    if (/^(limit|offset|includefield)$/i.test(k)) continue;
    for (const one of Array.isArray(v) ? v : [v]) pairs.push([k, one]);
  }
  const out: string[] = [];
  for (let offset = 0; ; offset += limits.qidoMaxLimit) {
    const query = parseQidoQuery(
      [...pairs, ['limit', String(limits.qidoMaxLimit)], ['offset', String(offset)]],
      {
        defaultLimit: limits.qidoMaxLimit,
        maxLimit: limits.qidoMaxLimit,
      },
    );
    const answer = await searchQido(db, { level: 'study', query, scopes: [{ projectId }] });
    const results = projectQidoResults({ level: 'study', root: '' }, answer);
    for (const r of results) {
      const uid = (r[STUDY_INSTANCE_UID]?.Value as unknown[] | undefined)?.[0];
      if (typeof uid === 'string') out.push(uid);
    }
    if (!answer.more || results.length === 0) break;
    if (out.length > limits.maxInstances) break;
  }
  return [...new Set(out)].sort();
}
