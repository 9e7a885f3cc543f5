import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import type { Queryable } from '../index-db/pool';
import type { PacsClient } from '../orthanc/client';
import { storagePathOf } from '../orthanc/storage-index';
import { syncSummary } from '../readiness';
import { defaultStateDir, readSyncStatus, syncStoragePass } from './storage-sync';

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');
const UUIDS = ['0a1b2c3d-0000-4000-8000-000000000001', '0a1b2c3d-0000-4000-8000-000000000002'];

/** Orthanc's index as rows of AttachedFiles joined with Resources (what listStoredAttachments selects). */
function indexOf(rows: Array<{ uuid: string; bytes: Buffer; md5?: string }>): Queryable {
  return {
    query: (async (_sql: string, params: [string, number]) => ({
      rows: rows
        .filter((r) => r.uuid > params[0])
        .slice(0, params[1])
        .map((r) => ({
          uuid: r.uuid,
          public_id: `inst-${r.uuid.slice(-1)}`,
          resource_type: 3,
          file_type: 1,
          size: String(r.bytes.length),
          md5: r.md5 ?? md5(r.bytes),
        })),
    })) as unknown as Queryable['query'],
  };
}

/** The source site's Orthanc, serving `files` by REST path; counts fetches. */
function sourceOf(files: Record<string, Buffer>): PacsClient & { fetched: string[] } {
  const fetched: string[] = [];
  return {
    fetched,
    getStream: async (path: string) => {
      fetched.push(path);
      const b = files[path];
      if (!b) throw new Error('not found in the archive');
      return {
        body: Readable.from([b.subarray(0, 3), b.subarray(3)]),
        contentType: 'application/octet-stream',
      };
    },
  } as unknown as PacsClient & { fetched: string[] };
}

describe('storage sync pass', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sync-unit-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('copies what is missing, checks MD5, never installs a mismatching copy, and is idempotent', async () => {
    const good = Buffer.from('DICM good file bytes');
    const bad = Buffer.from('bytes the source sends');
    const storage = join(dir, 'storage');
    const target = {
      orthancIndex: indexOf([
        { uuid: UUIDS[0], bytes: good },
        // The index's MD5 is of other bytes than the source answers: a damaged transfer or source.
        { uuid: UUIDS[1], bytes: bad, md5: md5(Buffer.from('bytes the index recorded')) },
      ]),
      source: sourceOf({
        '/instances/inst-1/attachments/dicom/compressed-data': good,
        '/instances/inst-2/attachments/dicom/compressed-data': bad,
      }),
      storageDir: storage,
      stateDir: defaultStateDir(storage),
      concurrency: 2,
    };
    const first = await syncStoragePass(target);
    expect(first).toMatchObject({ indexedFiles: 2, copiedFiles: 1, failedFiles: 1 });
    expect(first.differences).toEqual([expect.objectContaining({ uuid: UUIDS[1], problem: 'source-md5' })]);
    expect(readFileSync(storagePathOf(storage, UUIDS[0]))).toEqual(good);
    expect(existsSync(storagePathOf(storage, UUIDS[1]))).toBe(false);
    // No temporary file is left behind.
    expect(readdirSync(join(storage, '0a', '1b'))).toEqual([UUIDS[0]]);
    const status = await readSyncStatus(join(dir, 'storage-sync'));
    expect(status).toMatchObject({ running: false, backlogFiles: 1, syncedAsOf: null, copiedFiles: 1 });

    target.source.fetched.length = 0;
    const second = await syncStoragePass(target);
    expect(second).toMatchObject({ presentFiles: 1, copiedFiles: 0, failedFiles: 1 });
    // Only the file still missing is asked for again.
    expect(target.source.fetched).toEqual(['/instances/inst-2/attachments/dicom/compressed-data']);
  });

  it('reports a source that does not hold a file, and syncedAsOf once nothing is missing', async () => {
    const storage = join(dir, 'storage');
    const bytes = Buffer.from('x'.repeat(100));
    const files: Record<string, Buffer> = {};
    const target = {
      orthancIndex: indexOf([{ uuid: UUIDS[0], bytes }]),
      source: sourceOf(files),
      storageDir: storage,
      stateDir: join(dir, 'state'),
      concurrency: 1,
    };
    const missing = await syncStoragePass(target);
    expect(missing.differences).toEqual([expect.objectContaining({ problem: 'source-missing' })]);
    files['/instances/inst-1/attachments/dicom/compressed-data'] = bytes;
    const ok = await syncStoragePass(target);
    expect(ok).toMatchObject({ copiedFiles: 1, failedFiles: 0 });
    const s = syncSummary(await readSyncStatus(join(dir, 'state')))!;
    expect(s).toMatchObject({ backlogFiles: 0, copiedFiles: 1, corruptFiles: 0, syncedAsOf: ok.startedAt });
    expect(s.behindSeconds).toBeGreaterThanOrEqual(0);
  });

  it('refuses a storage name that is not an Orthanc UUID (no path tricks from the index)', () => {
    expect(() => storagePathOf('/s', '../../etc/passwd')).toThrow(/not an Orthanc storage UUID/);
    expect(storagePathOf('/s', UUIDS[0])).toBe(`/s/0a/1b/${UUIDS[0]}`);
    expect(syncSummary(undefined)).toBeUndefined();
  });
});
