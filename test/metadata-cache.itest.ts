import http from 'node:http';
import zlib from 'node:zlib';
import { generateInstances, type SyntheticInstance } from '../tools/synth';
import { stowInstances } from '../tools/stow-client';
import { removeInstance } from '../src/index-db/instances';
import { ensureProject } from '../src/index-db/projects';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

jest.setTimeout(120_000);

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

/** GET with Node's http (no automatic decompression), so the bytes on the wire can be compared. */
function rawGet(url: string, headers: Record<string, string> = {}) {
  return new Promise<{ status: number; headers: http.IncomingHttpHeaders; body: Buffer }>(
    (resolve, reject) => {
      http
        .get(url, { headers: { accept: 'application/dicom+json', ...headers } }, (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () =>
            resolve({ status: res.statusCode!, headers: res.headers, body: Buffer.concat(chunks) }),
          );
        })
        .on('error', reject);
    },
  );
}

const sops = (body: Buffer) =>
  (JSON.parse(body.toString('utf8')) as DicomJson[]).map((d) => String(d['00080018'].Value![0])).sort();

describe('WADO-RS metadata answers kept in memory (METADATA_CACHE_BYTES)', () => {
  let gw: TestGateway;
  let series: SyntheticInstance[];
  let url: (project: string) => string;

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway({ METADATA_CACHE_BYTES: String(4 * 1024 ** 2) });
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    await ensureProject(gw.services.db, { id: 'beta', name: 'Beta' });
    series = [
      ...generateInstances({ patients: 1, seriesPerStudy: 1, instancesPerSeries: 3, seed: 'metadata-cache' }),
    ];
    const [{ studyInstanceUid: study, seriesInstanceUid: uid }] = series;
    url = (project) => `${gw.url}/projects/${project}/dicom-web/studies/${study}/series/${uid}/metadata`;
    const stored = await stowInstances(
      series.slice(0, 2).map((i) => i.buffer),
      { baseUrl: `${gw.url}/projects/alpha/dicom-web`, batch: 2, keepResults: false },
    );
    expect(stored.failed + stored.partial).toBe(0);
  });
  afterAll(async () => {
    await gw?.close();
  });

  it('serves a repeated request the same bytes, plain and gzipped', async () => {
    const first = await rawGet(url('alpha'));
    const again = await rawGet(url('alpha'));
    expect(first.status).toBe(200);
    expect(sops(first.body)).toEqual(
      series
        .slice(0, 2)
        .map((i) => i.sopInstanceUid)
        .sort(),
    );
    expect(again.body.equals(first.body)).toBe(true);
    expect(again.headers.etag).toBe(first.headers.etag);

    const gz1 = await rawGet(url('alpha'), { 'accept-encoding': 'gzip' });
    const gz2 = await rawGet(url('alpha'), { 'accept-encoding': 'gzip' });
    expect(gz2.headers['content-encoding']).toBe('gzip');
    expect(gz2.body.equals(gz1.body)).toBe(true);
    expect(zlib.gunzipSync(gz2.body).equals(first.body)).toBe(true);
  });

  it('answers with the new instance set as soon as an instance is added or removed', async () => {
    expect(sops((await rawGet(url('alpha'))).body)).toHaveLength(2);
    await stowInstances([series[2].buffer], {
      baseUrl: `${gw.url}/projects/alpha/dicom-web`,
      batch: 1,
      keepResults: false,
    });
    expect(sops((await rawGet(url('alpha'))).body)).toEqual(series.map((i) => i.sopInstanceUid).sort());
    await removeInstance(gw.services.db, series[2].sopInstanceUid);
    expect(sops((await rawGet(url('alpha'))).body)).toEqual(
      series
        .slice(0, 2)
        .map((i) => i.sopInstanceUid)
        .sort(),
    );
  });

  it('answers with the new data set as soon as an instance is re-indexed', async () => {
    const sop = series[0].sopInstanceUid;
    const description = (body: Buffer) =>
      (JSON.parse(body.toString('utf8')) as DicomJson[]).find((d) => d['00080018'].Value![0] === sop)?.[
        '0008103E'
      ]?.Value?.[0];
    const before = description((await rawGet(url('alpha'))).body);
    expect(typeof before).toBe('string');
    // What the index writer's upsert does when an object comes back with other attributes: a new dicom_json and a
    // new indexed_at. The served text (a column PostgreSQL derives from dicom_json) must follow at once.
    await gw.services.db.query(
      `UPDATE instances SET dicom_json = jsonb_set(dicom_json, '{0008103E}', $2::jsonb), indexed_at = now()
        WHERE sop_instance_uid = $1`,
      [sop, JSON.stringify({ vr: 'LO', Value: ['re-indexed description'] })],
    );
    expect(description((await rawGet(url('alpha'))).body)).toBe('re-indexed description');
    const gz = await rawGet(url('alpha'), { 'accept-encoding': 'gzip' });
    expect(description(zlib.gunzipSync(gz.body))).toBe('re-indexed description');
  });

  it("never answers one project with what was kept for another's view of the same series", async () => {
    expect(sops((await rawGet(url('alpha'))).body)).toHaveLength(2);
    expect((await rawGet(url('beta'))).status).toBe(404);
    // Beta is given one instance of the series: its answer holds that one only, alpha's still both.
    await gw.services.db.query(
      `INSERT INTO project_instances (project_id, sop_instance_uid, series_uid, study_uid, source)
       SELECT 'beta', sop_instance_uid, series_uid, study_uid, 'assign' FROM instances WHERE sop_instance_uid = $1`,
      [series[0].sopInstanceUid],
    );
    expect(sops((await rawGet(url('beta'))).body)).toEqual([series[0].sopInstanceUid]);
    expect(sops((await rawGet(url('alpha'))).body)).toHaveLength(2);
    const union = (await rawGet(url('alpha').replace('/projects/alpha', ''))).body;
    expect(sops(union)).toHaveLength(2);
  });

  it('answers a study of more than one index page (streamed) with the same instances as one-piece answers', async () => {
    // Up to METADATA_PAGE_SIZE (250) instances an answer is assembled in one piece and sent with its length; above
    // that it streams page by page. Both must carry the same DICOM JSON for each instance.
    const big = [
      ...generateInstances({
        patients: 1,
        seriesPerStudy: 2,
        instancesPerSeries: 130,
        rows: 8,
        seed: 'pages',
      }),
    ];
    const stored = await stowInstances(
      big.map((i) => i.buffer),
      { baseUrl: `${gw.url}/projects/alpha/dicom-web`, batch: 65, keepResults: false },
    );
    expect(stored.failed + stored.partial).toBe(0);
    const studyUrl = `${gw.url}/projects/alpha/dicom-web/studies/${big[0].studyInstanceUid}/metadata`;
    const plain = await rawGet(studyUrl);
    expect(plain.status).toBe(200);
    expect(plain.headers['content-length']).toBeUndefined(); // streamed
    expect(sops(plain.body)).toEqual(big.map((i) => i.sopInstanceUid).sort());
    const gz = await rawGet(studyUrl, { 'accept-encoding': 'gzip' });
    expect(gz.headers['content-encoding']).toBe('gzip');
    expect(zlib.gunzipSync(gz.body).equals(plain.body)).toBe(true);
    // Kept after the stream ended: the repeat is the same bytes.
    expect((await rawGet(studyUrl)).body.equals(plain.body)).toBe(true);

    const inStudy = new Map(
      (JSON.parse(plain.body.toString('utf8')) as DicomJson[]).map((d) => [
        String(d['00080018'].Value![0]),
        d,
      ]),
    );
    for (const i of [big[0], big[129], big[130], big[259]]) {
      const one = await rawGet(
        `${gw.url}/projects/alpha/dicom-web/studies/${i.studyInstanceUid}/series/${i.seriesInstanceUid}` +
          `/instances/${i.sopInstanceUid}/metadata`,
      );
      expect(Number(one.headers['content-length'])).toBe(one.body.length); // one piece
      expect(JSON.parse(one.body.toString('utf8'))).toEqual([inStudy.get(i.sopInstanceUid)]);
    }
  });
});
