/**
 * multipart/form-data uploads of the records API, streamed with busboy: non-DICOM files straight into the
 * FileStore (a ZIP part is spooled to a temporary file and its entries stored one by one, yauzl needing random
 * access), and spreadsheets spooled to a temporary file for the import to read row by row.
 */
import Busboy from 'busboy';
import type { Context } from 'koa';
import { randomUUID } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import yauzl from 'yauzl';
import { BadRequestError, PayloadTooLargeError, UnsupportedMediaTypeError } from '../errors';
import type { FileStore, StoredBlob } from '../records/file-store';

/** One stored file of an upload. */
export interface UploadedFile extends StoredBlob {
  path: string;
  mediaType: string;
}

/** A file path as given by the client, made safe: forward slashes, no empty, `.` or `..` segments, ≤ 1024 chars. */
export function safeFilePath(name: string): string {
  const parts = name
    .replace(/\\/g, '/')
    .split('/')
    .filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.some((p) => p === '..' || [...p].some((c) => c.charCodeAt(0) < 0x20)))
    throw new BadRequestError('a file name is empty or leaves its folder');
  const path = posix.join(...parts);
  if (path.length > 1024) throw new BadRequestError('a file name is longer than 1024 characters');
  return path;
}

/** A busboy parser of the request's multipart body; a 400 when the body's media type has no boundary. */
function openBusboy(ctx: Context, opts: Omit<Busboy.BusboyConfig, 'headers'>): Busboy.Busboy {
  try {
    return Busboy({ headers: ctx.req.headers, ...opts });
  } catch {
    throw new BadRequestError('the multipart body has no boundary');
  }
}

function requireMultipart(ctx: Context): void {
  if (!ctx.is('multipart/form-data')) throw new UnsupportedMediaTypeError('expected multipart/form-data');
}

/**
 * Stores every file part (and, for parts named `zip` or sent as application/zip, every entry of the ZIP) in the
 * store. Field `folder` (before the files) prefixes the stored paths. When the upload fails (a bad part, a limit, the
 * client gone mid-body), every part still in flight is stopped and, once all have settled, `discard` is handed the
 * blobs this upload stored, so a failed upload leaves nothing behind.
 */
export async function receiveFiles(
  ctx: Context,
  store: FileStore,
  limits: { maxFileBytes: number; maxFiles: number },
  discard: (blobs: StoredBlob[]) => Promise<void>,
): Promise<UploadedFile[]> {
  requireMultipart(ctx);
  const tmp = await mkdtemp(join(tmpdir(), 'aperture-upload-'));
  const out: UploadedFile[] = [];
  const stored: StoredBlob[] = []; // every blob put, including those of a part that failed after its put
  const streams = new Set<Readable>(); // part streams not yet fully read
  let folder = '';
  const work: Array<Promise<void>> = [];
  let files = 0; // parts and ZIP entries seen so far
  const count = () => {
    if (++files > limits.maxFiles)
      throw new PayloadTooLargeError(`more than ${limits.maxFiles} files in one upload`);
  };
  try {
    await new Promise<void>((resolve, reject) => {
      let bb: Busboy.Busboy;
      try {
        bb = openBusboy(ctx, {
          preservePath: true, // folders of an upload are kept (and checked by safeFilePath)
          limits: { fileSize: limits.maxFileBytes, files: limits.maxFiles, fields: 20, fieldSize: 4096 },
        });
      } catch (err) {
        return reject(err);
      }
      let failed = false;
      const fail = (err: unknown) => {
        if (failed) return;
        failed = true;
        ctx.req.unpipe(bb);
        ctx.req.resume();
        // A part half-read would wait for bytes that never come: end it, so its put removes its temp file.
        for (const st of streams) st.destroy(new BadRequestError('the upload was stopped'));
        reject(err);
      };
      // The client gone mid-body: busboy never sees the end, so nothing else would settle this upload.
      const aborted = () => {
        if (!ctx.req.readableEnded) fail(new BadRequestError('the upload was cut off before its end'));
      };
      ctx.req.once('aborted', aborted);
      ctx.req.once('close', aborted);
      bb.on('field', (name, value) => {
        if (name === 'folder') folder = value;
      });
      bb.on('file', (field, stream, info) => {
        streams.add(stream);
        stream.once('end', () => streams.delete(stream));
        stream.on('error', () => undefined); // the error reaches the upload through the part's reader
        if (failed) stream.destroy();
        const task = (async () => {
          const isZip = field === 'zip' || info.mimeType === 'application/zip';
          const base = folder ? `${folder}/` : '';
          if (!isZip) {
            count();
            const path = safeFilePath(base + info.filename);
            const blob = await store.put(capped(stream, limits.maxFileBytes), limits.maxFileBytes);
            stored.push(blob);
            out.push({ ...blob, path, mediaType: info.mimeType || 'application/octet-stream' });
            return;
          }
          const zipPath = join(tmp, `${randomUUID()}.zip`);
          await pipeline(capped(stream, limits.maxFileBytes), createWriteStream(zipPath));
          for await (const e of zipEntries(zipPath)) {
            if (failed) return;
            count();
            const path = safeFilePath(base + e.name);
            const blob = await store.put(await e.open(), limits.maxFileBytes);
            stored.push(blob);
            out.push({ ...blob, path, mediaType: 'application/octet-stream' });
          }
        })();
        work.push(task);
        task.catch((err) => {
          stream.resume();
          fail(err);
        });
      });
      bb.on('filesLimit', () =>
        fail(new PayloadTooLargeError(`more than ${limits.maxFiles} files in one upload`)),
      );
      bb.on('error', () => fail(new BadRequestError('the multipart body is malformed')));
      bb.on('close', () => {
        Promise.all(work).then(() => resolve(), reject);
      });
      ctx.req.pipe(bb);
    });
    if (out.length === 0) throw new BadRequestError('the upload holds no file');
    return out;
  } catch (err) {
    // Parts still storing finish (or fail) first: a blob put after the discard would be left behind.
    await Promise.allSettled(work);
    await discard(stored).catch(() => undefined); // the upload's own error is the one to answer with
    throw err;
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Passes at most `max` bytes; busboy truncates silently at its fileSize limit, this makes it an error. */
function capped(stream: Readable & { truncated?: boolean }, max: number): Readable {
  let n = 0;
  const t = new Transform({
    transform(chunk: Buffer, _e, cb) {
      n += chunk.length;
      if (n > max) return cb(new PayloadTooLargeError(`a file is larger than ${max} bytes`));
      cb(null, chunk);
    },
    flush(cb) {
      if (stream.truncated) return cb(new PayloadTooLargeError(`a file is larger than ${max} bytes`));
      cb();
    },
  });
  stream.on('limit', () => t.destroy(new PayloadTooLargeError(`a file is larger than ${max} bytes`)));
  // pipe() forwards neither errors nor a destroy: a part stopped mid-way must fail what reads it, not leave it waiting.
  stream.once('error', (err) => t.destroy(err));
  stream.once('close', () => {
    if (!stream.readableEnded) t.destroy(new BadRequestError('the upload was stopped'));
  });
  // The part may be stopped before its reader (store.put's pipeline) is attached: without a listener of its own that
  // error would be an uncaught 'error' event and end the process. The reader still sees it (t is destroyed).
  t.on('error', () => undefined);
  return stream.pipe(t);
}

/** The file entries of a ZIP (folders skipped), each openable once, in order. */
async function* zipEntries(path: string): AsyncGenerator<{ name: string; open(): Promise<Readable> }> {
  const zip = await new Promise<yauzl.ZipFile>((res, rej) =>
    yauzl.open(
      path,
      { lazyEntries: true, autoClose: false, strictFileNames: false, validateEntrySizes: true },
      (err, z) => (err || !z ? rej(new BadRequestError('the ZIP file cannot be read')) : res(z)),
    ),
  );
  try {
    for (;;) {
      const entry = await new Promise<yauzl.Entry | undefined>((res, rej) => {
        zip.once('entry', res);
        zip.once('end', () => res(undefined));
        zip.once('error', () => rej(new BadRequestError('the ZIP file is damaged')));
        zip.readEntry();
      });
      zip.removeAllListeners('entry').removeAllListeners('end').removeAllListeners('error');
      if (!entry) return;
      if (entry.fileName.endsWith('/')) continue;
      yield {
        name: entry.fileName,
        open: () =>
          new Promise<Readable>((res, rej) =>
            zip.openReadStream(entry, (err, s) =>
              err || !s ? rej(new BadRequestError('a ZIP entry cannot be read')) : res(s),
            ),
          ),
      };
    }
  } finally {
    zip.close();
  }
}

/** The parts of an import: a JSON `mapping` field and one `file`, spooled to a temporary file. */
export async function receiveSheet(
  ctx: Context,
  maxBytes: number,
  opts: { mapping: boolean } = { mapping: true },
): Promise<{ mapping: unknown; path: string; filename: string; mimeType: string; cleanup(): Promise<void> }> {
  requireMultipart(ctx);
  const tmp = await mkdtemp(join(tmpdir(), 'aperture-import-'));
  const cleanup = () => rm(tmp, { recursive: true, force: true });
  let mapping: string | undefined;
  let file: { path: string; filename: string; mimeType: string } | undefined;
  try {
    await new Promise<void>((resolve, reject) => {
      let bb: Busboy.Busboy;
      try {
        bb = openBusboy(ctx, { limits: { files: 1, fileSize: maxBytes, fields: 10, fieldSize: 256 * 1024 } });
      } catch (err) {
        return reject(err);
      }
      let writing: Promise<void> = Promise.resolve();
      const fail = (err: unknown) => {
        ctx.req.unpipe(bb);
        ctx.req.resume();
        reject(err);
      };
      bb.on('field', (name, value) => {
        if (name === 'mapping') mapping = value;
      });
      bb.on('file', (_field, stream, info) => {
        const path = join(tmp, 'sheet');
        file = { path, filename: info.filename ?? '', mimeType: info.mimeType };
        writing = pipeline(capped(stream, maxBytes), createWriteStream(path));
        writing.catch(fail);
      });
      bb.on('error', () => fail(new BadRequestError('the multipart body is malformed')));
      bb.on('close', () => writing.then(() => resolve(), reject));
      ctx.req.pipe(bb);
    });
    if (!file) throw new BadRequestError('file: the sheet is missing');
    if (!opts.mapping) return { mapping: undefined, ...file, cleanup };
    if (mapping === undefined) throw new BadRequestError('mapping: missing');
    let parsed: unknown;
    try {
      parsed = JSON.parse(mapping);
    } catch {
      throw new BadRequestError('mapping: not valid JSON');
    }
    return { mapping: parsed, ...file, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}
