import type { Context } from 'koa';
import { FailureReason, isPlausibleUid } from '../dicom/parse';
import {
  buildStoreInstancesResponse,
  type FailedInstance,
  isServerFailure,
  type StoredInstance,
  type StoreOutcomes,
  storeResponseStatus,
} from '../dicom/store-response';
import { dicomJsonToXml } from '../dicom/xml';
import {
  AppError,
  asDependencyError,
  BadRequestError,
  DependencyUnavailableError,
  NotFoundError,
  NotAcceptableError,
  PayloadTooLargeError,
  retryAfterS,
  UnsupportedMediaTypeError,
  warning299,
} from '../errors';
import { RequestTimeoutError, timedBody } from '../http/body-timeout';
import { allProjectIds } from '../index-db/projects';
import {
  archiveObject,
  type ArchivedForIndex,
  indexArchived,
  type IngestOutcome,
  readObject,
} from '../ingest/ingest';
import { enqueueSeriesStable } from '../jobs/queues';
import type { Services } from '../services';
import { refuseIntoResearchProject } from '../cohorts/guard';
import { dicomwebRoot, noteAudit, requireExistingProjectRole } from '../http/context';
import {
  describeOffers,
  MediaType,
  negotiateMediaType,
  parseContentType,
  type MediaTypeOffer,
} from './media-types';
import {
  type MultipartPart,
  MultipartFormatError,
  MultipartLimitError,
  parseMultipartRelated,
  readPartBody,
} from './multipart';

/** Floor of the in-flight byte budget; the budget is otherwise twice STOW_SPOOL_BYTES. */
const MIN_INFLIGHT_BYTES = 16 * 1024 ** 2;
/** At most this many per-part failure messages go into Warning headers. */
const MAX_WARNINGS = 5;

const ACCEPTED_REQUEST_TYPE = 'multipart/related; type="application/dicom"';
const RESPONSE_OFFERS: readonly MediaTypeOffer[] = [
  { mediaType: MediaType.dicomJson },
  { mediaType: MediaType.dicomXml },
  { mediaType: MediaType.json },
];

/**
 * PS3.18 §10.5 Store Instances: `POST .../studies[/{StudyInstanceUID}]` with a multipart/related body of
 * application/dicom parts, parsed as a stream; each part is archived and indexed on its own, so one bad part
 * never fails the others, and the answer is the Store Instances Response Module (Annex I).
 */
export async function handleStoreInstances(ctx: Context, services: Services): Promise<void> {
  const { config } = services;
  if (!ctx.params.project) {
    throw new AppError(
      405,
      'method_not_allowed',
      'this DICOMweb root is read-only; store through /projects/{project}/dicom-web/studies',
      { Allow: 'GET' },
    );
  }
  const projectId = await requireExistingProjectRole(ctx, services, 'contributor');
  await refuseIntoResearchProject(services.db, projectId);
  const studyUid = ctx.params.study as string | undefined;
  if (studyUid !== undefined && !isPlausibleUid(studyUid)) {
    throw new BadRequestError('the Study Instance UID in the URL is not a valid UID');
  }

  const contentType = parseContentType(ctx.get('content-type'));
  const partType = contentType?.params['type']?.trim().toLowerCase();
  if (contentType?.type !== MediaType.multipartRelated || partType !== MediaType.dicom) {
    throw new UnsupportedMediaTypeError(
      `STOW-RS accepts ${ACCEPTED_REQUEST_TYPE} (with a boundary parameter)`,
    );
  }
  const negotiated = negotiateMediaType(RESPONSE_OFFERS, ctx.get('accept') || undefined);
  if (!negotiated) {
    throw new NotAcceptableError(
      `the Store Instances Response is available as ${describeOffers(RESPONSE_OFFERS).join(', ')}`,
    );
  }
  const declaredLength = Number(ctx.get('content-length'));
  if (Number.isFinite(declaredLength) && declaredLength > config.STOW_MAX_REQUEST_BYTES) {
    throw new PayloadTooLargeError(`the request body is larger than ${config.STOW_MAX_REQUEST_BYTES} bytes`);
  }
  if (!(await allProjectIds(services.db)).includes(projectId)) throw new NotFoundError('project not found');

  noteAudit(ctx, { action: 'stow', projectId, studyUid, detail: { stored: 0, failed: 0 } });
  const started = Date.now();
  const run = await storeParts(ctx, services, projectId, studyUid);
  // Thumbnails for what just arrived, without waiting for Orthanc to call the series stable; the queue
  // deduplicates per series, and does nothing when no queue is configured in this process.
  for (const uid of new Set(run.stored.map((s) => s.seriesInstanceUid))) void enqueueSeriesStable(uid);
  const outcomes: StoreOutcomes = { stored: run.stored, failed: run.failed.map((f) => f.failed) };
  const singleStudy =
    studyUid ??
    (new Set(run.stored.map((s) => s.studyInstanceUid)).size === 1
      ? run.stored[0].studyInstanceUid
      : undefined);
  noteAudit(ctx, {
    action: 'stow',
    projectId,
    studyUid: singleStudy,
    detail: { stored: run.stored.length, failed: run.failed.length },
  });
  services.logger.debug(
    { project: projectId, stored: run.stored.length, failed: run.failed.length, ms: Date.now() - started },
    'stow',
  );

  if (run.abort) {
    // Nothing stored: a plain error. Otherwise the client must learn what was kept, so the body still lists it.
    const { error } = run.abort;
    const cause = (error as { cause?: unknown }).cause;
    const timedOut = cause instanceof RequestTimeoutError ? cause : undefined;
    if (run.stored.length === 0 && run.failed.length === 0) {
      if (timedOut) throw timedOut;
      throw error instanceof MultipartLimitError
        ? new PayloadTooLargeError(limitMessage(error))
        : new BadRequestError(`malformed multipart body: ${error.message}`);
    }
    ctx.status = timedOut ? 408 : error instanceof MultipartLimitError ? 413 : 400;
    // The rest of a timed-out body may still come: the connection closes after this answer instead of reading it.
    if (timedOut) ctx.set('Connection', 'close');
    ctx.append(
      'Warning',
      warning299(
        timedOut
          ? `${timedOut.message}; the parts before it were processed and are listed`
          : error instanceof MultipartLimitError
            ? `${limitMessage(error)}; the parts before it were processed and are listed`
            : `malformed multipart body: ${error.message}; the parts before it were processed and are listed`,
      ),
    );
  } else if (run.stored.length === 0 && run.failed.length === 0) {
    throw new BadRequestError('the multipart body has no parts');
  } else {
    ctx.status = storeResponseStatus(outcomes);
  }
  if (run.interrupted) {
    ctx.append(
      'Warning',
      warning299(`${run.interrupted.message}: the parts after it were not stored and are listed as failed`),
    );
  }
  // A client may send what failed for the server's own reasons again: tell it when (PS3.18 §10.5.3, RFC 9110).
  if (run.failed.some((f) => isServerFailure(f.failed.failureReason)))
    ctx.set('Retry-After', String(retryAfterS()));
  for (const w of failureWarnings(run.failed)) ctx.append('Warning', w);

  const response = buildStoreInstancesResponse(dicomwebRoot(ctx, config), outcomes, studyUid);
  if (negotiated.mediaType === MediaType.dicomXml) {
    ctx.body = dicomJsonToXml(response);
    ctx.type = MediaType.dicomXml;
  } else {
    ctx.body = JSON.stringify(response);
    ctx.type = negotiated.mediaType;
  }
}

interface PartFailure {
  index: number;
  message: string;
  failed: FailedInstance;
}

interface StoreRun {
  stored: StoredInstance[];
  failed: PartFailure[];
  /** Set when the body broke a limit or the multipart framing; parts before it were processed. */
  abort?: { error: MultipartLimitError | MultipartFormatError };
  /** Set when a dependency (database, archive) failed mid-request; later parts were read but not stored. */
  interrupted?: DependencyUnavailableError;
}

/**
 * Reads parts as they arrive and archives up to STOW_PIPELINE_DEPTH of them at once (parsing the next part overlaps
 * with archiving the previous ones), within an in-flight byte budget, so memory stays bounded by a few parts
 * whatever the size of the request. Archived parts are indexed STOW_INDEX_BATCH at a time in one statement each (or
 * fewer, whenever no other part is being archived, so a slow upload is indexed as it goes), and
 * none is answered stored before its batch is committed; until then its ingest claim keeps the change feed off it.
 * When the body stops (limit, bad framing, client gone), the parts already received are still stored; nothing waits
 * for more. Results keep the order of the parts.
 */
async function storeParts(
  ctx: Context,
  services: Services,
  projectId: string,
  studyUid: string | undefined,
): Promise<StoreRun> {
  const { config } = services;
  const budget = Math.max(2 * config.STOW_SPOOL_BYTES, MIN_INFLIGHT_BYTES);
  const depth = config.STOW_PIPELINE_DEPTH;
  const results: Array<{ ok: true; stored: StoredInstance } | { ok: false; failure: PartFailure }> = [];
  const inflight = new Set<Promise<void>>();
  let inflightBytes = 0;
  let fatal: { error: unknown } | undefined;
  let abort: StoreRun['abort'];
  let interrupted: DependencyUnavailableError | undefined;

  // Archived, not yet indexed; batches are written one after the other.
  let pending: Array<{ index: number; archived: ArchivedForIndex }> = [];
  let indexing: Promise<void> = Promise.resolve();
  const indexBatch = async (batch: Array<{ index: number; archived: ArchivedForIndex }>) => {
    if (fatal) {
      for (const b of batch) results[b.index] = inFlightFailureOf(b.index, b.archived);
      return;
    }
    try {
      const outcomes = await indexArchived(
        services,
        batch.map((b) => b.archived),
        [projectId],
        'stow',
      );
      batch.forEach((b, i) => (results[b.index] = toResult(b.index, outcomes[i])));
    } catch (error) {
      const dependency = asDependencyError(error);
      if (!dependency) fatal ??= { error };
      else interrupted ??= dependency;
      // Archived but not indexed: failed, and a retry of them is idempotent.
      for (const b of batch) results[b.index] = inFlightFailureOf(b.index, b.archived);
    }
  };
  const flush = () => {
    if (pending.length === 0) return;
    const batch = pending;
    pending = [];
    indexing = indexing.then(() => indexBatch(batch));
  };

  const waitFor = async (bytes: number) => {
    while (inflight.size >= depth || (inflight.size > 0 && inflightBytes + bytes > budget)) {
      await Promise.race(inflight);
    }
  };

  // A body that stalls or trickles fails with RequestTimeoutError, so that what arrived is still answered.
  const body = timedBody(ctx.req, {
    idleMs: config.HTTP_BODY_IDLE_TIMEOUT_MS,
    totalMs: config.HTTP_REQUEST_TIMEOUT_MS,
  });
  const parts = parseMultipartRelated(body, ctx.get('content-type'), {
    maxParts: config.STOW_MAX_PARTS,
    maxPartBytes: config.STOW_MAX_PART_BYTES,
    maxTotalBytes: config.STOW_MAX_REQUEST_BYTES,
    spillThresholdBytes: config.STOW_SPOOL_BYTES,
  });
  try {
    for await (const part of parts) {
      if (fatal) break;
      if (part.mediaType !== MediaType.dicom) {
        results[part.index] = {
          ok: false,
          failure: {
            index: part.index,
            message: `part media type ${part.mediaType} is not ${MediaType.dicom}`,
            failed: { failureReason: FailureReason.CannotUnderstand },
          },
        };
        continue;
      }
      if (interrupted) {
        // A dependency is down: the rest of the body is still read, so that the client gets the answer (not a cut
        // connection), and each part is listed as refused for lack of resources, with its UIDs when readable.
        results[part.index] = notAttempted(part.index, await readPartBody(part as MultipartPart));
        continue;
      }
      await waitFor(part.size);
      if (fatal) break;
      // A spilled part's file is removed when the next part is requested: read it now, within the budget.
      const bytes = await readPartBody(part as MultipartPart);
      const index = part.index;
      inflightBytes += bytes.length;
      const task = archiveObject(services, bytes, { studyInstanceUid: studyUid })
        .then(async (outcome) => {
          if (outcome.ok) {
            pending.push({ index, archived: outcome });
            // A full batch, or the archive pipeline drained (this is the last part in flight: the body is slower than
            // the archive): index what is archived now rather than wait for parts that may take long to come.
            if (pending.length >= config.STOW_INDEX_BATCH || inflight.size <= 1) flush();
            return;
          }
          results[index] = toResult(index, outcome);
          // Orthanc may fail on one object (a 5xx for that object alone) while it is up: only an archive that no
          // longer answers stops the request.
          if (
            outcome.reason === FailureReason.ProcessingFailure &&
            !(await archiveAnswers(services, config.READINESS_TIMEOUT_MS))
          ) {
            interrupted ??= new DependencyUnavailableError('archive');
          }
        })
        .catch((error: unknown) => {
          const dependency = asDependencyError(error);
          if (!dependency) {
            fatal ??= { error };
            return;
          }
          // The part may be in the archive but not in the index: it failed, and a retry of it is idempotent.
          interrupted ??= dependency;
          results[index] = inFlightFailure(index, bytes);
        })
        .finally(() => {
          inflightBytes -= bytes.length;
          inflight.delete(task);
        });
      inflight.add(task);
    }
  } catch (err) {
    if (err instanceof MultipartLimitError || err instanceof MultipartFormatError) abort = { error: err };
    else fatal ??= { error: err };
  } finally {
    // What was fully received is stored even if the client has gone: the work is bounded by the pipeline depth.
    await Promise.all(inflight);
    flush();
    await indexing;
  }
  if (fatal) throw fatal.error;

  const run: StoreRun = { stored: [], failed: [], abort, interrupted };
  for (const r of results) {
    if (!r) continue;
    if (r.ok) run.stored.push(r.stored);
    else run.failed.push(r.failure);
  }
  return run;
}

/** An archived part whose indexing a dependency failure stopped: Processing failure (0x0110), with its UIDs. */
function inFlightFailureOf(index: number, archived: ArchivedForIndex): { ok: false; failure: PartFailure } {
  return {
    ok: false,
    failure: {
      index,
      message: 'a dependency failed while it was stored',
      failed: {
        sopClassUid: archived.parsed.sopClassUid,
        sopInstanceUid: archived.parsed.sopInstanceUid,
        failureReason: FailureReason.ProcessingFailure,
      },
    },
  };
}

function toResult(
  index: number,
  outcome: IngestOutcome,
): { ok: true; stored: StoredInstance } | { ok: false; failure: PartFailure } {
  if (outcome.ok) {
    const { parsed } = outcome;
    return {
      ok: true,
      stored: {
        sopClassUid: parsed.sopClassUid,
        sopInstanceUid: parsed.sopInstanceUid,
        studyInstanceUid: parsed.studyInstanceUid,
        seriesInstanceUid: parsed.seriesInstanceUid,
      },
    };
  }
  return {
    ok: false,
    failure: {
      index,
      message: outcome.message,
      failed: {
        sopClassUid: outcome.sopClassUid,
        sopInstanceUid: outcome.sopInstanceUid,
        failureReason: outcome.reason,
      },
    },
  };
}

/** True when the archive answers its status within `ms`. */
async function archiveAnswers(services: Services, ms: number): Promise<boolean> {
  try {
    await services.archive.ping(AbortSignal.timeout(ms));
    return true;
  } catch {
    return false;
  }
}

/** A part that was being stored when a dependency failed: Processing failure (0x0110). */
function inFlightFailure(index: number, bytes: Buffer): { ok: false; failure: PartFailure } {
  return failureWithUids(
    index,
    bytes,
    FailureReason.ProcessingFailure,
    'a dependency failed while it was stored',
  );
}

/** A part received after a dependency failed, never attempted: Out of resources (0xA700). */
function notAttempted(index: number, bytes: Buffer): { ok: false; failure: PartFailure } {
  return failureWithUids(
    index,
    bytes,
    FailureReason.OutOfResources,
    'not stored: a dependency is unavailable',
  );
}

function failureWithUids(
  index: number,
  bytes: Buffer,
  reason: number,
  message: string,
): { ok: false; failure: PartFailure } {
  const read = readObject(bytes);
  return {
    ok: false,
    failure: {
      index,
      message,
      failed: read.ok
        ? {
            sopClassUid: read.parsed.sopClassUid,
            sopInstanceUid: read.parsed.sopInstanceUid,
            failureReason: reason,
          }
        : { sopClassUid: read.sopClassUid, sopInstanceUid: read.sopInstanceUid, failureReason: read.reason },
    },
  };
}

/** Warning header values naming why parts failed (messages carry no PHI: reasons and UIDs at most). */
function failureWarnings(failed: readonly PartFailure[]): string[] {
  const out = failed
    .slice(0, MAX_WARNINGS)
    .map((f) =>
      warning299(
        `part ${f.index + 1}: ${f.message} (failure reason 0x${f.failed.failureReason.toString(16).toUpperCase()})`,
      ),
    );
  if (failed.length > MAX_WARNINGS) out.push(warning299(`${failed.length - MAX_WARNINGS} more parts failed`));
  return out;
}

function limitMessage(err: MultipartLimitError): string {
  switch (err.limit) {
    case 'maxParts':
      return `the request has more than ${err.max} parts (STOW_MAX_PARTS)`;
    case 'maxPartBytes':
      return `a part is larger than ${err.max} bytes (STOW_MAX_PART_BYTES)`;
    case 'maxTotalBytes':
      return `the request body is larger than ${err.max} bytes (STOW_MAX_REQUEST_BYTES)`;
    default:
      return `a part's headers are larger than ${err.max} bytes`;
  }
}
