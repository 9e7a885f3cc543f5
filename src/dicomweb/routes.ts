import Router from '@koa/router';
import type { Services } from '../services';
import { registerQidoRoutes } from './qido-rs';
import { registerRenderedRoutes } from './rendered';
import { registerStowRoutes } from './stow-rs';
import { registerWadoRoutes } from './wado-rs';

/**
 * The DICOMweb routes, mounted at each root: `/projects/{project}/dicom-web` (scoped, STOW lives here),
 * `/dicom-web` (read-only union of the caller's projects) and `/share/{token}/dicom-web` (share links).
 * Handlers read `ctx.params.project` to know which root they serve.
 */
export function dicomwebRouter(services: Services): Router {
  const router = new Router();
  const registrars: Array<(r: Router, s: Services) => void> = [
    registerQidoRoutes,
    registerStowRoutes,
    registerWadoRoutes,
    registerRenderedRoutes,
  ];
  for (const register of registrars) register(router, services);
  return router;
}
