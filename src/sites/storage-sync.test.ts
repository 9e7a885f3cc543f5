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
const UUIDS = [1, 2, 3, 4].map((n) => `0a1b2c3d-0000-4000-8000-00000000000${n}`);

/**
 * Orthanc's index as rows of AttachedFiles joined with Resources, plus its change log (one entry per file, in
 * order): a stand-in that answers the statements of src/index-db/orthanc-storage.ts by what they ask for.
 */
type FakeRow = { uuid: string; bytes: Buffer; md5?: string };
function indexOf(rows: FakeRow[]): Queryable & { rows: FakeRow[] } {
  const row = (r: FakeRow) => ({
    uuid: r.uuid,
    public_id: `inst-${r.uuid.slice(-1)}`,
    resource_type: 3,
    file_type: 1,
    size: String(r.bytes.length),
    md5: r.md5 ?? md5(r.bytes),
  });
  const seqOf = (r: FakeRow) => Number(r.uuid.slice(-2));
  const q = async (sql: string, params: unknown[] = []) => {
    if (/max\(seq\)/.test(sql)) return { rows: [{ n: String(Math.max(0, ...rows.map(seqOf))) }] };
    if (/FROM changes WHERE seq >/.test(sql)) {
      const [after, limit] = params as [number, number];
      return {
        rows: rows
          .filter((r) => seqOf(r) > after)
          .sort((a, b) => seqOf(a) - seqOf(b))
          .slice(0, limit)
          .map((r) => ({ seq: String(seqOf(r)), internalid: String(seqOf(r)) })),
      };
    }
    if (/a\.id = ANY/.test(sql)) {
      const ids = (params[0] as string[]).map(Number);
      return { rows: rows.filter((r) => ids.includes(seqOf(r))).map(row) };
    }
    if (/uuid = ANY/.test(sql)) {
      const want = params[0] as string[];
      return { rows: rows.filter((r) => want.includes(r.uuid)).map((r) => ({ uuid: r.uuid })) };
    }
    const [after, limit] = params as [string, number];
    return {
      rows: rows
        .filter((r) => r.uuid > after)
        .sort((a, b) => (a.uuid < b.uuid ? -1 : 1))
        .slice(0, limit)
        .map(row),
    };
  };
  return { rows, query: q as unknown as Queryable['query'] };
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
    // No watermark yet: the first pass is a full one.
    expect(first.mode).toBe('full');
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
    // The first pass had a failure, so its watermark was not kept: a full pass again.
    expect(second.mode).toBe('full');
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

describe('incremental passes and pruning', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'sync-inc-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const bytesOf = (n: number) => Buffer.from(`file ${n} `.repeat(10 + n));
  function setUp(n: number) {
    const storage = join(dir, 'storage');
    const files: Record<string, Buffer> = {};
    const rows: FakeRow[] = [];
    for (let i = 0; i < n; i++) {
      rows.push({ uuid: UUIDS[i], bytes: bytesOf(i) });
      files[`/instances/inst-${UUIDS[i].slice(-1)}/attachments/dicom/compressed-data`] = bytesOf(i);
    }
    const index = indexOf(rows);
    const target = {
      orthancIndex: index,
      source: sourceOf(files),
      storageDir: storage,
      stateDir: join(dir, 'state'),
      concurrency: 2,
    };
    const add = (i: number) => {
      rows.push({ uuid: UUIDS[i], bytes: bytesOf(i) });
      files[`/instances/inst-${UUIDS[i].slice(-1)}/attachments/dicom/compressed-data`] = bytesOf(i);
    };
    return { storage, target, index, add };
  }

  it("after a full pass, looks only at files of Orthanc's new changes", async () => {
    const { target, add } = setUp(2);
    expect(await syncStoragePass(target)).toMatchObject({ mode: 'full', indexedFiles: 2, copiedFiles: 2 });
    expect((await readSyncStatus(target.stateDir))?.changesSeq).toBe(2);
    add(2);
    const inc = await syncStoragePass(target, { changesLookback: 0 });
    // One new change, one file looked at: the two synced before are not even stat'ed.
    expect(inc).toMatchObject({ mode: 'changes', indexedFiles: 1, copiedFiles: 1, presentFiles: 0 });
    expect((await readSyncStatus(target.stateDir))?.changesSeq).toBe(3);
    // Nothing new: nothing looked at. The look-back re-reads the last entries (a late commit would be among them).
    expect(await syncStoragePass(target, { changesLookback: 0 })).toMatchObject({ indexedFiles: 0 });
    expect(await syncStoragePass(target, { changesLookback: 1 })).toMatchObject({
      indexedFiles: 1,
      presentFiles: 1,
      copiedFiles: 0,
    });
    expect(await syncStoragePass(target, { mode: 'full' })).toMatchObject({ mode: 'full', indexedFiles: 3 });
  });

  it('prunes a file the index no longer names after its grace period, never one it names', async () => {
    const { storage, target, index } = setUp(3);
    await syncStoragePass(target);
    // Deleted at site 1: its row is gone from the replicated index.
    index.rows.splice(1, 1);
    const inGrace = await syncStoragePass(target, { mode: 'full', pruneGraceMs: 60_000 });
    expect(inGrace).toMatchObject({ orphanFiles: 1, prunedFiles: 0 });
    expect(existsSync(storagePathOf(storage, UUIDS[1]))).toBe(true);
    // An incremental pass never prunes.
    expect(await syncStoragePass(target, { pruneGraceMs: 0 })).toMatchObject({
      mode: 'changes',
      prunedFiles: 0,
    });
    const pruned = await syncStoragePass(target, { mode: 'full', pruneGraceMs: 0 });
    expect(pruned).toMatchObject({ orphanFiles: 0, prunedFiles: 1, indexedFiles: 2 });
    expect(existsSync(storagePathOf(storage, UUIDS[1]))).toBe(false);
    for (const u of [UUIDS[0], UUIDS[2]]) expect(existsSync(storagePathOf(storage, u))).toBe(true);
    expect(await readSyncStatus(target.stateDir)).toMatchObject({ prunedFiles: 1, orphanFiles: 0 });
  });

  it('never prunes when the index names no file at all (the wrong database, an empty restore)', async () => {
    const { storage, target, index } = setUp(2);
    await syncStoragePass(target);
    index.rows.splice(0, 2);
    expect(await syncStoragePass(target, { mode: 'full', pruneGraceMs: 0 })).toMatchObject({
      prunedFiles: 0,
    });
    for (const u of UUIDS.slice(0, 2)) expect(existsSync(storagePathOf(storage, u))).toBe(true);
  });
});
