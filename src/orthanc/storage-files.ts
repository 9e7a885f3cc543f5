/**
 * Where Orthanc keeps an instance's file on disk, for `aperture verify` and backups: reading the file itself checks
 * the disk, whereas a read through Orthanc's REST API may be answered from its in-memory storage cache (1.10 keeps
 * up to 128 MB of recently read files). Knowledge of Orthanc's file layout stays in this folder.
 */
import { join } from 'node:path';
import type { PacsClient } from './client';

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
  const info = await pacs.getJson<AttachmentInfo>(
    `/instances/${encodeURIComponent(archiveId)}/attachments/dicom/info`,
  );
  if (
    !/^[0-9a-f-]{36}$/.test(info.Uuid) ||
    info.CompressedSize !== info.UncompressedSize ||
    info.CompressedMD5 !== info.UncompressedMD5
  )
    return null;
  // Orthanc's FilesystemStorage: <dir>/<first two hex digits>/<next two>/<uuid>.
  return join(storageDir, info.Uuid.slice(0, 2), info.Uuid.slice(2, 4), info.Uuid);
}
