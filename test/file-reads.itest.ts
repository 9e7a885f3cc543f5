import { createHash } from 'node:crypto';
import { unlinkSync } from 'node:fs';
import { ensureProject } from '../src/index-db/projects';
import { storedFilePath } from '../src/orthanc/storage-files';
import { generateInstances, type SyntheticInstance } from '../tools/synth';
import { stowInstances } from '../tools/stow-client';
import {
  orthancDirect,
  orthancEndpoint,
  resetStack,
  startGateway,
  type TestGateway,
} from './helpers/gateway';

jest.setTimeout(120_000);

const md5 = (b: Buffer | Uint8Array) => createHash('md5').update(b).digest('hex');

/**
 * ARCHIVE_FILE_READS (src/orthanc/storage-files.ts): whole instances come from Orthanc's storage files, located
 * through Orthanc's attachment record, and through REST whenever the file is not the one Orthanc records.
 */
describe('whole instances read from Orthanc storage files', () => {
  let gw: TestGateway;
  let series: SyntheticInstance[];
  const orthanc = orthancEndpoint();

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    series = [
      ...generateInstances({ patients: 1, seriesPerStudy: 1, instancesPerSeries: 3, seed: 'file-reads' }),
    ];
    const stored = await stowInstances(
      series.map((i) => i.buffer),
      { baseUrl: `${gw.url}/projects/alpha/dicom-web`, batch: 3, keepResults: false },
    );
    expect(stored.failed + stored.partial).toBe(0);
  });
  afterAll(async () => {
    await gw?.close();
  });

  const wadoUri = (i: SyntheticInstance) =>
    `${gw.url}/projects/alpha/wado?requestType=WADO&studyUID=${i.studyInstanceUid}&seriesUID=${i.seriesInstanceUid}` +
    `&objectUID=${i.sopInstanceUid}&contentType=application/dicom`;
  const get = async (url: string) => {
    const res = await fetch(url);
    return { status: res.status, body: Buffer.from(await res.arrayBuffer()) };
  };
  const reads = async () => {
    const text = await (await fetch(`${gw.url}/metrics`)).text();
    const n = (source: string) =>
      Number(new RegExp(`^aperture_archive_file_reads\\{source="${source}"\\} (\\d+)`, 'm').exec(text)?.[1]);
    return { disk: n('disk'), rest: n('rest') };
  };
  const orthancFile = async (archiveId: string) => {
    const res = await fetch(`${orthanc.url}/instances/${archiveId}/file`, {
      headers: { authorization: orthanc.auth },
    });
    return Buffer.from(await res.arrayBuffer());
  };
  const archiveIdOf = async (i: SyntheticInstance) =>
    (
      await gw.services.db.query<{ orthanc_id: string }>(
        'SELECT orthanc_id FROM instances WHERE sop_instance_uid = $1',
        [i.sopInstanceUid],
      )
    ).rows[0].orthanc_id;

  it('is on in the local stack, so every test of retrieval runs through it', () => {
    expect(gw.config.ARCHIVE_FILE_READS).toBe(true);
  });

  it('serves the bytes Orthanc holds, from the file, for single instances and a series', async () => {
    const before = await reads();
    for (const i of series) {
      const got = await get(wadoUri(i));
      expect(got.status).toBe(200);
      expect(md5(got.body)).toBe(md5(await orthancFile(await archiveIdOf(i))));
    }
    const res = await fetch(
      `${gw.url}/projects/alpha/dicom-web/studies/${series[0].studyInstanceUid}/series/${series[0].seriesInstanceUid}`,
      { headers: { accept: 'multipart/related; type="application/dicom"' } },
    );
    expect(res.status).toBe(200);
    const body = Buffer.from(await res.arrayBuffer());
    for (const i of series) {
      const file = await orthancFile(await archiveIdOf(i));
      expect(body.includes(file)).toBe(true);
    }
    const after = await reads();
    expect(after.disk - before.disk).toBe(2 * series.length);
    expect(after.rest - before.rest).toBe(0);
  });

  it('follows Orthanc when an instance is re-stored under a new file, and reads through REST when the file is gone', async () => {
    const [first, second] = series;
    const direct = orthancDirect();
    // Re-stored behind the gateway's back: Orthanc deletes the old file and writes the same object under a new UUID.
    const id = await archiveIdOf(first);
    const bytes = await orthancFile(id);
    const oldPath = await storedFilePath(direct, gw.config.ORTHANC_STORAGE_DIR, id);
    await direct.delete(`/instances/${id}`);
    await direct.store(bytes, bytes.length);
    const newPath = await storedFilePath(direct, gw.config.ORTHANC_STORAGE_DIR, id);
    expect(newPath).not.toBe(oldPath);
    let before = await reads();
    const again = await get(wadoUri(first));
    expect(again.status).toBe(200);
    expect(md5(again.body)).toBe(md5(bytes));
    let after = await reads();
    // The remembered file was gone: that read went through REST, and the next one is from the new file.
    expect(after.rest - before.rest).toBe(1);
    expect(md5((await get(wadoUri(first))).body)).toBe(md5(bytes));
    expect((await reads()).disk - after.disk).toBe(1);

    // A file missing from disk (a broken or partly restored storage folder): REST answers as before.
    const id2 = await archiveIdOf(second);
    const path2 = await storedFilePath(direct, gw.config.ORTHANC_STORAGE_DIR, id2);
    expect(path2).toBeTruthy();
    const held = await orthancFile(id2);
    unlinkSync(path2!);
    before = await reads();
    const missing = await get(wadoUri(second));
    after = await reads();
    expect(after.rest - before.rest).toBe(1);
    // Orthanc's storage cache may still hold the object (200, its bytes) or it answers as for a lost file; never a
    // stale or partial answer from the gateway.
    if (missing.status === 200) expect(md5(missing.body)).toBe(md5(held));
    else expect(missing.status).toBeGreaterThanOrEqual(500);
    // Leave Orthanc consistent for the next file: the instance without its file goes.
    await direct.delete(`/instances/${id2}`);
    await direct.close();
  });
});
