/**
 * Where Orthanc keeps an instance's file on disk, for `aperture verify` and backups: reading the file itself checks
 * the disk, whereas a read through Orthanc's REST API may be answered from its in-memory storage cache (1.10 keeps
 * up to 128 MB of recently read files). Knowledge of Orthanc's file layout stays in this folder.
 */
import { type FileHandle, open } from 'node:fs/promises';
import { join } from 'node:path';
import type { ArchiveStream, PacsClient } from './client';

/** Orthanc's attachment record of an instance's DICOM file. */
interface AttachmentInfo {
  Uuid: string;
  CompressedSize: number;
  UncompressedSize: number;
  UncompressedMD5?: string;
  CompressedMD5?: string;
}

/** Path of the instance's DICOM file under Orthanc's StorageDirectory, or null when it is compressed there. */
export async function storedFilePath(
  pacs: PacsClient,
  storageDir: string,
  archiveId: string,
): Promise<string | null> {
  return fileOf(storageDir, await attachmentInfo(pacs, archiveId))?.path ?? null;
}

/** Orthanc's attachment record of the instance's DICOM file. */
function attachmentInfo(pacs: PacsClient, archiveId: string, signal?: AbortSignal): Promise<AttachmentInfo> {
  return pacs.getJson<AttachmentInfo>(
    `/instances/${encodeURIComponent(archiveId)}/attachments/dicom/info`,
    signal,
  );
}

/** Where an instance's DICOM file is and how long Orthanc recorded it, or null: compressed on disk, read by REST. */
type Located = { path: string; size: number } | null;

function fileOf(storageDir: string, info: AttachmentInfo): Located {
  if (
    !/^[0-9a-f-]{36}$/.test(info.Uuid) ||
    info.CompressedSize !== info.UncompressedSize ||
    info.CompressedMD5 !== info.UncompressedMD5
  )
    return null;
  // Orthanc's FilesystemStorage: <dir>/<first two hex digits>/<next two>/<uuid>.
  return {
    path: join(storageDir, info.Uuid.slice(0, 2), info.Uuid.slice(2, 4), info.Uuid),
    size: info.UncompressedSize,
  };
}

/** Files up to this size are read in one call. */
const SINGLE_READ_BYTES = 1 << 20;

/** Whole stored files this process served from disk, and those it read through REST instead (since start). */
export const storedFileReads = { fromDisk: 0, throughRest: 0 };

/**
 * Reads instances' DICOM files straight from Orthanc's StorageDirectory (ARCHIVE_FILE_READS), where the gateway sees
 * that folder (same machine, or its volume mounted read-only): a whole-instance retrieval then costs the gateway a
 * file read instead of an HTTP exchange with Orthanc, which is most of a small object's time to first byte and half
 * the CPU of serving it. Orthanc still decides what exists: a file is located through its attachment record (asked
 * once per instance and remembered, at most `maxEntries`), opened, and served only when its size is the one Orthanc
 * recorded. Any doubt (compressed storage, a file gone because the instance was deleted or re-stored, a size that
 * differs, a folder that is not Orthanc's) answers null and the caller reads through REST as before. Orthanc never
 * rewrites a stored file in place (a re-stored instance gets a new UUID), so a file that opens is the object.
 */
export class StoredFileReader {
  private readonly located = new Map<string, Located>();

  constructor(
    private readonly pacs: PacsClient,
    private readonly storageDir: string,
    private readonly maxEntries = 50_000,
  ) {}

  /** The file as a stream of its bytes, or null when it must be read through REST. */
  async open(archiveId: string, signal?: AbortSignal): Promise<ArchiveStream | null> {
    const file = await this.tryOpen(archiveId, signal);
    if (file) storedFileReads.fromDisk++;
    else storedFileReads.throughRest++;
    return file;
  }

  private async tryOpen(archiveId: string, signal?: AbortSignal): Promise<ArchiveStream | null> {
    const where = await this.locate(archiveId, signal);
    if (!where) return null;
    let handle: FileHandle;
    try {
      handle = await open(where.path, 'r');
    } catch {
      this.located.delete(archiveId); // deleted or re-stored since it was located
      return null;
    }
    try {
      const { size } = await handle.stat();
      if (size !== where.size || size === 0) {
        this.located.delete(archiveId);
        await handle.close();
        return null;
      }
      signal?.throwIfAborted();
      // One read for objects up to 1 MiB (most CT and MR images); larger ones in 64 KiB reads as from a socket, so that
      // many concurrent large downloads each hold little (1 MiB reads raised the RSS of 16 downloads of 10.5 MB by
      // 118 MB against 29 MB).
      const body = handle.createReadStream({
        start: 0,
        end: size - 1,
        highWaterMark: size <= SINGLE_READ_BYTES ? size : 64 * 1024,
      });
      if (signal) {
        const abort = () => body.destroy(signal.reason as Error);
        signal.addEventListener('abort', abort, { once: true });
        body.once('close', () => signal.removeEventListener('abort', abort));
      }
      return { body, contentType: 'application/dicom', contentLength: size };
    } catch (err) {
      await handle.close().catch(() => undefined);
      throw err;
    }
  }

  /** Forgets where an instance's file was (the instance was deleted through the gateway). */
  forget(archiveId: string): void {
    this.located.delete(archiveId);
  }

  private async locate(archiveId: string, signal?: AbortSignal): Promise<Located> {
    const known = this.located.get(archiveId);
    if (known !== undefined) {
      // Least recently used first out: a hit moves to the end of the Map's order.
      this.located.delete(archiveId);
      this.located.set(archiveId, known);
      return known;
    }
    const where = fileOf(this.storageDir, await attachmentInfo(this.pacs, archiveId, signal));
    this.located.set(archiveId, where);
    if (this.located.size > this.maxEntries) this.located.delete(this.located.keys().next().value as string);
    return where;
  }
}
