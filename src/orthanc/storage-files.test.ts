import { mkdirSync, mkdtempSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { text } from 'node:stream/consumers';
import type { PacsClient } from './client';
import { StoredFileReader } from './storage-files';

/** Orthanc's attachment records of a few instances, and how often the reader asked for one. */
function fakePacs(records: Record<string, { Uuid: string; size: number; compressed?: boolean }>) {
  const asked: string[] = [];
  const pacs = {
    getJson: async (path: string) => {
      asked.push(path);
      const id = /\/instances\/([^/]+)\/attachments\/dicom\/info$/.exec(path)?.[1] ?? '';
      const r = records[id];
      if (!r) throw new Error(`unexpected ${path}`);
      return {
        Uuid: r.Uuid,
        CompressedSize: r.compressed ? Math.floor(r.size / 2) : r.size,
        UncompressedSize: r.size,
        CompressedMD5: r.compressed ? 'aa' : 'bb',
        UncompressedMD5: 'bb',
      };
    },
  } as unknown as PacsClient;
  return { pacs, asked };
}

const UUID_A = '0123abcd-0000-4000-8000-000000000001';
const UUID_B = '4567ef01-0000-4000-8000-000000000002';

describe('StoredFileReader', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'stored-files-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  /** Writes a file where Orthanc's FilesystemStorage would keep it. */
  function store(uuid: string, content: string): void {
    mkdirSync(join(dir, uuid.slice(0, 2), uuid.slice(2, 4)), { recursive: true });
    writeFileSync(join(dir, uuid.slice(0, 2), uuid.slice(2, 4), uuid), content);
  }

  it('serves the file Orthanc recorded, asking for its location once', async () => {
    store(UUID_A, 'DICM-bytes-of-a');
    const { pacs, asked } = fakePacs({ a: { Uuid: UUID_A, size: 15 } });
    const reader = new StoredFileReader(pacs, dir);
    for (let k = 0; k < 2; k++) {
      const file = await reader.open('a');
      expect(file?.contentLength).toBe(15);
      expect(file?.contentType).toBe('application/dicom');
      expect(await text(file!.body)).toBe('DICM-bytes-of-a');
    }
    expect(asked).toHaveLength(1);
  });

  it('answers null (read through REST) for a compressed file, a missing one and one of another size', async () => {
    store(UUID_A, 'DICM-bytes-of-a');
    const { pacs, asked } = fakePacs({
      a: { Uuid: UUID_A, size: 15 },
      b: { Uuid: UUID_B, size: 15 },
      c: { Uuid: UUID_A, size: 15, compressed: true },
    });
    const reader = new StoredFileReader(pacs, dir);
    expect(await reader.open('c')).toBeNull();
    expect(await reader.open('b')).toBeNull(); // no file under that UUID
    expect(await (await reader.open('a'))?.body.toArray()).toBeDefined();
    truncateSync(join(dir, UUID_A.slice(0, 2), UUID_A.slice(2, 4), UUID_A), 10);
    expect(await reader.open('a')).toBeNull();
    // A file that failed is located again next time (the instance may have been re-stored under a new UUID).
    expect(await reader.open('a')).toBeNull();
    // Asked once for the first two opens (remembered), once more after the size differed.
    expect(asked.filter((p) => p.includes('/a/'))).toHaveLength(2);
  });

  it('remembers at most maxEntries locations, the least recently used leaving first', async () => {
    store(UUID_A, 'aaaa');
    store(UUID_B, 'bbbb');
    const { pacs, asked } = fakePacs({ a: { Uuid: UUID_A, size: 4 }, b: { Uuid: UUID_B, size: 4 } });
    const reader = new StoredFileReader(pacs, dir, 1);
    await (await reader.open('a'))?.body.toArray();
    await (await reader.open('b'))?.body.toArray(); // a leaves
    await (await reader.open('b'))?.body.toArray();
    await (await reader.open('a'))?.body.toArray();
    expect(asked.map((p) => p.split('/')[2])).toEqual(['a', 'b', 'a']);
  });

  it('stops reading when the request is aborted', async () => {
    store(UUID_A, 'x'.repeat(3 << 20));
    const { pacs } = fakePacs({ a: { Uuid: UUID_A, size: 3 << 20 } });
    const ac = new AbortController();
    const file = await new StoredFileReader(pacs, dir).open('a', ac.signal);
    ac.abort(new Error('client gone'));
    await expect(file!.body.toArray()).rejects.toThrow('client gone');
  });
});
