import type { Context } from 'koa';
import { BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError } from '../errors';

/** Reads a small JSON request body (API calls, not DICOM), capped at `limit` bytes. */
export async function readJsonBody(ctx: Context, limit = 1024 * 1024): Promise<unknown> {
  if (!ctx.is('application/json', '+json'))
    throw new UnsupportedMediaTypeError('expected Content-Type: application/json');
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of ctx.req) {
    size += (chunk as Buffer).length;
    if (size > limit) throw new PayloadTooLargeError(`JSON body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch {
    throw new BadRequestError('request body is not valid JSON');
  }
}
