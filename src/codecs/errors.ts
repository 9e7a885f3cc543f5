/**
 * Codec failures. The decode threads cannot send AppError instances across (structured clone drops the class),
 * so they throw CodecInputError, whose `code` survives the trip and is turned back into an AppError by the pool.
 */

/** The frame can never be decoded: corrupt, truncated, or not what the data set declares. */
export class CodecInputError extends Error {
  readonly code = 'codec_input';
}

/** Marks a codec input failure in an error that may have crossed a thread boundary. */
export function isCodecInputError(err: unknown): boolean {
  return (
    err instanceof CodecInputError ||
    (typeof err === 'object' && err !== null && (err as { code?: unknown }).code === 'codec_input')
  );
}
