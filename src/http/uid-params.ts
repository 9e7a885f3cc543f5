import type Router from '@koa/router';
import { requireUid } from '../dicom/uid';

/** Path parameters that carry UIDs, with the attribute each names. */
export const UID_PATH_PARAMETERS: Readonly<Record<string, string>> = {
  study: 'Study Instance UID',
  series: 'Series Instance UID',
  instance: 'SOP Instance UID',
};

/**
 * Checks every UID path parameter of a router with the one UID rule before any handler runs: a malformed UID is a
 * 400 naming the parameter on every route alike (an unknown but well-formed one is a 404 later).
 */
export function checkUidParameters<R extends Router>(router: R): R {
  for (const [param, attribute] of Object.entries(UID_PATH_PARAMETERS)) {
    router.param(param, (value, _ctx, next) => {
      requireUid(value, `${attribute} (path parameter "${param}")`);
      return next();
    });
  }
  return router;
}
