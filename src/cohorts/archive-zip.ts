/**
 * The download of a cohort: a ZIP of its stored outputs, one folder per pseudonymised patient / study / series.
 * Deterministic so that a download can resume with Range and two downloads are identical: entries in a fixed
 * order (pseudonym, study, series, instance UIDs), a fixed timestamp, no compression (STORE: DICOM pixel data is
 * mostly compressed already, and STORE makes the archive's size known before the first byte is sent).
 */
import { PassThrough, Readable, Transform, type TransformCallback } from 'node:stream';
import type { Pool } from 'pg';
import { ZipFile } from 'yazl';
import { type OutputInstance, streamOutputs } from '../index-db/cohorts';
import type { Archive } from '../orthanc/archive';

/** 1980-01-01, the first date a ZIP can hold: nothing about when the cohort ran is in the download. */
const FIXED_MTIME = new Date(1980, 0, 1, 0, 0, 0);

/** A ZIP ready to stream: its total size and a way to open it from a byte offset. */
export interface CohortZip {
  size: number;
  entries: number;
  /** Streams bytes [start, end] (inclusive) of the ZIP. */
  open(start: number, end: number): Readable;
}

/** Entry path of an output instance. */
export function entryPath(
  o: Pick<OutputInstance, 'pseudonym' | 'output_study_uid' | 'output_series_uid' | 'output_sop_uid'>,
): string {
  return `${o.pseudonym}/${o.output_study_uid}/${o.output_series_uid}/${o.output_sop_uid}.dcm`;
}

/**
 * Plans the ZIP of a cohort. The entry list (paths and sizes, not bytes) is held to compute the size up front;
 * each instance's bytes are fetched from the archive only when the ZIP reaches it.
 */
export async function planCohortZip(
  db: Pool,
  archive: Archive,
  cohortId: string,
  extra: ReadonlyArray<{ path: string; body: Buffer }> = [],
): Promise<CohortZip> {
  const entries: Array<{ path: string; orthancId: string; size: number }> = [];
  for await (const o of streamOutputs(db, cohortId)) {
    if (!o.orthanc_id || o.file_size === null) continue;
    entries.push({ path: entryPath(o), orthancId: o.orthanc_id, size: o.file_size });
  }
  // The probe computes the size only: its entries never open (yazl asks for the first one right after end()).
  const build = (onSize?: (n: number) => void): ZipFile => {
    const zip = new ZipFile();
    for (const e of entries) {
      zip.addReadStreamLazy(
        e.path,
        { size: e.size, compress: false, mtime: FIXED_MTIME, forceDosTimestamp: true, mode: 0o100644 },
        (cb) => {
          if (onSize) return;
          archive.openInstance(e.orthancId).then(
            (s) => cb(null, s.body),
            (err: unknown) => cb(err, new PassThrough()),
          );
        },
      );
    }
    // Small generated entries (the cohort's de-identified records, issue 18) after the images.
    for (const x of extra)
      zip.addBuffer(x.body, x.path, {
        compress: false,
        mtime: FIXED_MTIME,
        forceDosTimestamp: true,
        mode: 0o100644,
      });
    zip.end({ forceZip64Format: false, comment: '' }, onSize as () => void);
    return zip;
  };
  const size = await new Promise<number>((resolve, reject) => {
    build((n) => resolve(n));
    setImmediate(() => reject(new Error('ZIP size not computable')));
  });
  return {
    size,
    entries: entries.length + extra.length,
    open(start, end) {
      const zip = build();
      const out = zip.outputStream as Readable;
      return out.pipe(byteRange(start, end));
    },
  };
}

/** Passes bytes [start, end] of a stream through and ends there. */
function byteRange(start: number, end: number): Transform {
  let pos = 0;
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      const from = Math.max(start - pos, 0);
      const to = Math.min(end + 1 - pos, chunk.length);
      pos += chunk.length;
      if (to > from) this.push(chunk.subarray(from, to));
      if (pos > end) this.push(null);
      cb();
    },
  });
}
