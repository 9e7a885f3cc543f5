import { readFileSync } from 'node:fs';
import { parsePart10 } from '../src/dicom/parse';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/*
 * PS3.18 conformance deviations 3 to 7 of issue 12, as an outside DICOMweb client sees them: private attributes
 * as return and matching keys, Content-Location on frame parts, UIDs in failed SOP items, the methods the
 * read-only root allows, and unknown query parameters ignored with a warning.
 */

jest.setTimeout(300_000);

type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

const CT = `${SAMPLES}/ct/CT_small.dcm`; // GE private tags: (0009,1001) LO "GE_GENESIS_FF"
const US = `${SAMPLES}/us/OBXXXX1A_rle_2frame_palette.dcm`; // 2 frames, RLE
const ONLY_SOP_UIDS = `${SAMPLES}/malformed/Issue196_only-sop-uids.dcm`; // no Study/Series Instance UID
const HUGE_IMAGE = `${SAMPLES}/malformed/oob-monochrome-65535.dcm`; // structurally sound, absurd declared size
const TRUNCATED = `${SAMPLES}/malformed/MR_truncated.dcm`; // cut in its Pixel Data; the same instance as MR_small
const NO_META = `${SAMPLES}/malformed/no_meta.dcm`; // not Part 10 at all: nothing can be read

let gw: TestGateway;
const ct = parsePart10(readFileSync(CT));
const us = parsePart10(readFileSync(US));
const mr = parsePart10(readFileSync(`${SAMPLES}/mr/MR_small.dcm`));

async function get(path: string, init: RequestInit = {}) {
  const r = await fetch(gw.url + path, init);
  const body = Buffer.from(await r.arrayBuffer());
  const text = body.toString('utf8');
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    json = undefined;
  }
  return { status: r.status, headers: r.headers, body, text, json };
}

beforeAll(async () => {
  await resetStack();
  gw = await startGateway();
  await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
  for (const f of [CT, US]) {
    const out = await ingestInstance(gw.services, readFileSync(f), ['alpha'], 'stow');
    if (!out.ok) throw new Error(`could not load ${f}: ${out.message}`);
  }
});
afterAll(async () => gw?.close());

describe('deviation 3: private attributes as QIDO-RS keys', () => {
  it('returns a private attribute named by includefield from the stored DICOM JSON', async () => {
    const a = await get(`/dicom-web/instances?SOPInstanceUID=${ct.sopInstanceUid}&includefield=00091001`);
    expect(a.status).toBe(200);
    const [hit] = a.json as DicomJson[];
    expect(hit['00091001']).toEqual({ vr: 'LO', Value: ['GE_GENESIS_FF'] });
    // The private creator is not asked for, so it is not returned.
    expect(hit['00090010']).toBeUndefined();
  });

  it('matches a private attribute at instance level, on the stored DICOM JSON', async () => {
    const yes = await get('/dicom-web/instances?00091001=GE_GENESIS_FF');
    expect(yes.status).toBe(200);
    expect((yes.json as DicomJson[]).map((r) => r['00080018']?.Value?.[0])).toEqual([ct.sopInstanceUid]);
    expect((yes.json as DicomJson[])[0]['00091001']?.Value).toEqual(['GE_GENESIS_FF']);
    const wild = await get('/dicom-web/instances?00091001=GE_GEN*');
    expect((wild.json as DicomJson[]).map((r) => r['00080018']?.Value?.[0])).toEqual([ct.sopInstanceUid]);
    const no = await get('/dicom-web/instances?00091001=SOMETHING_ELSE');
    expect(no.status).toBe(200);
    expect(no.json).toEqual([]);
    expect(no.headers.get('warning')).toBeNull();
  });

  it('ignores a private matching key at study level, saying so in Warning: 299', async () => {
    const a = await get('/dicom-web/studies?00091001=SOMETHING_ELSE');
    expect(a.status).toBe(200);
    expect((a.json as DicomJson[]).length).toBe(2);
    expect(a.headers.get('warning')).toMatch(/^299 .*00091001/);
  });

  it('ignores a private includefield at study level, saying so in Warning: 299', async () => {
    const a = await get('/dicom-web/studies?includefield=00091001');
    expect(a.status).toBe(200);
    expect((a.json as DicomJson[]).length).toBe(2);
    expect(a.headers.get('warning')).toMatch(/^299 .*00091001/);
  });
});

describe('deviation 4: Content-Location on the parts of Retrieve Frames (PS3.18 §8.6.1.2)', () => {
  it.each(['/dicom-web', '/projects/alpha/dicom-web'])(
    'gives each frame part its own URL on the root asked (%s)',
    async (root) => {
      const path =
        `${root}/studies/${us.studyInstanceUid}/series/${us.seriesInstanceUid}` +
        `/instances/${us.sopInstanceUid}/frames`;
      const a = await get(`${path}/2,1`, {
        headers: { accept: 'multipart/related; type="application/octet-stream"' },
      });
      expect(a.status).toBe(200);
      const parts = multipartParts(a.headers.get('content-type') ?? '', a.body);
      expect(parts.map((p) => p.headers['content-location'])).toEqual([
        `${gw.url}${path}/2`,
        `${gw.url}${path}/1`,
      ]);
    },
  );
});

describe('deviation 5: Referenced SOP Class / Instance UID in failed SOP items', () => {
  const stow = (file: string) =>
    get('/projects/alpha/dicom-web/studies', {
      method: 'POST',
      headers: {
        'content-type': 'multipart/related; type="application/dicom"; boundary=b0undary',
        accept: 'application/dicom+json',
      },
      body: Buffer.concat([
        Buffer.from('--b0undary\r\nContent-Type: application/dicom\r\n\r\n'),
        readFileSync(file),
        Buffer.from('\r\n--b0undary--\r\n'),
      ]),
    });
  const failed = (json: unknown) => ((json as DicomJson)['00081198']?.Value ?? []) as DicomJson[];

  it('names the SOP instance when the walker read its UIDs but the object is refused (no Study UID)', async () => {
    const a = await stow(ONLY_SOP_UIDS);
    const [item] = failed(a.json);
    expect(item['00081197']?.Value?.[0]).toBe(0xa900);
    expect(item['00081150']).toEqual({ vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.4'] });
    expect(item['00081155']).toEqual({
      vr: 'UI',
      Value: ['1.2.840.113619.2.176.2025.1499492.7040.1171286242.109'],
    });
  });

  it('names the SOP instance of an object refused for its declared image size', async () => {
    const a = await stow(HUGE_IMAGE);
    const [item] = failed(a.json);
    expect(item['00081150']?.Value).toEqual(['1.2.840.10008.5.1.4.1.1.7']);
    expect(item['00081155']?.Value).toEqual([
      '1.2.826.0.1.3680043.8.498.55648401001252486519334805326686688943',
    ]);
  });

  it('names the SOP instance of an object truncated after its UIDs (the structural walk read them)', async () => {
    const a = await stow(TRUNCATED);
    const [item] = failed(a.json);
    expect(item['00081197']?.Value?.[0]).toBe(0xc000);
    expect(item['00081150']?.Value).toEqual([mr.sopClassUid]);
    expect(item['00081155']?.Value).toEqual([mr.sopInstanceUid]);
  });

  it('answers Failure Reason alone for bytes that name no instance at all', async () => {
    const a = await stow(NO_META);
    expect(a.status).toBe(400);
    const [item] = failed(a.json);
    expect(Object.keys(item)).toEqual(['00081197']);
    expect(item['00081197']?.Value?.[0]).toBe(0xc000);
  });
});

describe('deviation 6: the read-only /dicom-web root allows only what it answers', () => {
  it('answers OPTIONS without POST', async () => {
    for (const path of ['/dicom-web/studies', `/dicom-web/studies/${ct.studyInstanceUid}`]) {
      const a = await get(path, { method: 'OPTIONS' });
      expect(a.status).toBeLessThan(300);
      expect(a.headers.get('allow')).toBe('GET, HEAD');
    }
    // The scoped root does take STOW.
    const scoped = await get('/projects/alpha/dicom-web/studies', { method: 'OPTIONS' });
    expect(scoped.headers.get('allow')).toContain('POST');
  });

  it('answers POST and PUT with 405 naming only GET and HEAD', async () => {
    for (const method of ['POST', 'PUT', 'DELETE']) {
      const a = await get('/dicom-web/studies', {
        method,
        headers: { 'content-type': 'application/json' },
        body: '{}',
      });
      expect(a.status).toBe(405);
      expect(a.headers.get('allow')).toBe('GET, HEAD');
    }
  });
});

describe('deviation 7: unknown query parameters are ignored with Warning: 299', () => {
  it('answers a search with an unknown parameter as if it were absent, naming it in the warning', async () => {
    const plain = await get('/dicom-web/studies');
    const a = await get('/dicom-web/studies?FooBarKey=1');
    expect(a.status).toBe(200);
    expect(a.json).toEqual(plain.json);
    expect(a.headers.get('warning')).toMatch(/^299 aperture ".*FooBarKey/);
  });

  it('ignores an unknown includefield name and an unknown attribute in a sequence path', async () => {
    const a = await get('/dicom-web/studies?includefield=NoSuchThing&RequestAttributesSequence.NoSuchItem=1');
    expect(a.status).toBe(200);
    expect((a.json as DicomJson[]).length).toBe(2);
    expect(a.headers.get('warning')).toContain('NoSuchThing');
    expect(a.headers.get('warning')).toContain('RequestAttributesSequence.NoSuchItem');
  });

  it('names unknown parameters safely in the header, whatever characters they hold', async () => {
    const a = await get('/dicom-web/studies?Foo%0D%0ASet-Cookie%3Ax=1&%E2%82%AC%22Bar=2');
    expect(a.status).toBe(200);
    const warning = a.headers.get('warning') ?? '';
    expect(warning).toMatch(/^299 aperture "[\x20-\x7e]*"$/);
    expect(warning).toContain('Foo??Set-Cookie:x');
    expect(a.headers.get('set-cookie')).toBeNull();
  });

  it('still refuses malformed values of known keys and NUL bytes', async () => {
    expect((await get('/dicom-web/studies?StudyDate=2001-01-01')).status).toBe(400);
    expect((await get('/dicom-web/studies?FooBarKey=a%00b')).status).toBe(400);
    expect((await get('/dicom-web/studies?Foo%00Bar=1')).status).toBe(400);
  });
});

/** Splits a multipart/related body into its parts (headers and bytes), by the boundary in its Content-Type. */
function multipartParts(
  contentType: string,
  body: Buffer,
): Array<{ headers: Record<string, string>; body: Buffer }> {
  const boundary = /boundary="?([^";]+)"?/.exec(contentType)?.[1];
  if (!boundary) throw new Error(`no boundary in ${contentType}`);
  const delim = Buffer.from(`--${boundary}`);
  const out: Array<{ headers: Record<string, string>; body: Buffer }> = [];
  let at = body.indexOf(delim);
  for (;;) {
    const next = body.indexOf(delim, at + delim.length);
    if (next === -1) break;
    const part = body.subarray(at + delim.length + 2, next - 2);
    const headEnd = part.indexOf('\r\n\r\n');
    const headers: Record<string, string> = {};
    for (const line of part.subarray(0, headEnd).toString('latin1').split('\r\n')) {
      const i = line.indexOf(':');
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    out.push({ headers, body: part.subarray(headEnd + 4) });
    at = next;
  }
  return out;
}
