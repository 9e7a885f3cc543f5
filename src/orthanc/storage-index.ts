/**
 * Orthanc's own index of its storage files (issue 16, storage sync): the `AttachedFiles` table Orthanc's PostgreSQL
 * plugin keeps in database `orthanc` of the site's cluster. At a standby site this table arrives by streaming
 * replication, so it names exactly the files that site's Orthanc will need once promoted; the sync copies those.
 * The SQL lives in src/index-db/orthanc-storage.ts (it reads Orthanc's schema); what its rows mean and where the
 * files are on disk stays in this folder.
 */
import { join } from 'node:path';
import type { Queryable } from '../index-db/pool';
import {
  lastOrthancChange,
  listOrthancAttachments,
  listOrthancAttachmentsChangedSince,
  orthancAttachmentsNamed,
  type OrthancAttachmentRow,
} from '../index-db/orthanc-storage';

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

function toAttachment(x: OrthancAttachmentRow): StoredAttachment {
  return {
    uuid: x.uuid,
    resourceId: x.public_id,
    level: LEVELS[x.resource_type] ?? 'instances',
    attachment: ATTACHMENTS[x.file_type] ?? String(x.file_type),
    size: Number(x.size),
    md5: x.md5,
  };
}

/** Orthanc's stored files with a UUID after `after`, in UUID order, at most `limit` (keyset paging). */
export async function listStoredAttachments(
  db: Queryable,
  after: string,
  limit: number,
): Promise<StoredAttachment[]> {
  return (await listOrthancAttachments(db, after, limit)).map(toAttachment);
}

/** The newest entry of Orthanc's change log: where an incremental pass starts after a full one. */
export const lastChangeSeq = lastOrthancChange;

/** Files of the resources Orthanc's change log names after `afterSeq` (at most `limit` log entries). */
export async function listAttachmentsChangedSince(
  db: Queryable,
  afterSeq: number,
  limit: number,
): Promise<{ attachments: StoredAttachment[]; lastSeq: number; changes: number }> {
  const r = await listOrthancAttachmentsChangedSince(db, afterSeq, limit);
  return { attachments: r.rows.map(toAttachment), lastSeq: r.lastSeq, changes: r.changes };
}

/** Which of `uuids` the index still names. */
export const attachmentsStillNamed = orthancAttachmentsNamed;

/** Where Orthanc's FilesystemStorage keeps a file: <dir>/<first two hex digits>/<next two>/<uuid>. */
export function storagePathOf(storageDir: string, uuid: string): string {
  if (!isStorageUuid(uuid)) throw new Error(`not an Orthanc storage UUID: ${uuid}`);
  return join(storageDir, uuid.slice(0, 2), uuid.slice(2, 4), uuid);
}

/** Whether a name is one Orthanc's FilesystemStorage gives a file (a UUID; temporary and other names are not). */
export function isStorageUuid(name: string): boolean {
  return /^[0-9a-f-]{36}$/.test(name);
}

/** REST path of a file's bytes exactly as stored (no decompression): what a copy must be identical to. */
export function storedBytesPath(a: StoredAttachment): string {
  return `/${a.level}/${encodeURIComponent(a.resourceId)}/attachments/${encodeURIComponent(a.attachment)}/compressed-data`;
}
