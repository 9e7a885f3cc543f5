/**
 * WADO-URI (PS3.18 §9 "URI Service", Chapter 6.2 in editions before 2019) for legacy viewers:
 * `/wado?requestType=WADO&studyUID=...&seriesUID=...&objectUID=...&contentType=application/dicom`, also under
 * `/projects/{project}/wado`. It answers the object as application/dicom, or a single image rendered as JPEG, PNG or
 * GIF, with the same access rules as WADO-RS.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import type { RenderedMediaType, Viewport, WindowSpec } from '../dicom/render';
import { BadRequestError, NotAcceptableError, NotFoundError, warning299 } from '../errors';
import { findRenderableInstance } from '../index-db/thumbnails';
import { listRetrievableInstances } from '../index-db/wado';
import { requireUid } from '../dicom/uid';
import { abortOnClose } from '../http/stream';
import { AS_STORED, openInstanceAs } from '../retrieve/instances';
import { renderArchivedFrame } from '../retrieve/render';
import type { AuditDetail, Services } from '../services';
import { noteAudit, requestReadScopes } from '../http/context';
import { MediaType, TransferSyntax, parseAccept } from './media-types';
import { renderLimits, runRender, sendImage } from './rendered';
import { respondWithInstanceFile } from './wado-rs';

/** The WADO-URI router, mounted at `/wado` and `/projects/{project}/wado`. */
export function wadoUriRouter(services: Services): Router {
  const router = new Router();
  router.get('/', (ctx) => handleWadoUriRetrieve(ctx, services));
  return router;
}

function param(ctx: Context, name: string): string | undefined {
  const v = ctx.query[name];
  const s = Array.isArray(v) ? v[0] : v;
  return s === undefined || s === '' ? undefined : s;
}

/** What WADO-URI can answer for one object: its DICOM form, and rendered forms for single images. */
type UriMediaType = typeof MediaType.dicom | RenderedMediaType;
const RENDERED: readonly RenderedMediaType[] = ['image/jpeg', 'image/png', 'image/gif'];

/**
 * Picks the response media type (PS3.18 §9.3, §8.7.8.1): the acceptable types of `contentType` (else of the
 * Accept header) by quality, ties to the earlier one; a wildcard takes the object's default. Undefined when
 * nothing acceptable is available.
 */
export function selectUriMediaType(
  ranges: string | undefined,
  available: readonly UriMediaType[],
  fallback: UriMediaType,
): UriMediaType | undefined {
  const entries = parseAccept(ranges ?? '');
  if (entries.length === 0) return fallback;
  const wanted = entries.filter((e) => e.q > 0).sort((a, b) => b.q - a.q || a.index - b.index);
  for (const e of wanted) {
    const type = e.type.toLowerCase();
    if (type === '*/*') return fallback;
    if (type === 'image/*') {
      const image = available.find((t) => t.startsWith('image/'));
      if (image) return fallback.startsWith('image/') ? fallback : image;
      continue;
    }
    if (type === 'application/*') {
      if (available.includes(MediaType.dicom)) return MediaType.dicom;
      continue;
    }
    const hit = available.find((t) => t === type);
    if (hit) return hit;
  }
  return undefined;
}

const INTEGER = /^[1-9]\d{0,8}$/;
const DECIMAL = /^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$/;

function positiveInt(ctx: Context, name: string): number | undefined {
  const v = param(ctx, name);
  if (v === undefined) return undefined;
  if (!INTEGER.test(v.trim())) throw new BadRequestError(`${name} must be a positive integer`);
  return Number(v);
}

function decimal(ctx: Context, name: string): number | undefined {
  const v = param(ctx, name);
  if (v === undefined) return undefined;
  if (!DECIMAL.test(v.trim())) throw new BadRequestError(`${name} must be a decimal number`);
  return Number(v);
}

/** The rendering parameters of PS3.18 §9.5.1 (URI names), checked; region still in fractions of the image. */
interface UriRenderParams {
  rows?: number;
  columns?: number;
  region?: [number, number, number, number];
  window?: WindowSpec;
  quality?: number;
  frameNumber?: number;
  ignored: string[];
}

/** Names of the parameters that only mean something for a rendered answer. */
const RENDER_ONLY = [
  'rows',
  'columns',
  'region',
  'windowCenter',
  'windowWidth',
  'frameNumber',
  'imageQuality',
  'annotation',
];

function parseUriRenderParams(ctx: Context): UriRenderParams {
  const out: UriRenderParams = { ignored: [] };
  out.rows = positiveInt(ctx, 'rows');
  out.columns = positiveInt(ctx, 'columns');
  out.frameNumber = positiveInt(ctx, 'frameNumber');
  const q = param(ctx, 'imageQuality');
  if (q !== undefined) {
    if (!/^\d{1,3}$/.test(q.trim()) || Number(q) < 1 || Number(q) > 100)
      throw new BadRequestError('imageQuality must be an integer from 1 to 100');
    out.quality = Number(q);
  }
  const region = param(ctx, 'region');
  if (region !== undefined) {
    const parts = region.split(',').map((p) => p.trim());
    if (parts.length !== 4 || !parts.every((p) => DECIMAL.test(p)))
      throw new BadRequestError('region must be four fractions: left,top,right,bottom');
    const [x1, y1, x2, y2] = parts.map(Number);
    if ([x1, y1, x2, y2].some((v) => v < 0 || v > 1) || x2 <= x1 || y2 <= y1)
      throw new BadRequestError('region must lie within 0.0 to 1.0 with left < right and top < bottom');
    out.region = [x1, y1, x2, y2];
  }
  const center = decimal(ctx, 'windowCenter');
  const width = decimal(ctx, 'windowWidth');
  if ((center === undefined) !== (width === undefined))
    throw new BadRequestError('windowCenter and windowWidth go together: give both or neither');
  if (center !== undefined && width !== undefined) {
    // PS3.3 C.11.2.1.2: Window Width is at least 1 for the linear function, which WADO-URI implies.
    if (width < 1) throw new BadRequestError('windowWidth must be at least 1');
    out.window = { center, width, fn: 'linear' };
  }
  if (param(ctx, 'annotation') !== undefined) out.ignored.push('annotation');
  for (const name of ['presentationUID', 'presentationSeriesUID'])
    if (param(ctx, name) !== undefined) out.ignored.push(name);
  return out;
}

/**
 * PS3.18 §9.4 Retrieve DICOM Instance and §9.5 Retrieve Rendered Instance: one `requestType=WADO` whose selected
 * media type decides which. A single-frame image (or one frame of a multi-frame image named by `frameNumber`)
 * renders as image/jpeg by default, or image/png or image/gif, through the same pipeline and limits as /rendered;
 * other objects (multi-frame without frameNumber, SR, RT Structure Sets) answer application/dicom.
 */
export async function handleWadoUriRetrieve(ctx: Context, services: Services): Promise<void> {
  if (param(ctx, 'requestType') !== 'WADO') throw new BadRequestError('requestType must be WADO');
  const studyUid = requireUid(param(ctx, 'studyUID'), 'studyUID');
  const seriesUid = requireUid(param(ctx, 'seriesUID'), 'seriesUID');
  const sopInstanceUid = requireUid(param(ctx, 'objectUID'), 'objectUID');
  // Ignoring this would hand out identifying data to a caller who asked for it removed.
  if (param(ctx, 'anonymize') === 'yes') throw new BadRequestError('anonymize=yes is not supported');
  const render = parseUriRenderParams(ctx);

  const scopes = await requestReadScopes(ctx, services);
  const [inst] = await listRetrievableInstances(services.db, scopes, { studyUid, seriesUid, sopInstanceUid });
  if (!inst) throw new NotFoundError('object not found');

  const frames = inst.number_of_frames && inst.number_of_frames > 0 ? inst.number_of_frames : 1;
  const isImage = inst.rows != null && inst.columns != null;
  if (render.frameNumber !== undefined) {
    // PS3.18 §9.5.2.1: frameNumber names a frame of a multi-frame image, or the request is a 400.
    if (!isImage || frames < 2) throw new BadRequestError('frameNumber applies to multi-frame images only');
    if (render.frameNumber > frames)
      throw new BadRequestError(
        `frameNumber ${render.frameNumber} exceeds the ${frames} frames of the object`,
      );
  }
  const renderable = isImage && (frames === 1 || render.frameNumber !== undefined);
  const available: UriMediaType[] = renderable ? [...RENDERED, MediaType.dicom] : [MediaType.dicom];
  const contentType = param(ctx, 'contentType');
  // transferSyntax only has meaning for the DICOM object: a client naming one without contentType wants that.
  const fallback: UriMediaType =
    renderable && param(ctx, 'transferSyntax') === undefined ? 'image/jpeg' : MediaType.dicom;
  const accept = contentType ?? (ctx.get('accept') || undefined);
  const selected = selectUriMediaType(accept, available, fallback);
  if (!selected) {
    const hint =
      isImage && !renderable ? ' (name a frame with frameNumber to render a multi-frame image)' : '';
    throw new NotAcceptableError(
      `${contentType === undefined ? 'Accept' : 'contentType'} not available; available: ${available.join(', ')}${hint}`,
    );
  }

  if (selected !== MediaType.dicom) {
    if (param(ctx, 'transferSyntax') !== undefined)
      throw new BadRequestError('transferSyntax applies to contentType application/dicom only');
    const ids = { studyUid, seriesUid, sopInstanceUid };
    return respondRendered(ctx, services, scopes, ids, selected, render, inst);
  }
  // PS3.18 §9.4.1: these shall not be present for the DICOM object; applying none of them silently would mislead.
  const renderOnly = RENDER_ONLY.filter((n) => param(ctx, n) !== undefined);
  if (renderOnly.length)
    throw new BadRequestError(
      `${renderOnly.join(', ')} apply to rendered images, not to contentType application/dicom`,
    );

  const wantedTs = param(ctx, 'transferSyntax');
  let ts = AS_STORED;
  if (wantedTs !== undefined && wantedTs !== inst.transfer_syntax) {
    if (
      wantedTs !== TransferSyntax.explicitVrLittleEndian ||
      !services.archive.capabilities().decodable.has(inst.transfer_syntax)
    ) {
      const available = [inst.transfer_syntax];
      if (services.archive.capabilities().decodable.has(inst.transfer_syntax))
        available.push(TransferSyntax.explicitVrLittleEndian);
      throw new NotAcceptableError(
        `transferSyntax not available; available: ${[...new Set(available)].join(', ')}`,
      );
    }
    ts = wantedTs;
  }

  noteAudit(ctx, {
    action: 'wado.uri',
    projectId: ctx.params.project,
    studyUid,
    seriesUid,
    sopInstanceUid,
    bytes: 0,
  });
  const audit = ctx.state.audit as AuditDetail;
  const file = await openInstanceAs(services.archive, inst, ts, abortOnClose(ctx));
  respondWithInstanceFile(ctx, services, file, sopInstanceUid, audit);
}

/** PS3.18 §9.5 Retrieve Rendered Instance: one frame through the /rendered pipeline, under its limits and cap. */
async function respondRendered(
  ctx: Context,
  services: Services,
  scopes: Awaited<ReturnType<typeof requestReadScopes>>,
  ids: { studyUid: string; seriesUid: string; sopInstanceUid: string },
  mediaType: RenderedMediaType,
  render: UriRenderParams,
  inst: { rows: number | null; columns: number | null },
): Promise<void> {
  noteAudit(ctx, { action: 'wado.uri.rendered', projectId: ctx.params.project, ...ids });
  const row = await findRenderableInstance(services.db, scopes, ids);
  if (!row) throw new NotFoundError('object not found');
  const viewport: Viewport = {};
  if (render.region) {
    // Fractions of the stored matrix to whole pixels; the parser has made sure the region is not empty.
    const cols = inst.columns ?? 0;
    const rows = inst.rows ?? 0;
    const [x1, y1, x2, y2] = render.region;
    viewport.sx = Math.floor(x1 * cols);
    viewport.sy = Math.floor(y1 * rows);
    viewport.sw = Math.max(1, Math.round(x2 * cols) - viewport.sx);
    viewport.sh = Math.max(1, Math.round(y2 * rows) - viewport.sy);
  }
  // rows and columns are maxima that keep the aspect ratio (PS3.18 §9.5.1.2 viewport semantics).
  if (render.columns !== undefined) viewport.vw = render.columns;
  if (render.rows !== undefined) viewport.vh = render.rows;
  const bytes = await runRender(services, () =>
    renderArchivedFrame(
      services.archive,
      row,
      {
        frameNumber: render.frameNumber ?? 1,
        window: render.window,
        encode: { mediaType, quality: render.quality, viewport },
      },
      renderLimits(services.config),
      abortOnClose(ctx),
    ),
  );
  for (const name of render.ignored)
    ctx.append('Warning', warning299(`the ${name} parameter is not supported and was ignored`));
  sendImage(ctx, bytes, mediaType);
}
