/** Streaming parts out of the archive in order, a few opened ahead, without holding their bytes. */
import type { Readable } from 'node:stream';

/** One part of a multipart answer (structurally the multipart codec's OutgoingPart). */
export interface RetrievedPart {
  contentType: string;
  headers?: Record<string, string>;
  body: Buffer | Readable | NodeJS.ReadableStream;
}

/**
 * How many archive requests run ahead of the part being sent. Each archive request costs a round trip (and a
 * scheduling slot on a busy host): opening the next few while one streams keeps the pipe full over a series of
 * small objects. Bodies opened ahead are held by backpressure (socket buffers), not read into memory.
 */
export const OPEN_AHEAD = 3;

function destroyPart(part: RetrievedPart | undefined): void {
  const body = part?.body as (NodeJS.ReadableStream & { destroy?: () => void }) | undefined;
  if (body && !Buffer.isBuffer(body)) body.destroy?.();
}

/**
 * Opens parts ahead of the one being sent (see OPEN_AHEAD), yielding them in order. Anything opened but not sent
 * (client gone, failure) is destroyed.
 */
export async function* openAhead<T>(
  items: readonly T[],
  open: (item: T) => Promise<RetrievedPart>,
  depth = OPEN_AHEAD,
): AsyncGenerator<RetrievedPart> {
  const pending: Array<Promise<RetrievedPart>> = [];
  let next = 0;
  const fill = () => {
    while (next < items.length && pending.length <= depth) {
      const p = open(items[next++]);
      p.catch(() => undefined); // rethrown when its turn comes, or dropped in finally
      pending.push(p);
    }
  };
  try {
    fill();
    while (pending.length) {
      const part = await pending.shift()!;
      fill();
      yield part;
    }
  } finally {
    for (const p of pending) void p.then(destroyPart, () => undefined);
  }
}

/**
 * Awaits the first item of a generator before anything is sent, so that failures opening the first part (archive
 * down, object missing) still answer with a status, then yields it and the rest.
 */
export async function primed<T>(
  gen: AsyncGenerator<T, void, undefined>,
): Promise<AsyncGenerator<T, void, undefined>> {
  const first = await gen.next();
  async function* rest(): AsyncGenerator<T, void, undefined> {
    try {
      if (first.done) return;
      yield first.value;
      yield* gen;
    } finally {
      await gen.return(undefined);
    }
  }
  return rest();
}
