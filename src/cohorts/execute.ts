/**
 * Per-instance execution of a cohort: read the source object, de-identify it, leak-check the output, store it
 * through the gateway's own ingest path into the research project only, and record the outcome on the instance's
 * row. Every step is idempotent: output UIDs, pseudonyms and date offsets are functions of the research project's
 * secret, so a worker killed after storing but before recording re-stores the identical object (the archive and
 * the index answer "already stored") and then records it; nothing is duplicated and nothing skipped.
 *
 * The work of one instance (read, de-identify, leak check, store into the archive) runs in COHORT_CONCURRENCY lanes;
 * what can be shared is done per batch: pseudonyms for a page of pending rows in one round trip, and, for a batch of
 * archived outputs, the index transaction (ingest's indexArchived), the outcome rows and the withdrawal check in one
 * statement each, while the lanes go on with the next instances.
 */
import type { Pool } from 'pg';
import type { Config } from '../config';
import { NotFoundError, UnrecoverableInputError } from '../errors';
import {
  type CohortRow,
  cohortState,
  finishInstances,
  getCohort,
  type InstanceOutcomeRecord,
  type PendingInstance,
  pendingInstances,
  setCohortState,
} from '../index-db/cohorts';
import {
  ensurePseudonyms,
  type PseudonymRow,
  pseudonymRequestKey,
  researchSecret,
  withdrawnAmong,
} from '../index-db/pseudonyms';
import { archiveObject, type ArchivedForIndex, indexArchived } from '../ingest/ingest';
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

/** A pending source instance with its patient's pseudonym row in the research project (read with its page). */
interface Work {
  row: PendingInstance;
  mapping: PseudonymRow;
}

/** What the per-instance half ends with: an outcome already decided, or an output archived and awaiting its index. */
type Prepared =
  | { row: PendingInstance; record: InstanceOutcomeRecord }
  | {
      row: PendingInstance;
      archived: ArchivedForIndex;
      pseudonym: string;
      output: { study: string; series: string; sop: string };
      bytes: number;
    };

type CohortRef = Pick<CohortRow, 'id' | 'source_project_id' | 'research_project_id' | 'options'>;

/**
 * The per-instance half of a cohort: reads one pending source instance, de-identifies it, leak-checks the output
 * and stores it into the archive (not yet into the index: commitBatch does that for many). Never stores an output
 * that failed the leak check. Throws only for outages.
 */
async function prepareInstance(
  deps: CohortDeps,
  cohort: CohortRef,
  secret: Buffer,
  { row, mapping }: Work,
  audit?: CohortStepAudit,
): Promise<Prepared> {
  const fail = (step: CohortStep, reason: string, pseudonym?: string): Prepared => {
    audit?.note(step, reason);
    return { row, record: { state: 'failed', reason, pseudonym } };
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

  const { pseudonym, date_offset_days, withdrawn_at } = mapping;
  if (withdrawn_at) {
    // A withdrawn subject never re-enters the research project, whichever cohort (or retry) brings them.
    audit?.note('mapping', 'barred');
    return { row, record: { state: 'withdrawn', reason: 'subject_withdrawn', pseudonym } };
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
    return { row, record: { state: 'withheld', reason: result.withheld, pseudonym } };
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

  const archived = await archiveObject({ db: deps.db, archive: deps.archive }, result.bytes);
  if (!archived.ok) return fail('store', storeReason(archived.reason), pseudonym);
  return { row, archived, pseudonym, output: result.outputUids, bytes: result.bytes.length };
}

const storeReason = (reason: number): string => `store_${reason.toString(16).padStart(4, '0')}`;

/**
 * The shared half: indexes a batch of archived outputs into the research project in one transaction (an object the
 * index refuses fails alone), records every outcome of the batch in one statement, then takes out again the copies of
 * any subject withdrawn meanwhile (a withdrawal that ran while they were being stored would have missed them).
 */
async function commitBatch(
  deps: CohortDeps,
  cohort: CohortRef,
  batch: readonly Prepared[],
  processed: Record<InstanceOutcome, number>,
  audit?: CohortStepAudit,
): Promise<void> {
  if (batch.length === 0) return;
  const archived = batch.filter((p): p is Extract<Prepared, { archived: unknown }> => 'archived' in p);
  const indexed = await indexArchived(
    { db: deps.db },
    archived.map((p) => p.archived),
    [cohort.research_project_id],
    'cohort',
  );
  const records: Array<InstanceOutcomeRecord & { sourceSop: string }> = [];
  for (const p of batch) {
    if ('record' in p) records.push({ sourceSop: p.row.source_sop_uid, ...p.record });
  }
  archived.forEach((p, i) => {
    const outcome = indexed[i];
    if (!outcome.ok) {
      audit?.note('store', storeReason(outcome.reason));
      records.push({
        sourceSop: p.row.source_sop_uid,
        state: 'failed',
        reason: storeReason(outcome.reason),
        pseudonym: p.pseudonym,
      });
      return;
    }
    audit?.note('store', 'ok');
    audit?.addBytes('store', p.bytes);
    records.push({
      sourceSop: p.row.source_sop_uid,
      state: 'done',
      pseudonym: p.pseudonym,
      output: p.output,
      bytes: p.bytes,
    });
  });
  await finishInstances(deps.db, cohort.id, records);
  const stored = records.filter((r) => r.state === 'done');
  const withdrawn = await withdrawnAmong(
    deps.db,
    cohort.research_project_id,
    stored.map((r) => r.pseudonym!),
  );
  for (const pseudonym of withdrawn) await withdrawSubject(deps, cohort.research_project_id, pseudonym);
  for (const r of records)
    processed[r.state === 'done' && withdrawn.has(r.pseudonym!) ? 'withdrawn' : r.state]++;
  await audit?.flush();
}

/** Pending rows fetched per page (with their pseudonyms in one round trip); a cancel is noticed between pages. */
const PAGE = 64;
/** Outputs indexed per batch: one index transaction and one outcome statement for this many instances. */
const COMMIT_BATCH = 16;
/** A batch smaller than COMMIT_BATCH is committed once its oldest output has waited this long (slow objects). */
const COMMIT_WAIT_MS = 1000;
/** Lanes wait for the index when this many outputs are archived but not yet indexed. */
const MAX_UNCOMMITTED = 4 * COMMIT_BATCH;

/** What one run of a cohort did. */
export interface CohortRunOutcome {
  state: 'done' | 'cancelled';
  processed: Record<InstanceOutcome, number>;
}

/**
 * Runs every pending instance of a cohort, COHORT_CONCURRENCY at a time, and marks the cohort done. Safe to run
 * again at any point (after a crash, or after retry put failed rows back to pending): an instance whose output was
 * archived but not yet indexed when the worker died is still pending and is done again, identically.
 */
export async function runCohort(deps: CohortDeps, cohortId: string): Promise<CohortRunOutcome | undefined> {
  const cohort = await getCohort(deps.db, cohortId);
  if (!cohort) return undefined;
  const processed: Record<InstanceOutcome, number> = { done: 0, withheld: 0, failed: 0, withdrawn: 0 };
  if (cohort.state === 'cancelled') return { state: 'cancelled', processed };
  await setCohortState(deps.db, cohortId, 'running');
  const secret = await researchSecret(deps.db, cohort.research_project_id);
  const audit = new CohortStepAudit(deps.db, cohort);
  const lanes = Math.max(1, deps.config.COHORT_CONCURRENCY);

  // Pending rows, fetched a page at a time in keyset order with their patients' pseudonyms.
  const queue: Work[] = [];
  let after = '';
  let exhausted = false;
  let cancelled = false;
  let fetching: Promise<void> | undefined;
  const fetchPage = async (): Promise<void> => {
    const state = await cohortState(deps.db, cohortId);
    if (state === undefined || state === 'cancelled') {
      cancelled = true;
      exhausted = true;
      return;
    }
    const rows = await pendingInstances(deps.db, cohortId, after, PAGE);
    if (rows.length === 0) {
      exhausted = true;
      return;
    }
    after = rows[rows.length - 1].source_sop_uid;
    const patients = rows.map((row) => {
      const key = patientKey(row.patient_id, row.patient_name);
      const issuer = patientIssuer(row.patient_issuer);
      return { patientKey: key, issuer, ...derivePseudonym(secret, cohort.source_project_id, key, issuer) };
    });
    const mappings = await ensurePseudonyms(
      deps.db,
      cohort.research_project_id,
      cohort.source_project_id,
      patients,
    );
    rows.forEach((row, i) => queue.push({ row, mapping: mappings.get(pseudonymRequestKey(patients[i]))! }));
  };
  const refill = (): Promise<void> =>
    (fetching ??= fetchPage().finally(() => {
      fetching = undefined;
    }));

  // Archived outputs waiting for their batch's index transaction; one batch is committed at a time.
  const ready: Prepared[] = [];
  let oldestReady = 0;
  let committing: Promise<void> | undefined;
  let failure: { err: unknown } | undefined;
  const commitReady = (force: boolean): void => {
    if (committing || ready.length === 0 || failure) return;
    if (!force && ready.length < COMMIT_BATCH && Date.now() - oldestReady < COMMIT_WAIT_MS) return;
    const batch = ready.splice(0, ready.length);
    committing = commitBatch(deps, cohort, batch, processed, audit).then(
      () => {
        committing = undefined;
        commitReady(false);
      },
      (err: unknown) => {
        failure ??= { err };
        committing = undefined;
      },
    );
  };

  const take = async (): Promise<Work | undefined> => {
    for (;;) {
      if (failure || cancelled) return undefined;
      if (queue.length > 0) {
        const work = queue.shift()!;
        // The next page is read while the lanes still have work; an error there comes back on the next refill.
        if (queue.length < lanes && !exhausted) refill().catch(() => undefined);
        return work;
      }
      if (exhausted) return undefined;
      await refill();
    }
  };

  const lane = async (): Promise<void> => {
    try {
      for (let work = await take(); work; work = await take()) {
        const prepared = await prepareInstance(deps, cohort, secret, work, audit);
        if (ready.length === 0) oldestReady = Date.now();
        ready.push(prepared);
        commitReady(false);
        while (ready.length >= MAX_UNCOMMITTED && committing && !failure) await committing;
      }
    } catch (err) {
      failure ??= { err };
    }
  };
  await Promise.all(Array.from({ length: lanes }, lane));
  while (committing) await committing;
  commitReady(true);
  while (committing) await committing;
  if (failure) throw failure.err;
  if (cancelled) return { state: 'cancelled', processed };
  await setCohortState(deps.db, cohortId, 'done');
  return { state: 'done', processed };
}
