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
import { mkdir, open, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { NotFoundError, PayloadTooLargeError } from '../errors';

/** The result of storing a blob. */
export interface StoredBlob {
  sha256: string;
  size: number;
}

/** A durable store of immutable blobs named by their SHA-256. */
export interface FileStore {
  /** Streams bytes in (hashing as they pass), durable before it resolves; refuses more than maxBytes. */
  put(body: Readable, maxBytes: number): Promise<StoredBlob>;
  /** Opens a stored blob; NotFoundError if the store does not hold it. */
  open(sha256: string): Promise<Readable>;
  has(sha256: string): Promise<boolean>;
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
      await rename(tmp, this.pathOf(sha256));
      await syncDir(dir);
      return { sha256, size };
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
  store = new FsFileStore(root);
  return store;
}

export function getFileStore(): FileStore {
  if (!store) throw new Error('file store not initialised');
  return store;
}

export function closeFileStore(): void {
  store = undefined;
}
