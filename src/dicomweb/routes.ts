/**
 * The one DICOMweb route table. Every URL under a DICOMweb root is listed here once, with the PS3.18 transaction it
 * implements; `dicomwebRouter` mounts exactly these, and the Retrieve Capabilities document (PS3.18 §8.9, WADL of
 * Annex H) is generated from the same list, so the two cannot drift apart.
 *
 * Roots (mounted by app.ts): `/projects/{project}/dicom-web` (scoped; STOW lives here), `/dicom-web` (read-only
 * union of the caller's projects) and `/share/{token}/dicom-web` (share links, read-only). Handlers read
 * `ctx.params.project` to know which root they serve.
 */
import Router from '@koa/router';
import type { Context } from 'koa';
import { checkUidParameters } from '../http/uid-params';
import type { Services } from '../services';
import { handleRetrieveCapabilities } from './capabilities';
import { MediaType } from './media-types';
import { handleSearchForInstances, handleSearchForSeries, handleSearchForStudies } from './qido-rs';
import { handleRetrieveRenderedInstance, handleRetrieveThumbnail } from './rendered';
import { handleStoreInstances } from './stow-rs';
import {
  handleRetrieveBulkData,
  handleRetrieveFrames,
  handleRetrieveInstance,
  handleRetrieveMetadata,
  handleRetrieveSeries,
  handleRetrieveStudy,
} from './wado-rs';

/** One DICOMweb resource and method. */
export interface DicomwebRoute {
  method: 'GET' | 'POST';
  /** Path under the root, in @koa/router syntax (`:study`, `*path`). */
  path: string;
  /** Transaction identifier as PS3.18 Table H-1 names it (WADL method id). */
  id: string;
  /** PS3.18 section of the transaction. */
  section: string;
  /** Media types the resource answers in (PS3.18 §8.7), in the server's order of preference. */
  produces: readonly string[];
  /** Media types it reads (requests with a body). */
  consumes?: readonly string[];
  /** Changes the archive: not offered on the read-only roots. */
  writes?: boolean;
  handler(ctx: Context, services: Services): Promise<void>;
}

const S = '/studies/:study';
const X = `${S}/series/:series`;
const I = `${X}/instances/:instance`;

const search = [
  MediaType.dicomJson,
  `${MediaType.multipartRelated}; type="${MediaType.dicomXml}"`,
  MediaType.json,
];
const bulk = [`${MediaType.multipartRelated}; type="${MediaType.dicom}"`, MediaType.zip];
const instance = [`${MediaType.multipartRelated}; type="${MediaType.dicom}"`, MediaType.dicom];
const metadata = [
  MediaType.dicomJson,
  MediaType.json,
  `${MediaType.multipartRelated}; type="${MediaType.dicomXml}"`,
];
const frames = [
  `${MediaType.multipartRelated}; type="${MediaType.octetStream}"`,
  `${MediaType.multipartRelated}; type="*"`,
];
const bulkData = [MediaType.octetStream, `${MediaType.multipartRelated}; type="${MediaType.octetStream}"`];
const image = [MediaType.jpeg, MediaType.png, MediaType.webp];
const stored = [MediaType.dicomJson, MediaType.dicomXml, MediaType.json];
const stowBody = [`${MediaType.multipartRelated}; type="${MediaType.dicom}"`];

/** Every DICOMweb route, in the order they are matched. */
export const DICOMWEB_ROUTES: readonly DicomwebRoute[] = [
  {
    method: 'GET',
    path: '/studies',
    id: 'SearchForStudies',
    section: '10.6',
    produces: search,
    handler: handleSearchForStudies,
  },
  {
    method: 'GET',
    path: `${S}/series`,
    id: 'SearchForStudySeries',
    section: '10.6',
    produces: search,
    handler: handleSearchForSeries,
  },
  {
    method: 'GET',
    path: '/series',
    id: 'SearchForSeries',
    section: '10.6',
    produces: search,
    handler: handleSearchForSeries,
  },
  {
    method: 'GET',
    path: `${X}/instances`,
    id: 'SearchForStudySeriesInstances',
    section: '10.6',
    produces: search,
    handler: handleSearchForInstances,
  },
  {
    method: 'GET',
    path: `${S}/instances`,
    id: 'SearchForStudyInstances',
    section: '10.6',
    produces: search,
    handler: handleSearchForInstances,
  },
  {
    method: 'GET',
    path: '/instances',
    id: 'SearchForInstances',
    section: '10.6',
    produces: search,
    handler: handleSearchForInstances,
  },
  {
    method: 'POST',
    path: '/studies',
    id: 'StoreInstances',
    section: '10.5',
    produces: stored,
    consumes: stowBody,
    writes: true,
    handler: handleStoreInstances,
  },
  {
    method: 'POST',
    path: S,
    id: 'StoreStudyInstances',
    section: '10.5',
    produces: stored,
    consumes: stowBody,
    writes: true,
    handler: handleStoreInstances,
  },
  {
    method: 'GET',
    path: S,
    id: 'RetrieveStudy',
    section: '10.4',
    produces: bulk,
    handler: handleRetrieveStudy,
  },
  {
    method: 'GET',
    path: X,
    id: 'RetrieveSeries',
    section: '10.4',
    produces: bulk,
    handler: handleRetrieveSeries,
  },
  {
    method: 'GET',
    path: I,
    id: 'RetrieveInstance',
    section: '10.4',
    produces: instance,
    handler: handleRetrieveInstance,
  },
  {
    method: 'GET',
    path: `${S}/metadata`,
    id: 'RetrieveStudyMetadata',
    section: '10.4',
    produces: metadata,
    handler: (ctx, s) => handleRetrieveMetadata(ctx, s, 'study'),
  },
  {
    method: 'GET',
    path: `${X}/metadata`,
    id: 'RetrieveSeriesMetadata',
    section: '10.4',
    produces: metadata,
    handler: (ctx, s) => handleRetrieveMetadata(ctx, s, 'series'),
  },
  {
    method: 'GET',
    path: `${I}/metadata`,
    id: 'RetrieveInstanceMetadata',
    section: '10.4',
    produces: metadata,
    handler: (ctx, s) => handleRetrieveMetadata(ctx, s, 'instance'),
  },
  {
    method: 'GET',
    path: `${I}/frames/:frames`,
    id: 'RetrieveFrames',
    section: '10.4',
    produces: frames,
    handler: handleRetrieveFrames,
  },
  {
    method: 'GET',
    path: `${I}/bulk/*path`,
    id: 'RetrieveBulkdata',
    section: '10.4',
    produces: bulkData,
    handler: handleRetrieveBulkData,
  },
  {
    method: 'GET',
    path: `${S}/rendered`,
    id: 'RetrieveRenderedStudy',
    section: '10.4',
    produces: image,
    handler: handleRetrieveRenderedInstance,
  },
  {
    method: 'GET',
    path: `${X}/rendered`,
    id: 'RetrieveRenderedSeries',
    section: '10.4',
    produces: image,
    handler: handleRetrieveRenderedInstance,
  },
  {
    method: 'GET',
    path: `${I}/rendered`,
    id: 'RetrieveRenderedInstance',
    section: '10.4',
    produces: image,
    handler: handleRetrieveRenderedInstance,
  },
  {
    method: 'GET',
    path: `${I}/frames/:frames/rendered`,
    id: 'RetrieveRenderedFrames',
    section: '10.4',
    produces: image,
    handler: handleRetrieveRenderedInstance,
  },
  {
    method: 'GET',
    path: `${S}/thumbnail`,
    id: 'RetrieveStudyThumbnail',
    section: '10.4',
    produces: image,
    handler: handleRetrieveThumbnail,
  },
  {
    method: 'GET',
    path: `${X}/thumbnail`,
    id: 'RetrieveSeriesThumbnail',
    section: '10.4',
    produces: image,
    handler: handleRetrieveThumbnail,
  },
  {
    method: 'GET',
    path: `${I}/thumbnail`,
    id: 'RetrieveInstanceThumbnail',
    section: '10.4',
    produces: image,
    handler: handleRetrieveThumbnail,
  },
  {
    method: 'GET',
    path: `${I}/frames/:frames/thumbnail`,
    id: 'RetrieveFramesThumbnail',
    section: '10.4',
    produces: image,
    handler: handleRetrieveThumbnail,
  },
];

/** The routes a root offers: all of them on the scoped root, the reads on the read-only roots. */
export function routesOfRoot(readOnly: boolean): readonly DicomwebRoute[] {
  return readOnly ? DICOMWEB_ROUTES.filter((r) => !r.writes) : DICOMWEB_ROUTES;
}

/** The DICOMweb router mounted at each root: the route table, UID parameter checks and Retrieve Capabilities. */
export function dicomwebRouter(services: Services): Router {
  const router = checkUidParameters(new Router());
  // PS3.18 §8.9 Retrieve Capabilities: OPTIONS on the root.
  router.options('/', (ctx) => handleRetrieveCapabilities(ctx, services));
  for (const route of DICOMWEB_ROUTES) {
    const handle = (ctx: Context) => route.handler(ctx, services);
    if (route.method === 'GET') router.get(route.path, handle);
    else router.post(route.path, handle);
  }
  return router;
}
