/**
 * `aperture verify`: every instance the index lists is read back from the archive and its bytes checked against the
 * MD5 and size the index recorded at ingest; the archive's instance count is compared with the index's. Differences
 * are reported by SOP Instance UID (a UID, never PHI), nothing is changed.
 */
import type { Archive } from '../orthanc/archive';
import type { Queryable } from '../index-db/pool';
import { countIndexedInstances, listInstancesToVerify, type VerifyRow } from '../index-db/sites';
import { dataSetMd5 } from '../ingest/identity';
import { createReadStream } from 'node:fs';
import { access } from 'node:fs/promises';
import type { PacsClient } from '../orthanc/client';
import { storedFilePath } from '../orthanc/storage-files';
import { md5OfStream } from './backup';

/** Read the files from Orthanc's storage folder itself (checks the disk, not Orthanc's storage cache). */
export interface StorageFiles {
  pacs: PacsClient;
  storageDir: string;
}

/** One instance whose archived copy does not match the index. */
export interface VerifyDifference {
  sopInstanceUid: string;
  problem: 'missing' | 'size' | 'md5' | 'unreadable';
  detail: string;
}

/** What a verify found. */
export interface VerifyReport {
  indexed: number;
  archived: number;
  checked: number;
  ok: number;
  /** Index rows with no checksum to compare (indexed before checksums were kept). */
  unchecked: number;
  differences: VerifyDifference[];
  seconds: number;
}

async function checkOne(
  archive: Archive,
  row: VerifyRow,
  maxBytes: number,
  files?: StorageFiles,
): Promise<VerifyDifference | 'ok' | 'unchecked'> {
  const uid = row.sop_instance_uid;
  if (!(await archive.hasInstance(row.orthanc_id))) {
    return { sopInstanceUid: uid, problem: 'missing', detail: 'the archive does not hold it' };
  }
  if (row.md5) {
    let got: { md5: string; bytes: number };
    try {
      const path = files ? await storedFilePath(files.pacs, files.storageDir, row.orthanc_id) : null;
      if (path) {
        const there = await access(path).then(
          () => true,
          () => false,
        );
        if (!there)
          return {
            sopInstanceUid: uid,
            problem: 'missing',
            detail: 'indexed by the archive, its file is gone from disk',
          };
        got = await md5OfStream(createReadStream(path));
      } else {
        got = await md5OfStream((await archive.openInstance(row.orthanc_id)).body);
      }
    } catch (err) {
      return {
        sopInstanceUid: uid,
        problem: 'unreadable',
        detail: err instanceof Error ? err.message : String(err),
      };
    }
    if (got.bytes !== Number(row.file_size)) {
      return {
        sopInstanceUid: uid,
        problem: 'size',
        detail: `index ${row.file_size} bytes, archive ${got.bytes}`,
      };
    }
    if (got.md5 !== row.md5)
      return { sopInstanceUid: uid, problem: 'md5', detail: `index ${row.md5}, archive ${got.md5}` };
    return 'ok';
  }
  if (row.dataset_md5) {
    const bytes = await archive.readInstanceFile(row.orthanc_id, maxBytes);
    const got = dataSetMd5(bytes);
    if (got !== row.dataset_md5) {
      return {
        sopInstanceUid: uid,
        problem: 'md5',
        detail: `data set: index ${row.dataset_md5}, archive ${got}`,
      };
    }
    return 'ok';
  }
  return 'unchecked';
}

/** Checks every indexed instance against the archive, `concurrency` at a time. */
export async function verifyArchive(
  db: Queryable,
  archive: Archive,
  opts: {
    concurrency?: number;
    pageSize?: number;
    maxBytes?: number;
    files?: StorageFiles;
    onProgress?: (done: number, total: number) => void;
  } = {},
): Promise<VerifyReport> {
  const started = Date.now();
  const [indexed, archived] = await Promise.all([countIndexedInstances(db), archive.countInstances()]);
  const report: VerifyReport = {
    indexed,
    archived,
    checked: 0,
    ok: 0,
    unchecked: 0,
    differences: [],
    seconds: 0,
  };
  const concurrency = opts.concurrency ?? 4;
  for (let after = ''; ;) {
    const rows = await listInstancesToVerify(db, after, opts.pageSize ?? 500);
    if (!rows.length) break;
    after = rows[rows.length - 1].sop_instance_uid;
    let next = 0;
    await Promise.all(
      Array.from({ length: Math.min(concurrency, rows.length) }, async () => {
        while (next < rows.length) {
          const row = rows[next++];
          const out = await checkOne(archive, row, opts.maxBytes ?? 2 * 1024 ** 3, opts.files);
          report.checked++;
          if (out === 'ok') report.ok++;
          else if (out === 'unchecked') report.unchecked++;
          else report.differences.push(out);
          opts.onProgress?.(report.checked, indexed);
        }
      }),
    );
  }
  report.differences.sort((a, b) => (a.sopInstanceUid < b.sopInstanceUid ? -1 : 1));
  report.seconds = (Date.now() - started) / 1000;
  return report;
}
