/**
 * Per-instance execution of a cohort: read the source object, de-identify it, leak-check the output, store it
 * through the gateway's own ingest path into the research project only, and record the outcome on the instance's
 * row. Every step is idempotent: output UIDs, pseudonyms and date offsets are functions of the research project's
 * secret, so a worker killed after storing but before recording re-stores the identical object (the archive and
 * the index answer "already stored") and then records it; nothing is duplicated and nothing skipped.
 */
import type { Pool } from 'pg';
import type { Config } from '../config';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import {
  type CohortRow,
  finishInstance,
  getCohort,
  type PendingInstance,
  pendingInstances,
  setCohortState,
} from '../index-db/cohorts';
import { ensurePseudonym, isSubjectWithdrawn, researchSecret } from '../index-db/pseudonyms';
import { ingestInstance } from '../ingest/ingest';
import type { Logger } from '../logger';
import type { Archive } from '../orthanc/archive';
import type { PacsClient } from '../orthanc/client';
import { codecPoolFor, type CodecConfig } from '../codecs';
import { cleanBurnedInPixels, pixelRulesFor } from './clean-pixels';
import type { CohortOptions, Deidentifier } from './deid-port';
import { derivePseudonym, patientIssuer, patientKey } from './keys';
import { CohortStepAudit, type CohortStep } from './step-audit';
import { withdrawSubject } from './withdraw';

/** What running a cohort needs. */
export interface CohortDeps {
  db: Pool;
  pacs: PacsClient;
  archive: Archive;
  deid: Deidentifier;
  config: Pick<Config, 'COHORT_CONCURRENCY' | 'COHORT_MAX_OBJECT_BYTES' | 'DEID_PIXEL_RULES_FILE'> &
    CodecConfig;
  logger?: Logger;
}

/** Withholding reasons that Clean Pixel Data can lift. */
const BURNED_IN = new Set(['burned-in-annotation', 'burned-in-annotation-likely']);

/** The outcome of one instance, as recorded. */
export type InstanceOutcome = 'done' | 'withheld' | 'failed' | 'withdrawn';

/** Processes one pending source instance of a cohort and records what happened. Throws only for outages. */
export async function execCohortInstance(
  deps: CohortDeps,
  cohort: Pick<CohortRow, 'id' | 'source_project_id' | 'research_project_id' | 'options'>,
  secret: Buffer,
  row: PendingInstance,
  audit?: CohortStepAudit,
): Promise<InstanceOutcome> {
  const fail = async (step: CohortStep, reason: string, pseudonym?: string): Promise<InstanceOutcome> => {
    audit?.note(step, reason);
    await finishInstance(deps.db, cohort.id, row.source_sop_uid, { state: 'failed', reason, pseudonym });
    return 'failed';
  };
  if (!row.orthanc_id) return fail('read', 'source_not_indexed');
  if (row.file_size !== null && row.file_size > deps.config.COHORT_MAX_OBJECT_BYTES)
    return fail('read', 'too_large');
  let source: Buffer;
  try {
    source = await deps.archive.readInstanceFile(row.orthanc_id, deps.config.COHORT_MAX_OBJECT_BYTES);
  } catch (err) {
    if (err instanceof NotFoundError) return fail('read', 'source_not_archived');
    if (err instanceof UnrecoverableInputError) return fail('read', 'too_large');
    throw err;
  }
  audit?.note('read', 'ok');

  const key = patientKey(row.patient_id, row.patient_name);
  const issuer = patientIssuer(row.patient_issuer);
  const derived = derivePseudonym(secret, cohort.source_project_id, key, issuer);
  const { pseudonym, date_offset_days, withdrawn_at } = await ensurePseudonym(deps.db, {
    projectId: cohort.research_project_id,
    sourceProjectId: cohort.source_project_id,
    patientKey: key,
    issuer,
    ...derived,
  });
  if (withdrawn_at) {
    // A withdrawn subject never re-enters the research project, whichever cohort (or retry) brings them.
    audit?.note('mapping', 'barred');
    await finishInstance(deps.db, cohort.id, row.source_sop_uid, {
      state: 'withdrawn',
      reason: 'subject_withdrawn',
      pseudonym,
    });
    return 'withdrawn';
  }
  audit?.note('mapping', 'ok');

  const options = cohort.options as CohortOptions;
  const keys = {
    uidSecret: secret,
    patientName: pseudonym,
    patientId: pseudonym,
    dateOffsetDays: date_offset_days,
  };
  let result;
  try {
    result = deps.deid.deidentify(source, options, keys);
  } catch {
    // The de-identifier refuses what it cannot read; its message may quote the object, so only a code is kept.
    return fail('deidentify', 'deid_error', pseudonym);
  }
  if ('withheld' in result && BURNED_IN.has(result.withheld) && options.cleanPixelData) {
    // Clean Pixel Data: black out what the rules name, then de-identify the cleaned object. No rule, no export.
    const cleaned = await cleanBurnedInPixels(
      source,
      pixelRulesFor(deps.config.DEID_PIXEL_RULES_FILE),
      codecPoolFor(deps.config),
    );
    if ('refused' in cleaned) {
      audit?.note('clean-pixels', cleaned.refused);
      result = { withheld: cleaned.refused };
    } else {
      audit?.note('clean-pixels', 'ok');
      try {
        result = deps.deid.deidentify(cleaned.bytes, options, keys, { pixelsCleaned: true });
      } catch {
        return fail('deidentify', 'deid_error', pseudonym);
      }
    }
  }
  if ('withheld' in result) {
    audit?.note('deidentify', 'withheld');
    await finishInstance(deps.db, cohort.id, row.source_sop_uid, {
      state: 'withheld',
      reason: result.withheld,
      pseudonym,
    });
    return 'withheld';
  }
  audit?.note('deidentify', 'ok');

  const leaks = deps.deid.leakCheck(result.bytes, result.identifying);
  if (leaks.hits.length > 0) {
    // Tag paths and kinds only: the leaked value itself is PHI.
    deps.logger?.warn(
      { cohort: cohort.id, sop: row.source_sop_uid, hits: leaks.hits.slice(0, 20) },
      'cohort: leak check failed, instance not stored',
    );
    return fail('leak-check', 'leak_check', pseudonym);
  }
  audit?.note('leak-check', 'ok');

  const stored = await ingestInstance(
    { db: deps.db, archive: deps.archive },
    result.bytes,
    [cohort.research_project_id],
    'cohort',
  );
  if (!stored.ok) return fail('store', `store_${stored.reason.toString(16).padStart(4, '0')}`, pseudonym);
  audit?.note('store', 'ok');
  audit?.addBytes('store', result.bytes.length);
  await finishInstance(deps.db, cohort.id, row.source_sop_uid, {
    state: 'done',
    pseudonym,
    output: result.outputUids,
    bytes: result.bytes.length,
  });
  // A withdrawal that ran while this copy was being stored would have missed it: take it out again.
  if (await isSubjectWithdrawn(deps.db, cohort.research_project_id, pseudonym)) {
    await withdrawSubject(deps, cohort.research_project_id, pseudonym);
    return 'withdrawn';
  }
  return 'done';
}

/** Pending rows fetched per round; a cancel is noticed between rounds. */
const BATCH = 32;

/** What one run of a cohort did. */
export interface CohortRunOutcome {
  state: 'done' | 'cancelled';
  processed: Record<InstanceOutcome, number>;
}

/**
 * Runs every pending instance of a cohort, COHORT_CONCURRENCY at a time, and marks the cohort done. Safe to run
 * again at any point (after a crash, or after retry put failed rows back to pending).
 */
export async function runCohort(deps: CohortDeps, cohortId: string): Promise<CohortRunOutcome | undefined> {
  const cohort = await getCohort(deps.db, cohortId);
  if (!cohort) return undefined;
  const processed: Record<InstanceOutcome, number> = { done: 0, withheld: 0, failed: 0, withdrawn: 0 };
  if (cohort.state === 'cancelled') return { state: 'cancelled', processed };
  await setCohortState(deps.db, cohortId, 'running');
  const secret = await researchSecret(deps.db, cohort.research_project_id);
  const audit = new CohortStepAudit(deps.db, cohort);
  let after = '';
  for (;;) {
    const current = await getCohort(deps.db, cohortId);
    if (!current || current.state === 'cancelled') return { state: 'cancelled', processed };
    const rows = await pendingInstances(deps.db, cohortId, after, BATCH);
    if (rows.length === 0) break;
    after = rows[rows.length - 1].source_sop_uid;
    let next = 0;
    const lanes = Array.from({ length: Math.min(deps.config.COHORT_CONCURRENCY, rows.length) }, async () => {
      while (next < rows.length) {
        const row = rows[next++];
        processed[await execCohortInstance(deps, cohort, secret, row, audit)]++;
      }
    });
    await Promise.all(lanes);
    await audit.flush();
  }
  await setCohortState(deps.db, cohortId, 'done');
  return { state: 'done', processed };
}
