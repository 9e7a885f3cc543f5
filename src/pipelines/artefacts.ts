/**
 * The artefact store of pipeline runs: the non-DICOM outputs (NIfTI, CSV, reports) and the captured logs.
 * Behind this small interface so that it can be pointed at the research records' FileStore once that exists
 * (another slice builds it); today it is a folder on the worker's and gateway's shared file system.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Transform, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';

/** Where a run's artefacts live, by run id and artefact name. */
export interface ArtefactStore {
  /** Stores a stream under the name (replacing it); returns its size and SHA-256. */
  put(runId: string, name: string, body: Readable): Promise<{ bytes: number; sha256: string }>;
  /** Opens a stored artefact, or undefined when it is not there. */
  open(runId: string, name: string): Promise<Readable | undefined>;
  /** Removes every artefact of a run. */
  removeRun(runId: string): Promise<void>;
}

const RUN_ID = /^[0-9a-f-]{36}$/;
/** Artefact names are flat: a relative output path with `/` turned into `__` by the runner. */
const NAME = /^[A-Za-z0-9._-][A-Za-z0-9._ -]{0,200}$/;

function checked(runId: string, name?: string): void {
  if (!RUN_ID.test(runId)) throw new Error('invalid run id');
  if (name !== undefined && (!NAME.test(name) || name.includes('..')))
    throw new Error('invalid artefact name');
}

/** The artefact store on a local folder: `<root>/<runId>/<name>`, written to a temporary name and renamed. */
export class FsArtefactStore implements ArtefactStore {
  constructor(private readonly root: string) {}

  async put(runId: string, name: string, body: Readable): Promise<{ bytes: number; sha256: string }> {
    checked(runId, name);
    const dir = join(this.root, runId);
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tmp = join(dir, `.${randomBytes(8).toString('hex')}.part`);
    const hash = createHash('sha256');
    let bytes = 0;
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        bytes += chunk.length;
        hash.update(chunk);
        cb(null, chunk);
      },
    });
    try {
      await pipeline(body, counter, createWriteStream(tmp, { mode: 0o600 }));
      await rename(tmp, join(dir, name));
    } catch (err) {
      await rm(tmp, { force: true });
      throw err;
    }
    return { bytes, sha256: hash.digest('hex') };
  }

  async open(runId: string, name: string): Promise<Readable | undefined> {
    checked(runId, name);
    const path = join(this.root, runId, name);
    try {
      if (!(await stat(path)).isFile()) return undefined;
    } catch {
      return undefined;
    }
    return createReadStream(path);
  }

  async removeRun(runId: string): Promise<void> {
    checked(runId);
    await rm(join(this.root, runId), { recursive: true, force: true });
  }
}
