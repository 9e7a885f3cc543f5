import type { Context } from 'koa';
import { parseRenderParams, type RenderedMediaType, type RenderParams } from '../dicom/render';
import { BadRequestError, NotAcceptableError, NotFoundError, ServiceBusyError, warning299 } from '../errors';
import {
  findRenderableInstance,
  findVisibleThumbnail,
  getThumbnail,
  putThumbnail,
  type RenderableRow,
  seriesRepresentative,
  studyRepresentativeSeries,
} from '../index-db/thumbnails';
import { codecPoolFor } from '../codecs';
import {
  type RenderLimits,
  renderArchivedFrame,
  renderThumbnail,
  THUMBNAIL_QUALITY,
} from '../retrieve/render';
import { abortOnClose } from '../http/stream';
import { requireUid } from '../dicom/uid';
import { negotiateMediaType } from './media-types';
import type { Services } from '../services';
import { noteAudit, requestReadScopes } from '../http/context';

/** Largest square thumbnail kept in the cache; larger ones are rendered each time. */
const MAX_CACHED_THUMBNAIL = 512;

function uid(value: string | undefined, what: string): string {
  return requireUid(value, what);
}

/** Rendered resources answer one frame: a single positive frame number. */
function frameNumber(value: string | undefined): number {
  if (value === undefined) return 1;
  if (!/^[1-9]\d{0,8}$/.test(value)) {
    throw new BadRequestError('rendered frames and frame thumbnails take exactly one frame number');
  }
  return Number(value);
}

/**
 * Picks image/jpeg, image/png or image/webp from the `accept` query parameter (PS3.18 §8.3.3.1), else the Accept header;
 * quality values and wildcards honoured, ties go to JPEG (the default rendered media type, PS3.18 §8.7.4).
 */
export function selectRenderedMediaType(
  acceptHeader: string | undefined,
  acceptQuery: string | undefined,
): RenderedMediaType {
  // WebP is cheap to offer (sharp encodes it) and a third the size of PNG for viewers that take it.
  const offers = [{ mediaType: 'image/jpeg' }, { mediaType: 'image/png' }, { mediaType: 'image/webp' }];
  const refused = () =>
    new NotAcceptableError('rendered resources are available as image/jpeg, image/png or image/webp');
  if (acceptQuery?.trim()) {
    const fromQuery = negotiateMediaType(offers, acceptQuery);
    if (fromQuery) return fromQuery.mediaType as RenderedMediaType;
    // The client said what it wants; none of it can be made, and no header widens the choice.
    if (!acceptHeader?.trim()) throw refused();
  }
  const chosen = negotiateMediaType(offers, acceptHeader ?? '');
  if (!chosen) throw refused();
  return chosen.mediaType as RenderedMediaType;
}

/**
 * Caps concurrent renders in this process (each holds a decoded frame in memory and keeps a core busy) and the renders
 * waiting for a turn: beyond `maxWaiting`, a request answers 503 with Retry-After at once instead of queueing.
 */
class Limiter {
  private active = 0;
  private readonly waiting: Array<() => void> = [];
  constructor(
    private readonly max: number,
    private readonly maxWaiting: number,
  ) {}
  async run<T>(fn: () => Promise<T>): Promise<T> {
    if (this.active >= this.max) {
      if (this.waiting.length >= this.maxWaiting) {
        throw new ServiceBusyError('the gateway is rendering as many images as it can; retry later');
      }
      await new Promise<void>((resolve) => this.waiting.push(resolve));
    }
    this.active++;
    try {
      return await fn();
    } finally {
      this.active--;
      this.waiting.shift()?.();
    }
  }
}

/** One limiter per set of services, so /rendered, thumbnails and WADO-URI share the RENDER_CONCURRENCY cap. */
const limiters = new WeakMap<Services, Limiter>();

/** Runs a render under the process-wide RENDER_CONCURRENCY cap of these services. */
export function runRender<T>(services: Services, fn: () => Promise<T>): Promise<T> {
  let limiter = limiters.get(services);
  if (!limiter) {
    limiter = new Limiter(services.config.RENDER_CONCURRENCY, services.config.RENDER_QUEUE);
    limiters.set(services, limiter);
  }
  return limiter.run(fn);
}

/** The render limits of the configuration, with its decode thread pool. */
export function renderLimits(config: Services['config']): RenderLimits {
  return {
    maxPixels: config.RENDER_MAX_PIXELS,
    maxOutputPixels: config.RENDER_MAX_OUTPUT_PIXELS,
    codecs: codecPoolFor(config),
  };
}

function warnIgnored(ctx: Context, params: RenderParams): void {
  for (const name of params.ignored)
    ctx.append('Warning', warning299(`the ${name} parameter is not supported and was ignored`));
}

/** Answers rendered bytes. */
export function sendImage(ctx: Context, bytes: Buffer, contentType: string): void {
  ctx.status = 200;
  ctx.type = contentType;
  // Rendered pixels of an instance do not change, but access can: private caching only.
  ctx.set('Cache-Control', 'private, max-age=3600');
  ctx.body = bytes;
}

/** The rendered and thumbnail handlers of one set of services (they share its render limiter). */
interface RenderedHandlers {
  rendered(ctx: Context): Promise<void>;
  thumbnail(ctx: Context): Promise<void>;
}
const handlers = new WeakMap<Services, RenderedHandlers>();

/**
 * PS3.18 §10.4 Retrieve Rendered, study, series, instance and frame resources (§8.3.5 rendering parameters): one
 * frame as image/jpeg, image/png or image/webp.
 */
export function handleRetrieveRenderedInstance(ctx: Context, services: Services): Promise<void> {
  return renderedHandlers(services).rendered(ctx);
}

/** PS3.18 §10.4.1.1.4 Retrieve Thumbnail of a study, series, instance or frame. */
export function handleRetrieveThumbnail(ctx: Context, services: Services): Promise<void> {
  return renderedHandlers(services).thumbnail(ctx);
}

function renderedHandlers(services: Services): RenderedHandlers {
  let h = handlers.get(services);
  if (!h) {
    h = makeRenderedHandlers(services);
    handlers.set(services, h);
  }
  return h;
}

function makeRenderedHandlers(services: Services): RenderedHandlers {
  const { config, db, archive, logger } = services;
  const limiter = { run: <T>(fn: () => Promise<T>) => runRender(services, fn) };
  const limits = renderLimits(config);

  /**
   * The instance a rendered or thumbnail request draws: the one named, or for a study or series the one that stands
   * for it (the middle image by Instance Number of the series, for a study its first series by Series Number with an
   * image the caller can see), so the study, series and thumbnail resources of one study agree.
   */
  async function renderTarget(
    scopes: Awaited<ReturnType<typeof requestReadScopes>>,
    studyUid: string,
    seriesUid: string | undefined,
    sopInstanceUid: string | undefined,
  ): Promise<RenderableRow> {
    let row: RenderableRow | undefined;
    if (sopInstanceUid && seriesUid) {
      row = await findRenderableInstance(db, scopes, { studyUid, seriesUid, sopInstanceUid });
    } else {
      const series = seriesUid ?? (await studyRepresentativeSeries(db, scopes, studyUid));
      if (series) row = await seriesRepresentative(db, scopes, series, studyUid);
    }
    if (!row) {
      throw new NotFoundError(
        sopInstanceUid
          ? 'instance not found'
          : `${seriesUid ? 'series' : 'study'} not found or has no images`,
      );
    }
    return row;
  }

  /**
   * What a rendered or thumbnail request asks for (UIDs, frame, §8.3.5 parameters, negotiated media type), and whom
   * it may see; the request is noted for the audit trail before anything is looked up.
   */
  async function renderRequest(ctx: Context, action: 'wado.rendered' | 'wado.thumbnail') {
    const studyUid = uid(ctx.params.study, 'Study Instance UID');
    const seriesParam =
      ctx.params.series === undefined ? undefined : uid(ctx.params.series, 'Series Instance UID');
    const sopParam =
      ctx.params.instance === undefined ? undefined : uid(ctx.params.instance, 'SOP Instance UID');
    const frame = frameNumber(ctx.params.frames);
    const params = parseRenderParams(ctx.query, action === 'wado.thumbnail');
    const mediaType = selectRenderedMediaType(ctx.get('accept'), queryString(ctx.query.accept));
    const scopes = await requestReadScopes(ctx, services);
    noteAudit(ctx, {
      action,
      projectId: ctx.params.project,
      studyUid,
      seriesUid: seriesParam,
      sopInstanceUid: sopParam,
    });
    return { studyUid, seriesParam, sopParam, frame, params, mediaType, scopes };
  }

  /**
   * PS3.18 §10.4 Retrieve Rendered, study, series, instance and frame resources (§8.3.5 rendering parameters): one
   * frame as image/jpeg, image/png or image/webp. A multi-frame instance renders its first frame (said in a Warning
   * header). A study or series renders the image that stands for it (see renderTarget), as Orthanc's DICOMweb plugin
   * and the viewers that ask for it (a series preview) expect, not a multipart of every instance.
   */
  async function handleRetrieveRenderedInstance(ctx: Context): Promise<void> {
    const { studyUid, seriesParam, sopParam, frame, params, mediaType, scopes } = await renderRequest(
      ctx,
      'wado.rendered',
    );
    const row = await renderTarget(scopes, studyUid, seriesParam, sopParam);
    if (!sopParam) ctx.set('X-Rendered-Instance', row.sopInstanceUid);
    const frames = row.dicomJson['00280008']?.Value?.[0];
    if (ctx.params.frames === undefined && Number(frames) > 1) {
      ctx.append(
        'Warning',
        warning299('multi-frame instance: frame 1 was rendered; ask for .../frames/{n}/rendered'),
      );
    }
    const bytes = await limiter.run(() =>
      renderArchivedFrame(
        archive,
        row,
        {
          frameNumber: frame,
          icc: params.icc,
          window: params.window,
          encode: { mediaType, quality: params.quality, viewport: params.viewport },
        },
        limits,
        abortOnClose(ctx),
      ),
    );
    warnIgnored(ctx, params);
    sendImage(ctx, bytes, mediaType);
  }

  /**
   * PS3.18 §10.4.1.1.4 thumbnail resources of a study, series, instance or frame: a small image chosen by the
   * server (for studies and series, the middle image of the first series the caller can see). The default form
   * (JPEG, THUMBNAIL_SIZE, frame 1) comes from the cache the thumbnail job fills; a miss renders it now and caches
   * it, so the next viewer gets it at once. Other forms (PNG, a viewport) are rendered on demand.
   */
  async function handleRetrieveThumbnail(ctx: Context): Promise<void> {
    const { studyUid, seriesParam, sopParam, frame, params, mediaType, scopes } = await renderRequest(
      ctx,
      'wado.thumbnail',
    );

    // JPEG of frame 1 in a square box is what viewers list; those are cached (a few sizes per instance at most).
    const vp = params.viewport;
    const size = vp ? vp.vw : config.THUMBNAIL_SIZE;
    const cacheable =
      mediaType === 'image/jpeg' &&
      frame === 1 &&
      params.quality === undefined &&
      size !== undefined &&
      (!vp || (vp.vw === vp.vh && size <= MAX_CACHED_THUMBNAIL));
    if (cacheable && sopParam && seriesParam) {
      // A named instance with its thumbnail cached: one index lookup, no DICOM JSON read.
      const hit = await findVisibleThumbnail(
        db,
        scopes,
        { studyUid, seriesUid: seriesParam, sopInstanceUid: sopParam },
        size,
      );
      if (hit) {
        warnIgnored(ctx, params);
        ctx.set('X-Thumbnail-Cache', 'hit');
        return sendImage(ctx, hit.bytes, hit.contentType);
      }
    }
    const target = await renderTarget(scopes, studyUid, seriesParam, sopParam);
    if (!sopParam) ctx.set('X-Rendered-Instance', target.sopInstanceUid);

    if (cacheable) {
      const cached = await getThumbnail(db, target.sopInstanceUid, size);
      if (cached) {
        warnIgnored(ctx, params);
        ctx.set('X-Thumbnail-Cache', 'hit');
        return sendImage(ctx, cached.bytes, cached.contentType);
      }
      const bytes = await limiter.run(() =>
        renderThumbnail(archive, target, size, limits, abortOnClose(ctx)),
      );
      await putThumbnail(db, {
        sopInstanceUid: target.sopInstanceUid,
        size,
        contentType: mediaType,
        bytes,
        sourceMd5: target.md5,
      }).catch((err: Error) =>
        logger.warn({ sopInstanceUid: target.sopInstanceUid, err: err.message }, 'could not cache thumbnail'),
      );
      warnIgnored(ctx, params);
      ctx.set('X-Thumbnail-Cache', 'miss');
      return sendImage(ctx, bytes, mediaType);
    }
    const viewport = vp ?? { vw: config.THUMBNAIL_SIZE, vh: config.THUMBNAIL_SIZE };
    const bytes = await limiter.run(() =>
      renderArchivedFrame(
        archive,
        target,
        {
          frameNumber: frame,
          icc: params.icc,
          reduced: true,
          encode: {
            mediaType,
            quality: params.quality ?? THUMBNAIL_QUALITY,
            viewport,
            withoutEnlargement: true,
          },
        },
        limits,
        abortOnClose(ctx),
      ),
    );
    warnIgnored(ctx, params);
    sendImage(ctx, bytes, mediaType);
  }

  return { rendered: handleRetrieveRenderedInstance, thumbnail: handleRetrieveThumbnail };
}

function queryString(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(',') : v;
}
