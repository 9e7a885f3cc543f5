import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { api } from 'dicomweb-client';
import { FailureReason, parsePart10 } from '../src/dicom/parse';
import { ensureProject } from '../src/index-db/projects';
import { asArchived } from './helpers/dicom-fuzz';
import { orthancEndpoint, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

// dicomweb-client speaks XMLHttpRequest, which Node lacks; xhr2 provides it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const XHR = require('xhr2') as new () => Xhr;
const noKeepAlive = new http.Agent({ keepAlive: false });
interface Xhr {
  nodejsHttpAgent: http.Agent;
  _onHttpRequestError(req: unknown, err: unknown): void;
  status: number;
  responseText: string;
  getResponseHeader(name: string): string | null;
}
(globalThis as unknown as { XMLHttpRequest: unknown }).XMLHttpRequest = XHR;

// Storing every sample (with archive resets between colliding ones) takes a while on a busy machine.
jest.setTimeout(600_000);

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;
interface StowAnswer {
  status: number;
  body: DicomJson;
  headers: { get(name: string): string | null };
}

const CT = `${SAMPLES}/ct/CT_small.dcm`;
const MR = `${SAMPLES}/mr/MR_small.dcm`;
const H = (p: string) => `${SAMPLES}/hierarchy/${p}`;
/** Small images with UIDs no other sample shares: the "good" neighbours of a malformed part. */
const GOOD_A = H('77654033/CR1/6154');
const GOOD_B = H('98892001/CT2N/6293');

/**
 * Samples the gateway refuses, and why: 'unreadable' (Failure Reason 0xC000, answered 400 alone) or 'invalid'
 * (readable but without the UIDs or image the header needs: 0xA900, answered 409 alone). Every other sample
 * must be stored whole. Orthanc's own STOW refuses the same ones except two it stores: oob-monochrome-65535
 * (declares a 65535x65535 image, carries 256 bytes) and rtstruct_no-file-meta (not Part-10, which
 * application/dicom requires). JPEG2000-embedded-sequence-delimiter and badVR can be read whole and are stored.
 */
const REFUSED: Record<string, 'unreadable' | 'invalid'> = {
  'fragments/HTJ2KLossless_08_RGB_no-patient-study.dcm': 'invalid',
  'fragments/UN_sequence_fragment.dcm': 'unreadable',
  'fragments/priv_SQ_fragment.dcm': 'invalid',
  'malformed/Issue111_no-sop-class.dcm': 'invalid',
  'malformed/Issue196_only-sop-uids.dcm': 'invalid',
  'malformed/MR_truncated.dcm': 'unreadable',
  'malformed/emri_small_jpeg_2k_lossless_too_short.dcm': 'unreadable',
  'malformed/meta_missing_tsyntax.dcm': 'unreadable',
  'malformed/no_meta.dcm': 'unreadable',
  'malformed/oob-monochrome-65535.dcm': 'invalid',
  'malformed/rtplan_truncated.dcm': 'unreadable',
  'rt-sr-seg/rtstruct_no-file-meta.dcm': 'unreadable',
};

const manifest = readFileSync(`${SAMPLES}/MANIFEST.tsv`, 'utf8')
  .trim()
  .split('\n')
  .slice(1)
  .map((line) => {
    const [path, sha256] = line.split('\t');
    return { path, sha256 };
  });

function sha256(b: Uint8Array): string {
  return createHash('sha256').update(b).digest('hex');
}

function toArrayBuffer(b: Buffer): ArrayBuffer {
  return b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
}

/** STOW through dicomweb-client, as OHIF and scripts do; the answer whatever its status. */
async function stowWithClient(root: string, files: Buffer[], studyInstanceUID?: string): Promise<StowAnswer> {
  const client = new api.DICOMwebClient({ url: root, singlepart: false, verbose: false });
  const xhr = new XHR();
  // A fresh connection per request: a pooled one can be closed by the server's keep-alive timeout just as the
  // next upload starts (the test parses large samples between requests), which is a client retry matter.
  xhr.nodejsHttpAgent = noKeepAlive;
  const options: { datasets: ArrayBuffer[]; studyInstanceUID?: string; request: { instance: unknown } } = {
    datasets: files.map(toArrayBuffer),
    request: { instance: xhr },
  };
  if (studyInstanceUID) options.studyInstanceUID = studyInstanceUID;
  let networkError: unknown;
  const onError = xhr._onHttpRequestError.bind(xhr);
  xhr._onHttpRequestError = (req: unknown, err: unknown) => {
    networkError = err;
    return onError(req, err);
  };
  // dicomweb-client rejects on 4xx; the response is on the XHR either way.
  await client.storeInstances(options as Parameters<typeof client.storeInstances>[0]).catch(() => undefined);
  if (xhr.status === 0) throw new Error(`STOW request failed without an answer: ${String(networkError)}`);
  return {
    status: xhr.status,
    body: xhr.responseText ? (JSON.parse(xhr.responseText) as DicomJson) : {},
    headers: { get: (n) => xhr.getResponseHeader(n) },
  };
}

/** A multipart/related body built by hand, for what dicomweb-client cannot send (odd part types, bad framing). */
function multipart(
  parts: Array<{ body: Buffer; type?: string | null }>,
  boundary = 'aperture-test-boundary',
): Buffer {
  const chunks: Buffer[] = [];
  for (const p of parts) {
    const head = p.type === null ? '' : `Content-Type: ${p.type ?? 'application/dicom'}\r\n`;
    chunks.push(Buffer.from(`--${boundary}\r\n${head}\r\n`), p.body, Buffer.from('\r\n'));
  }
  chunks.push(Buffer.from(`--${boundary}--\r\n`));
  return Buffer.concat(chunks);
}
const MULTIPART_TYPE = 'multipart/related; type="application/dicom"; boundary=aperture-test-boundary';

async function stowRaw(
  url: string,
  body: Buffer | ReadableStream<Uint8Array>,
  headers: Record<string, string> = {},
): Promise<{ status: number; text: string; headers: Headers }> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { 'content-type': MULTIPART_TYPE, ...headers },
    body,
    duplex: 'half',
  } as RequestInit);
  return { status: res.status, text: await res.text(), headers: res.headers };
}

function items(ds: DicomJson, tag: string): DicomJson[] {
  return (ds[tag]?.Value ?? []) as DicomJson[];
}
const referenced = (ds: DicomJson) => items(ds, '00081199');
const failedItems = (ds: DicomJson) => items(ds, '00081198');
const sopUidOf = (item: DicomJson) => item['00081155']?.Value?.[0] as string | undefined;
const reasonOf = (item: DicomJson) => item['00081197']?.Value?.[0] as number;

/** The archived bytes of an instance, straight from Orthanc (not through the gateway). */
async function archivedBytes(sopInstanceUid: string): Promise<Buffer | undefined> {
  const { url, auth } = orthancEndpoint();
  const found = (await (
    await fetch(`${url}/tools/lookup`, {
      method: 'POST',
      headers: { authorization: auth },
      body: sopInstanceUid,
    })
  ).json()) as Array<{ ID: string; Type: string }>;
  const id = found.find((f) => f.Type === 'Instance')?.ID;
  if (!id) return undefined;
  const res = await fetch(`${url}/instances/${id}/file`, { headers: { authorization: auth } });
  return Buffer.from(await res.arrayBuffer());
}

function sopUidOfFile(bytes: Buffer): string | undefined {
  try {
    return parsePart10(bytes).sopInstanceUid;
  } catch {
    return undefined;
  }
}

async function projectCounts(gw: TestGateway, projectId: string) {
  const r = await gw.services.db.query<{ instances: number; series: number; studies: number }>(
    `SELECT (SELECT count(*) FROM project_instances WHERE project_id = $1)::int AS instances,
            (SELECT count(*) FROM project_series WHERE project_id = $1)::int AS series,
            (SELECT count(*) FROM project_studies WHERE project_id = $1)::int AS studies`,
    [projectId],
  );
  return r.rows[0];
}

async function freshProjects(gw: TestGateway, ...ids: string[]) {
  for (const id of ids) await ensureProject(gw.services.db, { id, name: id });
}

describe('STOW-RS (PS3.18 §10.5)', () => {
  let gw: TestGateway;
  let alpha: string;
  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await freshProjects(gw, 'alpha', 'beta');
    alpha = `${gw.url}/projects/alpha/dicom-web`;
  });
  afterAll(async () => gw.close());

  describe('every sample, stored through dicomweb-client one at a time', () => {
    it('stores each readable sample byte for byte, and refuses the others alone with a reason', async () => {
      const storedSoFar = new Set<string>();
      const stored: string[] = [];
      const refused: Record<string, number> = {};
      const statuses: Record<string, number> = {};
      for (const { path, sha256: expectedSha } of manifest) {
        const bytes = readFileSync(`${SAMPLES}/${path}`);
        expect(sha256(bytes)).toBe(expectedSha);
        const sop = sopUidOfFile(bytes);
        if (sop && storedSoFar.has(sop)) {
          // Several samples are one SOP instance in different encodings: start from an empty archive for those.
          await resetStack();
          await freshProjects(gw, 'alpha', 'beta');
          storedSoFar.clear();
        }
        const answer = await stowWithClient(alpha, [bytes]).catch((err: Error) => {
          throw new Error(`${path}: ${err.message}`);
        });
        if (answer.status === 200) {
          const refs = referenced(answer.body);
          expect(refs).toHaveLength(1);
          const uid = sopUidOf(refs[0])!;
          expect(uid).toBe(sop);
          const archived = await archivedBytes(uid);
          // The archive holds the object with its preamble zeroed (CVE-2019-11687), otherwise byte for byte.
          expect({ path, sha256: archived && sha256(archived) }).toEqual({
            path,
            sha256: sha256(asArchived(bytes)),
          });
          expect(refs[0]['00081190'].Value?.[0]).toMatch(
            new RegExp(
              `^${gw.url}/projects/alpha/dicom-web/studies/[0-9.]+/series/[0-9.]+/instances/${uid.replace(/\./g, '\\.')}$`,
            ),
          );
          storedSoFar.add(uid);
          stored.push(path);
        } else {
          const failed = failedItems(answer.body);
          expect({ path, status: answer.status, failed: failed.length }).toEqual({
            path,
            status: answer.status,
            failed: 1,
          });
          expect(answer.body['00081199']).toBeUndefined();
          refused[path] = reasonOf(failed[0]);
          statuses[path] = answer.status;
        }
      }
      expect(Object.keys(refused).sort()).toEqual(Object.keys(REFUSED).sort());
      // A bad part alone is bad syntax (400) when unreadable, a conflict (409) when readable but invalid.
      expect(statuses).toEqual(
        Object.fromEntries(Object.entries(REFUSED).map(([p, why]) => [p, why === 'unreadable' ? 400 : 409])),
      );
      expect(stored.length + Object.keys(refused).length).toBe(manifest.length);
      expect(refused).toEqual(
        Object.fromEntries(
          Object.entries(REFUSED).map(([p, why]) => [
            p,
            why === 'unreadable' ? FailureReason.CannotUnderstand : FailureReason.DataSetDoesNotMatchSopClass,
          ]),
        ),
      );
    });
  });

  describe('malformed files among good ones', () => {
    beforeAll(async () => {
      await resetStack();
      await freshProjects(gw, 'alpha', 'beta');
    });

    const malformed = readdirSync(`${SAMPLES}/malformed`).filter((f) => f.endsWith('.dcm'));
    it.each(malformed)('%s is stored whole or fails alone, never failing its neighbours', async (file) => {
      const bad = readFileSync(`${SAMPLES}/malformed/${file}`);
      const answer = await stowWithClient(alpha, [readFileSync(GOOD_A), bad, readFileSync(GOOD_B)]);
      const refs = referenced(answer.body).map(sopUidOf);
      expect(refs).toEqual(
        expect.arrayContaining([sopUidOfFile(readFileSync(GOOD_A)), sopUidOfFile(readFileSync(GOOD_B))]),
      );
      if (REFUSED[`malformed/${file}`]) {
        expect(answer.status).toBe(202);
        expect(refs).toHaveLength(2);
        expect(failedItems(answer.body)).toHaveLength(1);
        expect(reasonOf(failedItems(answer.body)[0])).toBeGreaterThan(0);
        expect(answer.headers.get('warning')).toMatch(/part 2: .*failure reason 0x/);
      } else {
        expect(answer.status).toBe(200);
        expect(refs).toHaveLength(3);
        const archived = await archivedBytes(sopUidOfFile(bad)!);
        expect(archived && sha256(archived)).toBe(sha256(asArchived(bad)));
      }
    });
  });

  describe('request checks', () => {
    beforeAll(async () => {
      await resetStack();
      await freshProjects(gw, 'alpha', 'beta');
    });

    it('refuses an instance of another study than the URL names, with the UIDs it could read (409)', async () => {
      const answer = await stowWithClient(alpha, [readFileSync(CT)], '1.2.3.4.5');
      expect(answer.status).toBe(409);
      const [failed] = failedItems(answer.body);
      expect(reasonOf(failed)).toBe(FailureReason.StudyUidMismatch);
      expect(sopUidOf(failed)).toBe(sopUidOfFile(readFileSync(CT)));
      expect(failed['00081150'].Value).toEqual(['1.2.840.10008.5.1.4.1.1.2']);
      expect(answer.body['00081190'].Value).toEqual([`${alpha}/studies/1.2.3.4.5`]);
      expect(await archivedBytes(sopUidOfFile(readFileSync(CT))!)).toBeUndefined();
    });

    it('stores the matching instances and refuses the others when the URL names a study (202)', async () => {
      const ct = parsePart10(readFileSync(CT));
      const answer = await stowWithClient(alpha, [readFileSync(CT), readFileSync(MR)], ct.studyInstanceUid);
      expect(answer.status).toBe(202);
      expect(referenced(answer.body).map(sopUidOf)).toEqual([ct.sopInstanceUid]);
      expect(failedItems(answer.body).map(reasonOf)).toEqual([FailureReason.StudyUidMismatch]);
    });

    it('treats re-sending the same instance as success and counts it once', async () => {
      const before = await projectCounts(gw, 'alpha');
      const answer = await stowWithClient(alpha, [readFileSync(CT)]);
      expect(answer.status).toBe(200);
      expect(await projectCounts(gw, 'alpha')).toEqual(before);
    });

    it('answers 415 for anything but multipart/related of application/dicom, saying what it accepts', async () => {
      for (const contentType of [
        'application/dicom',
        'multipart/related; type="application/dicom+json"; boundary=aperture-test-boundary',
        'multipart/form-data; boundary=aperture-test-boundary',
      ]) {
        const res = await stowRaw(`${alpha}/studies`, multipart([{ body: readFileSync(GOOD_A) }]), {
          'content-type': contentType,
        });
        expect({ contentType, status: res.status }).toEqual({ contentType, status: 415 });
        expect(res.text).toContain('multipart/related; type=\\"application/dicom\\"');
      }
    });

    it('fails a part of another media type alone (202)', async () => {
      const res = await stowRaw(
        `${alpha}/studies`,
        multipart([
          { body: Buffer.from('{"hello":1}'), type: 'application/json' },
          { body: readFileSync(GOOD_A), type: null },
        ]),
      );
      expect(res.status).toBe(202);
      const body = JSON.parse(res.text) as DicomJson;
      expect(failedItems(body).map(reasonOf)).toEqual([FailureReason.CannotUnderstand]);
      expect(referenced(body)).toHaveLength(1);
      expect(res.headers.get('warning')).toContain('part 1: part media type application/json');
    });

    it('answers 400 for a body that is not multipart at all, and for one without parts', async () => {
      const garbage = await stowRaw(`${alpha}/studies`, Buffer.from('not a multipart body'));
      expect(garbage.status).toBe(400);
      const empty = await stowRaw(`${alpha}/studies`, Buffer.from('--aperture-test-boundary--\r\n'));
      expect(empty.status).toBe(400);
      expect(empty.text).toContain('no parts');
    });

    it('answers in the Native DICOM Model when the client asks for application/dicom+xml', async () => {
      const res = await stowRaw(`${alpha}/studies`, multipart([{ body: readFileSync(GOOD_B) }]), {
        accept: 'application/dicom+xml',
      });
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toMatch(/^application\/dicom\+xml/);
      expect(res.text).toMatch(
        /^<\?xml version="1.0" encoding="UTF-8"\?>\n<NativeDicomModel xmlns="http:\/\/dicom.nema.org\/PS3.19\/models\/NativeDICOM"/,
      );
      const sop = sopUidOfFile(readFileSync(GOOD_B))!;
      expect(res.text).toContain(
        `<DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID"><Value number="1">${sop}</Value></DicomAttribute>`,
      );
      expect(res.text).toContain(
        '<DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence"><Item number="1">',
      );
    });

    it('answers 406 before storing anything when no answer format is acceptable', async () => {
      const res = await stowRaw(`${alpha}/studies`, multipart([{ body: readFileSync(GOOD_A) }]), {
        accept: 'image/png',
      });
      expect(res.status).toBe(406);
    });

    it('answers 405 at the read-only union root, naming the methods it allows', async () => {
      const res = await stowRaw(`${gw.url}/dicom-web/studies`, multipart([{ body: readFileSync(MR) }]));
      expect(res.status).toBe(405);
      // GET and HEAD: what that root answers (issue 12, deviation 6).
      expect(res.headers.get('allow')).toBe('GET, HEAD');
      expect(res.text).toContain('read-only');
      expect(await archivedBytes(sopUidOfFile(readFileSync(MR))!)).toBeUndefined();
    });

    it('answers 404 for a project that does not exist', async () => {
      const res = await stowRaw(
        `${gw.url}/projects/no-such-project/dicom-web/studies`,
        multipart([{ body: readFileSync(MR) }]),
      );
      expect(res.status).toBe(404);
    });
  });

  describe('projects that share UIDs', () => {
    beforeAll(async () => {
      await resetStack();
      await freshProjects(gw, 'alpha', 'beta');
    });

    it('refuses different bytes under a SOP Instance UID another project holds (0x0111) and grants nothing', async () => {
      const beta = await stowWithClient(`${gw.url}/projects/beta/dicom-web`, [readFileSync(MR)]);
      expect(beta.status).toBe(200);
      // MR_small_implicit.dcm is the same SOP instance, encoded differently.
      const answer = await stowWithClient(alpha, [readFileSync(`${SAMPLES}/mr/MR_small_implicit.dcm`)]);
      expect(answer.status).toBe(409);
      expect(failedItems(answer.body).map(reasonOf)).toEqual([FailureReason.DuplicateSopInstance]);
      expect(await projectCounts(gw, 'alpha')).toEqual({ instances: 0, series: 0, studies: 0 });
      const archived = await archivedBytes(sopUidOfFile(readFileSync(MR))!);
      expect(archived && sha256(archived)).toBe(sha256(asArchived(readFileSync(MR))));
    });

    it("storing into a study another project holds shows only the caller's own instance", async () => {
      const study = readdirSync(H('98892003/MR2')).map((f) => H(`98892003/MR2/${f}`));
      const mr700 = readdirSync(H('98892003/MR700')).map((f) => H(`98892003/MR700/${f}`));
      const shared = [...study, ...mr700].filter(
        (f) =>
          parsePart10(readFileSync(f)).studyInstanceUid ===
          parsePart10(readFileSync(H('98892003/MR1/5641'))).studyInstanceUid,
      );
      expect(shared.length).toBeGreaterThan(3);
      const betaBefore = (await projectCounts(gw, 'beta')).instances;
      const beta = await stowWithClient(
        `${gw.url}/projects/beta/dicom-web`,
        shared.map((f) => readFileSync(f)),
      );
      expect(beta.status).toBe(200);

      const own = parsePart10(readFileSync(H('98892003/MR1/5641')));
      const answer = await stowWithClient(
        alpha,
        [readFileSync(H('98892003/MR1/5641'))],
        own.studyInstanceUid,
      );
      expect(answer.status).toBe(200);

      const seen = await gw.services.db.query<{ sop_instance_uid: string }>(
        'SELECT sop_instance_uid FROM project_instances WHERE project_id = $1 AND study_uid = $2',
        [`alpha`, own.studyInstanceUid],
      );
      expect(seen.rows.map((r) => r.sop_instance_uid)).toEqual([own.sopInstanceUid]);
      const series = await gw.services.db.query<{ series_uid: string; num_instances: number }>(
        'SELECT series_uid, num_instances FROM project_series WHERE project_id = $1',
        ['alpha'],
      );
      expect(series.rows).toEqual([{ series_uid: own.seriesInstanceUid, num_instances: 1 }]);
      const studyRow = await gw.services.db.query(
        'SELECT num_series, num_instances FROM project_studies WHERE project_id = $1 AND study_uid = $2',
        ['alpha', own.studyInstanceUid],
      );
      expect(studyRow.rows).toEqual([{ num_series: 1, num_instances: 1 }]);
      expect((await projectCounts(gw, 'beta')).instances).toBe(betaBefore + shared.length);
    });
  });
});

// Gateways in one process share the database pool and archive client, so each block below starts its own
// after the previous block has closed its gateway.
describe('STOW-RS limits', () => {
  let tiny: TestGateway;
  let narrow: TestGateway;
  beforeAll(async () => {
    await resetStack();
    tiny = await startGateway({
      STOW_MAX_PARTS: '2',
      STOW_MAX_PART_BYTES: '5000',
      STOW_MAX_REQUEST_BYTES: '9000',
    });
    narrow = await startGateway({ STOW_MAX_REQUEST_BYTES: '6000' });
    await freshProjects(tiny, 'alpha');
  });
  afterAll(async () => {
    await tiny.close();
    await narrow.close();
  });

  const small = () =>
    [H('98892003/MR2/4950'), H('98892003/MR2/4981'), H('98892003/MR2/5011')].map((f) => readFileSync(f));

  it('answers 413 past STOW_MAX_PARTS, listing and keeping the parts before it', async () => {
    const files = small();
    const answer = await stowWithClient(`${tiny.url}/projects/alpha/dicom-web`, files);
    expect(answer.status).toBe(413);
    expect(answer.headers.get('warning')).toContain('STOW_MAX_PARTS');
    const refs = referenced(answer.body).map(sopUidOf);
    expect(refs).toEqual(files.slice(0, 2).map(sopUidOfFile));
    for (const f of files.slice(0, 2))
      expect(sha256((await archivedBytes(sopUidOfFile(f)!))!)).toBe(sha256(asArchived(f)));
    expect(await archivedBytes(sopUidOfFile(files[2])!)).toBeUndefined();
    expect((await projectCounts(tiny, 'alpha')).instances).toBe(2);
  });

  it('answers a plain 413 when the first part is already too large, storing nothing', async () => {
    const res = await stowRaw(
      `${tiny.url}/projects/alpha/dicom-web/studies`,
      multipart([{ body: Buffer.alloc(6000) }]),
    );
    expect(res.status).toBe(413);
    expect(JSON.parse(res.text)).toEqual({
      errors: [{ code: 'payload_too_large', message: expect.stringContaining('STOW_MAX_PART_BYTES') }],
    });
    expect((await projectCounts(tiny, 'alpha')).instances).toBe(2);
  });

  it('answers 413 past STOW_MAX_REQUEST_BYTES on a chunked body, keeping what came before', async () => {
    const [a, b] = [readFileSync(H('98892003/MR700/4467')), readFileSync(H('98892003/MR700/4528'))];
    const body = multipart([{ body: a }, { body: b }, { body: readFileSync(GOOD_A) }]);
    // No Content-Length: the limit can only be found while reading.
    // Sent in slow 1000-byte chunks so that the parts before the limit arrive (and are stored) before it is hit.
    let offset = 0;
    const stream = new ReadableStream<Uint8Array>({
      async pull(controller) {
        await new Promise((r) => setTimeout(r, 50));
        controller.enqueue(body.subarray(offset, offset + 1000));
        offset += 1000;
        if (offset >= body.length) controller.close();
      },
    });
    const res = await stowRaw(`${narrow.url}/projects/alpha/dicom-web/studies`, stream);
    expect(res.status).toBe(413);
    expect(res.headers.get('warning')).toContain('STOW_MAX_REQUEST_BYTES');
    const refs = referenced(JSON.parse(res.text) as DicomJson).map(sopUidOf);
    expect(refs).toEqual([sopUidOfFile(a), sopUidOfFile(b)]);
    expect(await archivedBytes(sopUidOfFile(readFileSync(GOOD_A))!)).toBeUndefined();
  });

  it('answers 413 at once when Content-Length already exceeds STOW_MAX_REQUEST_BYTES', async () => {
    const res = await stowRaw(
      `${tiny.url}/projects/alpha/dicom-web/studies`,
      multipart([{ body: Buffer.alloc(10000) }]),
    );
    expect(res.status).toBe(413);
  });
});

describe('STOW-RS and a client that goes away mid-upload', () => {
  let spool: string;
  let gw2: TestGateway;
  const savedTmp = process.env.TMPDIR;
  beforeAll(async () => {
    await resetStack();
    spool = mkdtempSync(join(tmpdir(), 'stow-spool-'));
    process.env.TMPDIR = spool; // large parts spill here (os.tmpdir() reads TMPDIR)
    gw2 = await startGateway({ STOW_SPOOL_BYTES: '1024' });
    await freshProjects(gw2, 'alpha');
  });
  afterAll(async () => {
    process.env.TMPDIR = savedTmp;
    await gw2.close();
    rmSync(spool, { recursive: true, force: true });
  });

  it('keeps the parts it fully received, and leaves no spooled data behind', async () => {
    const first = readFileSync(GOOD_A);
    const second = readFileSync(CT);
    const url = new URL(`${gw2.url}/projects/alpha/dicom-web/studies`);
    const req = http.request({
      host: url.hostname,
      port: url.port,
      path: url.pathname,
      method: 'POST',
      headers: { 'content-type': MULTIPART_TYPE, 'transfer-encoding': 'chunked' },
    });
    req.on('error', () => undefined);
    const full = multipart([{ body: first }, { body: second }]);
    // The first part, and half of the second: the delimiter after the first part completes it.
    req.write(full.subarray(0, full.indexOf(second) + second.length / 2));

    const firstUid = sopUidOfFile(first)!;
    const deadline = Date.now() + 20_000;
    while (Date.now() < deadline) {
      const r = await gw2.services.db.query('SELECT 1 FROM project_instances WHERE sop_instance_uid = $1', [
        firstUid,
      ]);
      if (r.rowCount) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    req.destroy();

    // The handler must finish on its own: the next request is answered and the spool is emptied.
    const next = await stowWithClient(`${gw2.url}/projects/alpha/dicom-web`, [readFileSync(GOOD_B)]);
    expect(next.status).toBe(200);
    const until = Date.now() + 10_000;
    while (readdirSync(spool).length > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 100));
    expect(readdirSync(spool)).toEqual([]);
    expect(sha256((await archivedBytes(firstUid))!)).toBe(sha256(first));
    expect(await archivedBytes(sopUidOfFile(second)!)).toBeUndefined();
  });
});
