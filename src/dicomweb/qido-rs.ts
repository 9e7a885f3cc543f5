/**
 * QIDO-RS, the Search Transaction (PS3.18 §10.6), at both DICOMweb roots: `/projects/{project}/dicom-web`
 * (one project) and `/dicom-web` (the union of the caller's readable projects). Answered from the index only.
 */
import type { Context } from 'koa';
import { isUid, parseQidoQuery } from '../dicom/matching';
import { projectQidoResults } from '../dicom/qido-projector';
import { dicomJsonToXml } from '../dicom/xml';
import { BadRequestError, NotAcceptableError, NotFoundError, warning299 } from '../errors';
import { isVisible, type QidoLevel, searchQido } from '../index-db/qido';
import type { Services } from '../services';
import { dicomwebRoot, noteAudit, requestReadScopes } from '../http/context';
import { describeOffers, MediaType, type MediaTypeOffer, negotiateMediaType } from './media-types';
import { multipartRelatedStream } from './multipart';

/**
 * What QIDO-RS answers in (PS3.18 §10.6.3.2, §8.7.5): DICOM JSON by default (also labelled plain JSON for clients
 * that ask for that), or one Native DICOM Model document per result as multipart/related. A bare
 * application/dicom+xml is read as a request for the latter, the only XML form a search result has.
 */
const OFFERS: MediaTypeOffer[] = [
  { mediaType: MediaType.dicomJson },
  { mediaType: MediaType.multipartRelated, partType: MediaType.dicomXml },
  { mediaType: MediaType.json },
  { mediaType: MediaType.dicomXml },
];

/** Search for Studies: `GET {root}/studies` (PS3.18 §10.6.1, Table 10.6.1-2). */
export async function handleSearchForStudies(ctx: Context, services: Services): Promise<void> {
  await search(ctx, services, 'study', 'qido.studies');
}

/** Search for Series: `GET {root}/series` and `GET {root}/studies/{study}/series` (PS3.18 §10.6.1). */
export async function handleSearchForSeries(ctx: Context, services: Services): Promise<void> {
  await search(ctx, services, 'series', 'qido.series');
}

/**
 * Search for Instances: `GET {root}/instances`, `{root}/studies/{study}/instances` and
 * `{root}/studies/{study}/series/{series}/instances` (PS3.18 §10.6.1).
 */
export async function handleSearchForInstances(ctx: Context, services: Services): Promise<void> {
  await search(ctx, services, 'instance', 'qido.instances');
}

async function search(ctx: Context, services: Services, level: QidoLevel, action: string): Promise<void> {
  const params = new URLSearchParams(ctx.querystring);
  const queryAccept = params.getAll('accept');
  const chosen = negotiateMediaType(
    OFFERS,
    ctx.get('accept') || undefined,
    queryAccept.length ? queryAccept : undefined,
  );
  if (!chosen) {
    throw new NotAcceptableError(
      `QIDO-RS answers are available as ${describeOffers(OFFERS.slice(0, 3)).join(', ')}`,
    );
  }
  const studyUid = pathUid(ctx.params.study, 'StudyInstanceUID');
  const seriesUid = pathUid(ctx.params.series, 'SeriesInstanceUID');
  const query = parseQidoQuery(params, {
    defaultLimit: services.config.QIDO_DEFAULT_LIMIT,
    maxLimit: services.config.QIDO_MAX_LIMIT,
  });
  // Keywords only, never values: query values can be patient names.
  const keys = query.keys.map((k) => k.path.map((a) => a.keyword).join('.'));
  noteAudit(ctx, { action, projectId: ctx.params.project, studyUid, seriesUid, detail: { keys } });
  const scopes = await requestReadScopes(ctx, services);

  const found = await searchQido(services.db, { level, studyUid, seriesUid, query, scopes });
  const root = dicomwebRoot(ctx, services.config);
  const answer = {
    results: projectQidoResults({ level, studyUid, seriesUid, root }, found),
    warnings: found.warnings,
  };
  // A search below a study or series the caller cannot see answers like one that does not exist.
  if (
    answer.results.length === 0 &&
    studyUid &&
    !(await isVisible(services.db, scopes, studyUid, seriesUid))
  ) {
    throw new NotFoundError(seriesUid ? 'series not found' : 'study not found');
  }
  noteAudit(ctx, { action, detail: { keys, results: answer.results.length } });

  for (const w of answer.warnings) ctx.append('Warning', warning299(w));
  ctx.vary('Accept');
  // Zero matches are 200 with an empty array: CP-2473 replaces the 204 of PS3.18 §8.3.4.4.1, which RFC 9110 forbids
  // to carry the (empty) payload; clients (dicomweb-client, OHIF) accept both.
  ctx.status = 200;
  if (chosen.offer.partType === MediaType.dicomXml || chosen.offer.mediaType === MediaType.dicomXml) {
    const documents = dicomJsonToXml(answer.results);
    const mp = multipartRelatedStream(
      (async function* () {
        for (const doc of documents)
          yield { contentType: MediaType.dicomXml, body: Buffer.from(doc, 'utf8') };
      })(),
    );
    ctx.set('Content-Type', mp.contentType(MediaType.dicomXml));
    ctx.body = mp.stream;
    return;
  }
  ctx.type =
    chosen.offer.mediaType === MediaType.json ? 'application/json; charset=utf-8' : MediaType.dicomJson;
  ctx.body = JSON.stringify(answer.results);
}

function pathUid(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (!isUid(value)) throw new BadRequestError(`${name} in the path is not a valid UID`, 'bad_query');
  return value;
}
