/**
 * SQL on Orthanc's own index (issue 16, storage sync). This reads **Orthanc's schema**, not Aperture's: the tables
 * `AttachedFiles`, `Resources` and `Changes` that Orthanc 1.10's PostgreSQL plugin (4.0) keeps in database `orthanc`
 * of the site's cluster. Read-only queries only (at a standby site they run on a hot standby). What the rows mean
 * (resource levels, attachment names, where a file lives on disk) is known in src/orthanc/storage-index.ts.
 */
import type { Queryable } from './pool';

/** One row of AttachedFiles with the public id and level of its resource, as the plugin stores them. */
export interface OrthancAttachmentRow {
  uuid: string;
  public_id: string;
  resource_type: number;
  file_type: number;
  size: string; // bigint
  md5: string | null;
}

const ATTACHMENT_COLUMNS = `a.uuid, r.publicid AS public_id, r.resourcetype AS resource_type, a.filetype AS file_type,
            a.compressedsize::text AS size, nullif(a.compressedhash, '') AS md5`;

/** Orthanc's stored files with a UUID after `after`, in UUID order, at most `limit` (keyset paging). */
export async function listOrthancAttachments(
  db: Queryable,
  after: string,
  limit: number,
): Promise<OrthancAttachmentRow[]> {
  const r = await db.query<OrthancAttachmentRow>(
    `SELECT ${ATTACHMENT_COLUMNS}
       FROM attachedfiles a JOIN resources r ON r.internalid = a.id
      WHERE a.uuid > $1 ORDER BY a.uuid LIMIT $2`,
    [after, limit],
  );
  return r.rows;
}

/** The newest sequence number of Orthanc's change log (0 when empty). */
export async function lastOrthancChange(db: Queryable): Promise<number> {
  const r = await db.query<{ n: string }>('SELECT coalesce(max(seq), 0)::text AS n FROM changes');
  return Number(r.rows[0].n);
}

/**
 * The files of the resources named by Orthanc's change log entries after `afterSeq`, at most `limit` entries
 * (primary-key range on `changes`: the cost follows the number of new changes, not the archive). `lastSeq` is the
 * newest entry read (continue from it), or `afterSeq` when there was none.
 */
export async function listOrthancAttachmentsChangedSince(
  db: Queryable,
  afterSeq: number,
  limit: number,
): Promise<{ rows: OrthancAttachmentRow[]; lastSeq: number; changes: number }> {
  const c = await db.query<{ seq: string; internalid: string }>(
    'SELECT seq::text AS seq, internalid::text AS internalid FROM changes WHERE seq > $1 ORDER BY seq LIMIT $2',
    [afterSeq, limit],
  );
  if (c.rows.length === 0) return { rows: [], lastSeq: afterSeq, changes: 0 };
  const ids = [...new Set(c.rows.map((x) => x.internalid))];
  const r = await db.query<OrthancAttachmentRow>(
    `SELECT ${ATTACHMENT_COLUMNS}
       FROM attachedfiles a JOIN resources r ON r.internalid = a.id
      WHERE a.id = ANY($1::bigint[]) ORDER BY a.uuid`,
    [ids],
  );
  return { rows: r.rows, lastSeq: Number(c.rows[c.rows.length - 1].seq), changes: c.rows.length };
}

/** Which of `uuids` Orthanc's index still names (a file it names is never pruned). */
export async function orthancAttachmentsNamed(db: Queryable, uuids: readonly string[]): Promise<Set<string>> {
  if (uuids.length === 0) return new Set();
  const r = await db.query<{ uuid: string }>('SELECT uuid FROM attachedfiles WHERE uuid = ANY($1::text[])', [
    [...uuids],
  ]);
  return new Set(r.rows.map((x) => x.uuid));
}
