/**
 * Where the bytes of non-DICOM files live: behind a small interface in content terms (put a stream, get it back by
 * its SHA-256), so PostgreSQL holds only metadata and another store can replace the filesystem one.
 *
 * Why not the archive: Orthanc stores DICOM (it would wrap a PDF or a CSV as an Encapsulated Document, which a
 * simulation output or a ZIP of calibration data is not). Why content-addressed: identical uploads share bytes,
 * versions are new rows over immutable blobs, and a checksum mismatch is detectable on read.
 *
 * An object store implementation (S3, MinIO) needs: a streaming multipart upload to a temporary key while hashing,
 * then a server-side copy to `sha256/<hex>` (or a conditional put with If-None-Match: *), `get` as a ranged GET,
 * and the same "verify size and hash before the row is written" contract; durability is then the store's own.
 */
import { createHash, randomUUID } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import type { Pool, PoolClient } from 'pg';
import { NotFoundError, PayloadTooLargeError, ServiceBusyError } from '../errors';
import { blobReferenced, lockBlob } from '../index-db/records';
import { withTransaction } from '../index-db/pool';

/** The result of storing a blob. */
export interface StoredBlob {
  sha256: string;
  size: number;
  /** Whether this put made the blob (the store did not hold it before): only such blobs are for a failed upload to discard. */
  created: boolean;
}

/** A durable store of immutable blobs named by their SHA-256. */
export interface FileStore {
  /** Streams bytes in (hashing as they pass), durable before it resolves; refuses more than maxBytes. */
  put(body: Readable, maxBytes: number): Promise<StoredBlob>;
  /** Opens a stored blob; NotFoundError if the store does not hold it. */
  open(sha256: string): Promise<Readable>;
  has(sha256: string): Promise<boolean>;
  /** Size and last write of a blob (a put of bytes already held writes them again); undefined when absent. */
  statBlob(sha256: string): Promise<{ size: number; mtime: Date } | undefined>;
  /** Removes a blob (no error when it is gone). Callers hold the blob's lock and have checked no row names it. */
  remove(sha256: string): Promise<void>;
}

const SHA = /^[0-9a-f]{64}$/;

/** FileStore on a local folder: `<root>/<aa>/<sha256>`, written to a temp file, fsync'd, renamed, folder fsync'd. */
export class FsFileStore implements FileStore {
  constructor(private readonly root: string) {}

  private pathOf(sha: string): string {
    return join(this.root, sha.slice(0, 2), sha);
  }

  async put(body: Readable, maxBytes: number): Promise<StoredBlob> {
    const tmpDir = join(this.root, 'tmp');
    await mkdir(tmpDir, { recursive: true });
    const tmp = join(tmpDir, randomUUID());
    const hash = createHash('sha256');
    let size = 0;
    const meter = new Transform({
      transform(chunk: Buffer, _e, cb) {
        size += chunk.length;
        if (size > maxBytes) return cb(new PayloadTooLargeError(`a file is larger than ${maxBytes} bytes`));
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, meter, createWriteStream(tmp, { flags: 'wx' }));
      // The data reaches the disk before the name does, and the name before the caller records the row.
      const fh = await open(tmp, 'r+');
      try {
        await fh.sync();
      } finally {
        await fh.close();
      }
      const sha256 = hash.digest('hex');
      const dir = join(this.root, sha256.slice(0, 2));
      await mkdir(dir, { recursive: true });
      const created = !(await this.has(sha256));
      await rename(tmp, this.pathOf(sha256));
      await syncDir(dir);
      return { sha256, size, created };
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
  }

  async has(sha256: string): Promise<boolean> {
    if (!SHA.test(sha256)) return false;
    return stat(this.pathOf(sha256)).then(
      () => true,
      () => false,
    );
  }

  async statBlob(sha256: string): Promise<{ size: number; mtime: Date } | undefined> {
    if (!SHA.test(sha256)) return undefined;
    return stat(this.pathOf(sha256)).then(
      (st) => ({ size: st.size, mtime: st.mtime }),
      () => undefined,
    );
  }

  async remove(sha256: string): Promise<void> {
    if (!SHA.test(sha256)) return;
    await rm(this.pathOf(sha256), { force: true });
    await syncDir(join(this.root, sha256.slice(0, 2))).catch(() => undefined);
  }

  /** Removes temporary files older than `olderThanMs` (a put cut off by a crash leaves its temp file behind). */
  async sweepTemp(olderThanMs: number): Promise<number> {
    const dir = join(this.root, 'tmp');
    const names = await readdir(dir).catch(() => [] as string[]);
    let n = 0;
    for (const name of names) {
      const st = await stat(join(dir, name)).catch(() => undefined);
      if (st && Date.now() - st.mtimeMs > olderThanMs) {
        await rm(join(dir, name), { force: true });
        n++;
      }
    }
    return n;
  }

  async open(sha256: string): Promise<Readable> {
    if (!(await this.has(sha256))) throw new NotFoundError('file content not found');
    return createReadStream(this.pathOf(sha256));
  }
}

async function syncDir(dir: string): Promise<void> {
  const fh = await open(dir, 'r');
  try {
    await fh.sync();
  } finally {
    await fh.close();
  }
}

let store: FileStore | undefined;

/** Opens the configured file store (a folder, created when missing). */
export async function initFileStore(root: string): Promise<FileStore> {
  await mkdir(root, { recursive: true });
  const fs = new FsFileStore(root);
  // Another process may be writing right now: only temp files an hour old are leftovers of a crash.
  await fs.sweepTemp(3600_000);
  store = fs;
  return store;
}

/**
 * Discards the blobs a failed upload created, unless a row names them by now (the same bytes uploaded by someone
 * else meanwhile). Each blob's check and removal run under the same lock as lockBlobs, so a concurrent upload either
 * sees its rows first (the blob stays) or finds the blob gone before writing a row (and is refused with 503).
 */
export async function discardBlobs(db: Pool, store: FileStore, blobs: StoredBlob[]): Promise<void> {
  for (const sha of new Set(blobs.filter((b) => b.created).map((b) => b.sha256)))
    await withTransaction(db, async (client) => {
      await lockBlob(client, sha);
      if (!(await blobReferenced(client, sha))) await store.remove(sha);
    });
}

/**
 * Locks the blobs an upload is about to name in rows (in the row transaction) and checks each is still stored; a 503
 * when a concurrent failed upload discarded one, so the client sends it again.
 */
export async function lockBlobs(client: PoolClient, store: FileStore, shas: string[]): Promise<void> {
  for (const sha of [...new Set(shas)].sort()) {
    await lockBlob(client, sha);
    if (!(await store.has(sha)))
      throw new ServiceBusyError('a file of the upload was discarded meanwhile; send it again', 1);
  }
}

export function getFileStore(): FileStore {
  if (!store) throw new Error('file store not initialised');
  return store;
}

export function closeFileStore(): void {
  store = undefined;
}
