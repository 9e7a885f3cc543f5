import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { FailureReason } from '../src/dicom/parse';
import { ensureProject } from '../src/index-db/projects';
import {
  asArchived,
  el,
  nestedContent,
  part10,
  POLYGLOT_PREAMBLES,
  syntheticUids,
  text,
} from './helpers/dicom-fuzz';
import { orthancEndpoint, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

jest.setTimeout(180_000);

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;
const BOUNDARY = 'hardening-boundary';

function multipart(parts: Buffer[]): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts)
    chunks.push(
      Buffer.from(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n`),
      p,
      Buffer.from('\r\n'),
    );
  chunks.push(Buffer.from(`--${BOUNDARY}--\r\n`));
  return Buffer.concat(chunks);
}

async function stow(gw: TestGateway, parts: Buffer[]): Promise<{ status: number; body: DicomJson }> {
  const res = await fetch(`${gw.url}/projects/alpha/dicom-web/studies`, {
    method: 'POST',
    headers: {
      'content-type': `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`,
      accept: 'application/dicom+json',
    },
    body: multipart(parts),
  });
  const text = await res.text();
  return { status: res.status, body: text ? (JSON.parse(text) as DicomJson) : {} };
}

const failedReasons = (b: DicomJson) =>
  ((b['00081198']?.Value ?? []) as DicomJson[]).map((i) => i['00081197']?.Value?.[0]);

async function orthanc<T>(path: string, init: RequestInit = {}): Promise<T> {
  const { url, auth } = orthancEndpoint();
  const res = await fetch(`${url}${path}`, { ...init, headers: { authorization: auth } });
  return (await res.json()) as T;
}
const orthancInstances = async () =>
  (await orthanc<{ CountInstances: number }>('/statistics')).CountInstances;

/** The archived file of a SOP instance, from Orthanc directly. */
async function archived(sop: string): Promise<Buffer | undefined> {
  const found = await orthanc<Array<{ ID: string; Type: string }>>('/tools/lookup', {
    method: 'POST',
    body: sop,
  });
  const id = found.find((f) => f.Type === 'Instance')?.ID;
  if (!id) return undefined;
  const { url, auth } = orthancEndpoint();
  const res = await fetch(`${url}/instances/${id}/file`, { headers: { authorization: auth } });
  return Buffer.from(await res.arrayBuffer());
}

const md5 = (b: Buffer) => createHash('md5').update(b).digest('hex');

describe('hardened pre-parse at the door (issue 8: defects 1, 2, 6, 7, 8)', () => {
  let gw: TestGateway;
  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await ensureProject(gw.services.db, { id: 'alpha', name: 'alpha' });
  });
  afterAll(async () => gw.close());

  it('refuses a Content Sequence nested 60 deep (which crashes Orthanc 1.10) before it reaches the archive', async () => {
    const before = await orthancInstances();
    const system = await orthanc<{ Version: string }>('/system');
    const answer = await stow(gw, [part10(syntheticUids('60'), [nestedContent(60)])]);
    expect(answer.status).toBe(400);
    expect(failedReasons(answer.body)).toEqual([FailureReason.CannotUnderstand]);
    expect(await orthancInstances()).toBe(before);
    expect(await archived(syntheticUids('60').sopInstanceUid)).toBeUndefined();
    expect((await orthanc<{ Version: string }>('/system')).Version).toBe(system.Version);
  });

  it('stores the same object nested 8 deep', async () => {
    const answer = await stow(gw, [part10(syntheticUids('8'), [nestedContent(8)])]);
    expect(answer.status).toBe(200);
    expect(await archived(syntheticUids('8').sopInstanceUid)).toBeDefined();
  });

  it('refuses an invalid character in a SOP Instance UID (0xA900) instead of indexing a "repaired" one', async () => {
    const before = await orthancInstances();
    const uids = { ...syntheticUids('uid'), sopInstanceUid: '2.25.3n1.4' };
    const answer = await stow(gw, [part10(uids)]);
    expect(answer.status).toBe(409);
    expect(failedReasons(answer.body)).toEqual([FailureReason.DataSetDoesNotMatchSopClass]);
    expect(await orthancInstances()).toBe(before);
    const rows = await gw.services.db.query(
      "SELECT 1 FROM instances WHERE sop_instance_uid IN ('2.25.31.4', '2.25.3n1.4')",
    );
    expect(rows.rowCount).toBe(0);
  });

  it('refuses truncated, overlong, odd-length and VR-inconsistent objects without the archive seeing them', async () => {
    const mr = readFileSync(`${SAMPLES}/mr/MR_small.dcm`);
    const huge = Buffer.from(mr);
    huge.writeUInt32LE(0xfffffff0, huge.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00])) + 8);
    const bad = [
      readFileSync(`${SAMPLES}/malformed/MR_truncated.dcm`),
      mr.subarray(0, mr.length - 101),
      huge,
      part10(syntheticUids('odd'), [el(0x00081030, 'LO', Buffer.from('odd'))]),
      part10(syntheticUids('fd'), [el(0x00181050, 'FD', Buffer.alloc(4))]),
      part10(syntheticUids('vr'), [el(0x00081030, 'Q!', text('ab'))]),
    ];
    const before = await orthancInstances();
    const t0 = Date.now();
    const answer = await stow(gw, bad);
    expect(Date.now() - t0).toBeLessThan(5000);
    expect(answer.status).toBe(400);
    expect(failedReasons(answer.body)).toEqual(bad.map(() => FailureReason.CannotUnderstand));
    expect(await orthancInstances()).toBe(before);
  });

  it.each(Object.keys(POLYGLOT_PREAMBLES))(
    'archives CT_small with a %s preamble zeroed, and answers and indexes it as usual',
    async (kind) => {
      await resetStack();
      await ensureProject(gw.services.db, { id: 'alpha', name: 'alpha' });
      const ct = Buffer.from(readFileSync(`${SAMPLES}/ct/CT_small.dcm`));
      POLYGLOT_PREAMBLES[kind].copy(ct, 0);
      const answer = await stow(gw, [ct]);
      expect(answer.status).toBe(200);
      const sop = (answer.body['00081199'].Value as DicomJson[])[0]['00081155'].Value?.[0] as string;
      const got = await archived(sop);
      expect(got?.subarray(0, 128).every((b) => b === 0)).toBe(true);
      expect(got && md5(got)).toBe(md5(asArchived(ct)));
      expect(got?.subarray(128).equals(ct.subarray(128))).toBe(true);
      const row = await gw.services.db.query<{ md5: string; file_size: string }>(
        'SELECT md5, file_size FROM instances WHERE sop_instance_uid = $1',
        [sop],
      );
      expect(row.rows[0].md5).toBe(md5(asArchived(ct)));
      expect(Number(row.rows[0].file_size)).toBe(ct.length);
      // A re-send of the same polyglot is the same archived object, not a conflict.
      expect((await stow(gw, [ct])).status).toBe(200);
    },
  );

  it('refuses depth 100,000 (3.6 MB) in well under a second while /healthz keeps answering, RSS bounded', async () => {
    const bomb = part10(syntheticUids('100k'), [nestedContent(100_000)]);
    expect(bomb.length).toBeGreaterThan(3_500_000);
    const rssBefore = process.memoryUsage().rss;
    let done = false;
    const health: number[] = [];
    const poll = (async () => {
      while (!done) {
        const t = Date.now();
        const res = await fetch(`${gw.url}/healthz`);
        await res.text();
        health.push(Date.now() - t);
        await new Promise((r) => setTimeout(r, 20));
      }
    })();
    const t0 = Date.now();
    const answers = await Promise.all([stow(gw, [bomb]), stow(gw, [bomb]), stow(gw, [bomb])]);
    const elapsed = Date.now() - t0;
    done = true;
    await poll;
    for (const a of answers) {
      expect(a.status).toBe(400);
      expect(failedReasons(a.body)).toEqual([FailureReason.CannotUnderstand]);
    }
    expect(elapsed).toBeLessThan(3000);
    expect(health.length).toBeGreaterThan(0);
    expect(Math.max(...health)).toBeLessThan(1000);
    expect(process.memoryUsage().rss - rssBefore).toBeLessThan(300 * 1024 ** 2);
  });
});
