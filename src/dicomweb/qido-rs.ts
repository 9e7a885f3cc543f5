/**
 * QIDO-RS, the Search Transaction (PS3.18 §10.6), at both DICOMweb roots: `/projects/{project}/dicom-web`
 * (one project) and `/dicom-web` (the union of the caller's readable projects). Answered from the index only.
 */
import type Router from '@koa/router';
import type { Context } from 'koa';
import { isUid, parseQidoQuery } from '../dicom/matching';
import { BadRequestError, NotAcceptableError, NotFoundError, warning299 } from '../errors';
import { isVisible, type QidoLevel, searchQido } from '../index-db/qido';
import type { Services } from '../services';
import { dicomwebRoot, noteAudit, requestReadScopes } from './context';

const DICOM_JSON = 'application/dicom+json';

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

/** Registers the six QIDO-RS resources on the DICOMweb router (mounted at every root). */
export function registerQidoRoutes(router: Router, services: Services): void {
  router.get('/studies', (ctx) => handleSearchForStudies(ctx, services));
  router.get('/studies/:study/series', (ctx) => handleSearchForSeries(ctx, services));
  router.get('/series', (ctx) => handleSearchForSeries(ctx, services));
  router.get('/studies/:study/series/:series/instances', (ctx) => handleSearchForInstances(ctx, services));
  router.get('/studies/:study/instances', (ctx) => handleSearchForInstances(ctx, services));
  router.get('/instances', (ctx) => handleSearchForInstances(ctx, services));
}

async function search(ctx: Context, services: Services, level: QidoLevel, action: string): Promise<void> {
  const params = new URLSearchParams(ctx.querystring);
  requireJsonAccepted(ctx.get('accept'), params.getAll('accept'));
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

  const answer = await searchQido(services.db, {
    level,
    studyUid,
    seriesUid,
    query,
    scopes,
    root: dicomwebRoot(ctx, services.config),
  });
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
  // Zero matches are 200 with an empty array: CP-2473 replaces the 204 of PS3.18 §8.3.4.4.1, which RFC 9110 forbids
  // to carry the (empty) payload; clients (dicomweb-client, OHIF) accept both.
  ctx.status = 200;
  ctx.type = DICOM_JSON;
  ctx.body = JSON.stringify(answer.results);
}

function pathUid(value: string | undefined, name: string): string | undefined {
  if (value === undefined) return undefined;
  if (!isUid(value)) throw new BadRequestError(`${name} in the path is not a valid UID`, 'bad_query');
  return value;
}

/**
 * The representations QIDO-RS answers in (PS3.18 §10.6.3.2): DICOM JSON, also for plain `application/json`.
 * `application/dicom+xml` (multipart/related) is not offered yet. The `accept` query parameter (§8.3.3.1) wins
 * over the header.
 */
function requireJsonAccepted(header: string, queryAccept: string[]): void {
  const ranges = (queryAccept.length ? queryAccept.join(',') : header)
    .split(',')
    .map((r) => r.trim())
    .filter((r) => r !== '');
  if (ranges.length === 0) return;
  let wantsXml = false;
  for (const range of ranges) {
    const [type, ...params] = range.split(';').map((s) => s.trim().toLowerCase());
    const q = params.find((x) => x.startsWith('q='));
    if (q && Number(q.slice(2)) <= 0) continue;
    if (['*/*', 'application/*', DICOM_JSON, 'application/json'].includes(type)) return;
    if (type === 'application/dicom+xml' || (type === 'multipart/related' && range.includes('dicom+xml')))
      wantsXml = true;
  }
  throw new NotAcceptableError(
    wantsXml
      ? 'QIDO-RS answers are available as application/dicom+json only; application/dicom+xml is not supported yet'
      : 'QIDO-RS answers are available as application/dicom+json',
  );
}
