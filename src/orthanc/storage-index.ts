/**
 * Orthanc's own index of its storage files (issue 16, storage sync): the `AttachedFiles` table Orthanc's PostgreSQL
 * plugin keeps in database `orthanc` of the site's cluster. At a standby site this table arrives by streaming
 * replication, so it names exactly the files that site's Orthanc will need once promoted; the sync copies those.
 * Knowledge of Orthanc's schema and file layout stays in this folder.
 */
import { join } from 'node:path';
import type { Queryable } from '../index-db/pool';

/** One stored file as Orthanc's index records it. */
export interface StoredAttachment {
  /** The file's name in StorageDirectory (Orthanc names files by a UUID of their own). */
  uuid: string;
  /** Public id of the resource the file is attached to, and its REST level. */
  resourceId: string;
  level: 'patients' | 'studies' | 'series' | 'instances';
  /** Attachment name in Orthanc's REST API (dicom, dicom-until-pixel-data, or a user-defined number). */
  attachment: string;
  /** Bytes on disk and their MD5 (null when Orthanc was told not to keep MD5s). */
  size: number;
  md5: string | null;
}

// The plugin stores OrthancPluginResourceType: 0 patient, 1 study, 2 series, 3 instance.
const LEVELS = ['patients', 'studies', 'series', 'instances'] as const;
// Orthanc's FileContentType: 1 the DICOM file, 3 the file up to the pixel data (1.9+); 1024+ user-defined.
const ATTACHMENTS: Record<number, string> = { 1: 'dicom', 3: 'dicom-until-pixel-data' };

/** Orthanc's stored files with a UUID after `after`, in UUID order, at most `limit` (keyset paging). */
export async function listStoredAttachments(
  db: Queryable,
  after: string,
  limit: number,
): Promise<StoredAttachment[]> {
  const r = await db.query<{
    uuid: string;
    public_id: string;
    resource_type: number;
    file_type: number;
    size: string;
    md5: string | null;
  }>(
    `SELECT a.uuid, r.publicid AS public_id, r.resourcetype AS resource_type, a.filetype AS file_type,
            a.compressedsize::text AS size, nullif(a.compressedhash, '') AS md5
       FROM attachedfiles a JOIN resources r ON r.internalid = a.id
      WHERE a.uuid > $1 ORDER BY a.uuid LIMIT $2`,
    [after, limit],
  );
  return r.rows.map((x) => ({
    uuid: x.uuid,
    resourceId: x.public_id,
    level: LEVELS[x.resource_type] ?? 'instances',
    attachment: ATTACHMENTS[x.file_type] ?? String(x.file_type),
    size: Number(x.size),
    md5: x.md5,
  }));
}

/** Where Orthanc's FilesystemStorage keeps a file: <dir>/<first two hex digits>/<next two>/<uuid>. */
export function storagePathOf(storageDir: string, uuid: string): string {
  if (!/^[0-9a-f-]{36}$/.test(uuid)) throw new Error(`not an Orthanc storage UUID: ${uuid}`);
  return join(storageDir, uuid.slice(0, 2), uuid.slice(2, 4), uuid);
}

/** REST path of a file's bytes exactly as stored (no decompression): what a copy must be identical to. */
export function storedBytesPath(a: StoredAttachment): string {
  return `/${a.level}/${encodeURIComponent(a.resourceId)}/attachments/${encodeURIComponent(a.attachment)}/compressed-data`;
}
