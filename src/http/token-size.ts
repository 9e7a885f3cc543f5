/**
 * A bound on bearer token size (issue 8, defect 12c). Node accepts request heads up to HTTP_MAX_HEADER_BYTES so
 * that an oversized token reaches the gateway and gets a proper 401 with WWW-Authenticate, instead of a bare 431;
 * this refuses it before any decoding, so verification work never grows with what a caller sends.
 */
import type { Context } from 'koa';
import type { Principal } from '../auth/access';
import { UnauthorizedError } from '../errors';

/** Wraps `authenticate` so that an Authorization header longer than `maxBytes` is refused with 401. */
export function boundedTokens(
  authenticate: (ctx: Context) => Promise<Principal>,
  maxBytes: number,
): (ctx: Context) => Promise<Principal> {
  return (ctx) => {
    const header = ctx.get('authorization');
    if (Buffer.byteLength(header) > maxBytes) {
      const message = `the bearer token is longer than ${maxBytes} bytes`;
      return Promise.reject(
        new UnauthorizedError(
          message,
          `Bearer realm="aperture", error="invalid_token", error_description="${message}"`,
        ),
      );
    }
    return authenticate(ctx);
  };
}
