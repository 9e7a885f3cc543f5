import type { Config } from '../config';

/** One finished metadata answer: the bytes as sent (gzipped or not) and their Content-Type (multipart boundary). */
export interface CachedMetadata {
  body: Buffer;
  contentType: string;
}

/**
 * Finished WADO-RS metadata answers, least recently used first out, bounded in bytes.
 *
 * Under load, building a series' metadata (jsonb → text in PostgreSQL, BulkDataURI rewriting, gzip) costs far more
 * than sending it, and viewers ask for the same series again and again. The key holds everything the answer depends
 * on: the ETag inputs (root, media type, encoding, and the fingerprint of the visible instances, which changes
 * whenever one of them is added, removed or re-indexed) plus the caller's read scopes, so an answer is only ever
 * served again to a request that would have produced the very same bytes through the very same scopes.
 */
export class MetadataCache {
  private readonly entries = new Map<string, CachedMetadata>();
  private bytes = 0;

  constructor(
    readonly maxBytes: number,
    /** A single answer above this is sent but not kept, so one huge study cannot flush everything else. */
    readonly maxEntryBytes = Math.floor(maxBytes / 8),
  ) {}

  /** The answer kept under `key`, now most recently used. */
  get(key: string): CachedMetadata | undefined {
    const hit = this.entries.get(key);
    if (hit) {
      this.entries.delete(key);
      this.entries.set(key, hit);
    }
    return hit;
  }

  /** Keeps an answer, evicting the least recently used ones to stay within maxBytes. */
  set(key: string, value: CachedMetadata): void {
    const size = value.body.length + key.length;
    if (size > this.maxEntryBytes) return;
    const old = this.entries.get(key);
    if (old) {
      this.entries.delete(key);
      this.bytes -= old.body.length + key.length;
    }
    while (this.bytes + size > this.maxBytes && this.entries.size > 0) {
      const [k, v] = this.entries.entries().next().value as [string, CachedMetadata];
      this.entries.delete(k);
      this.bytes -= v.body.length + k.length;
    }
    this.entries.set(key, value);
    this.bytes += size;
  }

  /**
   * Collects an answer while it streams; `done` keeps it. Collection stops (and nothing is kept) once the answer
   * outgrows maxEntryBytes, so memory stays bounded whatever the study size.
   */
  collector(key: string, contentType: string): { push(chunk: Buffer): void; done(): void } {
    let chunks: Buffer[] | undefined = [];
    let size = 0;
    return {
      push: (chunk) => {
        if (!chunks) return;
        size += chunk.length;
        if (size > this.maxEntryBytes) chunks = undefined;
        else chunks.push(chunk);
      },
      done: () => {
        if (chunks) this.set(key, { body: Buffer.concat(chunks, size), contentType });
        chunks = undefined;
      },
    };
  }

  /** Bytes held (keys included). */
  get size(): number {
    return this.bytes;
  }
}

const caches = new WeakMap<object, MetadataCache | null>();

/** The metadata cache of a gateway (one per configuration), or undefined when METADATA_CACHE_BYTES is 0. */
export function metadataCacheFor(config: Pick<Config, 'METADATA_CACHE_BYTES'>): MetadataCache | undefined {
  let cache = caches.get(config);
  if (cache === undefined) {
    cache = config.METADATA_CACHE_BYTES > 0 ? new MetadataCache(config.METADATA_CACHE_BYTES) : null;
    caches.set(config, cache);
  }
  return cache ?? undefined;
}
