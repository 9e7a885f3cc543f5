import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import dcmjs from 'dcmjs';
import { parsePart10 } from '../src/dicom/parse';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/*
 * PS3.18 conformance deviations 1 and 3 to 7 of issue 12, as an outside DICOMweb client sees them: private attributes
 * as return and matching keys, Content-Location on frame parts, UIDs in failed SOP items, the methods the
 * read-only root allows, unknown query parameters ignored with a warning, and (last, on samples of its own so that the
 * counts above hold) Explicit VR Little Endian as the default transfer syntax of instance retrieval.
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

describe('deviation 1: Explicit VR Little Endian unless transfer-syntax=* (PS3.18 §8.7.3)', () => {
  const ELE = '1.2.840.10008.1.2.1';
  const JPEG = `${SAMPLES}/sc/SC_rgb_dcmtk_jpeg-baseline-ybr.dcm`; // JPEG Baseline, YBR_FULL, 100x100
  const J2K = `${SAMPLES}/mr/MR_small_jp2klossless.dcm`; // JPEG 2000 Lossless; the same pixels as MR_small.dcm
  const MULTI = `${SAMPLES}/us/examples_ybr_color_multiframe-jpeg.dcm`; // JPEG Baseline, 30 frames
  const jpeg = parsePart10(readFileSync(JPEG));
  const j2k = parsePart10(readFileSync(J2K));
  const multi = parsePart10(readFileSync(MULTI));
  const seriesUrl = (p: typeof jpeg) =>
    `/dicom-web/studies/${p.studyInstanceUid}/series/${p.seriesInstanceUid}`;
  const instanceUrl = (p: typeof jpeg) => `${seriesUrl(p)}/instances/${p.sopInstanceUid}`;

  beforeAll(async () => {
    for (const f of [JPEG, J2K, MULTI]) {
      const out = await ingestInstance(gw.services, readFileSync(f), ['alpha'], 'stow');
      if (!out.ok) throw new Error(`could not load ${f}: ${out.message}`);
    }
  });

  /** The one part of a multipart answer, or the body of a single-part one. */
  function onlyObject(a: Awaited<ReturnType<typeof get>>): { contentType: string; body: Buffer } {
    const ct = a.headers.get('content-type') ?? '';
    if (!ct.startsWith('multipart/related')) return { contentType: ct, body: a.body };
    const parts = multipartParts(ct, a.body);
    expect(parts).toHaveLength(1);
    return { contentType: parts[0].headers['content-type'], body: parts[0].body };
  }

  /** What DCMTK's dcmdump reads in a file: its transfer syntax and photometric, or the failure. */
  function dcmdump(body: Buffer): { ok: boolean; text: string } {
    const dir = mkdtempSync(path.join(tmpdir(), 'conf-'));
    try {
      const file = path.join(dir, 'x.dcm');
      writeFileSync(file, body);
      const r = spawnSync('dcmdump', ['-E', file], { encoding: 'latin1' });
      return { ok: r.status === 0 && !/^E:/m.test(r.stderr), text: r.stdout + r.stderr };
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  }

  function pixelsOf(body: Buffer): { ts: string; photometric: string; planar?: number; pixels: Buffer } {
    const ab = body.buffer.slice(body.byteOffset, body.byteOffset + body.byteLength);
    const d = dcmjs.data.DicomMessage.readFile(ab as ArrayBuffer);
    const px = d.dict['7FE00010'].Value as ArrayBuffer[];
    return {
      ts: String(d.meta['00020010'].Value?.[0]),
      photometric: String(d.dict['00280004'].Value?.[0]),
      planar: d.dict['00280006']?.Value?.[0] as number | undefined,
      pixels: Buffer.concat(px.map((b) => Buffer.from(b))),
    };
  }

  /** The in-process decode of the given frames, as Retrieve Frames serves it by default. */
  async function decodedFrames(p: typeof jpeg, frames: string): Promise<Buffer> {
    const a = await get(`${instanceUrl(p)}/frames/${frames}`);
    expect(a.status).toBe(200);
    const parts = multipartParts(a.headers.get('content-type') ?? '', a.body);
    for (const part of parts) expect(part.headers['content-type']).toContain(`transfer-syntax=${ELE}`);
    return Buffer.concat(parts.map((part) => part.body));
  }

  it.each([
    ['no Accept', undefined],
    ['multipart/related alone', 'multipart/related'],
    ['type="application/dicom" without transfer-syntax', 'multipart/related; type="application/dicom"'],
    ['application/dicom (single part)', 'application/dicom'],
    ['*/*', '*/*'],
  ])(
    'answers a JPEG Baseline instance in Explicit VR LE for %s, decoded as Retrieve Frames decodes',
    async (_, accept) => {
      const a = await get(instanceUrl(jpeg), accept ? { headers: { accept } } : {});
      expect(a.status).toBe(200);
      const obj = onlyObject(a);
      expect(obj.contentType).toBe(`application/dicom; transfer-syntax=${ELE}`);
      const dump = dcmdump(obj.body);
      expect(dump.ok ? '' : dump.text.slice(0, 2000)).toBe('');
      expect(/\(0002,0010\) UI =LittleEndianExplicit/.test(dump.text)).toBe(true);
      const got = pixelsOf(obj.body);
      expect(got.ts).toBe(ELE);
      // The decoder undoes the YCbCr transform, so the rewritten data set must say RGB, pixel-interleaved.
      expect(got.photometric).toBe('RGB');
      expect(got.planar ?? 0).toBe(0);
      expect(got.pixels.length).toBe(100 * 100 * 3);
      expect(got.pixels.equals(await decodedFrames(jpeg, '1'))).toBe(true);
    },
  );

  it('answers a JPEG 2000 instance (which the archive cannot decode) in Explicit VR LE with the lossless pixels', async () => {
    const a = await get(instanceUrl(j2k));
    expect(a.status).toBe(200);
    const obj = onlyObject(a);
    expect(obj.contentType).toBe(`application/dicom; transfer-syntax=${ELE}`);
    const dump = dcmdump(obj.body);
    expect(dump.ok ? '' : dump.text.slice(0, 2000)).toBe('');
    const got = pixelsOf(obj.body);
    expect(got.ts).toBe(ELE);
    expect(got.pixels.equals(await decodedFrames(j2k, '1'))).toBe(true);
    // Lossless: the very pixels of the native original of the same instance.
    expect(got.pixels.equals(pixelsOf(readFileSync(`${SAMPLES}/mr/MR_small.dcm`)).pixels)).toBe(true);
    // Everything but the pixels and the File Meta is the stored data set.
    const d = dcmjs.data.DicomMessage.readFile(obj.body.buffer.slice(obj.body.byteOffset) as ArrayBuffer);
    expect(d.dict['00080018'].Value).toEqual([j2k.sopInstanceUid]);
    expect(d.meta['00020003'].Value).toEqual([j2k.sopInstanceUid]);
  });

  it('decodes every frame of a multi-frame instance in order', async () => {
    const a = await get(instanceUrl(multi), {
      headers: { accept: 'multipart/related; type="application/dicom"' },
    });
    expect(a.status).toBe(200);
    const obj = onlyObject(a);
    expect(obj.contentType).toBe(`application/dicom; transfer-syntax=${ELE}`);
    expect(a.headers.get('content-type')).toMatch(/^multipart\/related/);
    const dump = dcmdump(obj.body);
    expect(dump.ok ? '' : dump.text.slice(0, 2000)).toBe('');
    const got = pixelsOf(obj.body);
    const frame = 240 * 320 * 3;
    expect(got.pixels.length).toBe(30 * frame);
    const [first, last] = [await decodedFrames(multi, '1'), await decodedFrames(multi, '30')];
    expect(got.pixels.subarray(0, frame).equals(first)).toBe(true);
    expect(got.pixels.subarray(29 * frame).equals(last)).toBe(true);
  });

  it.each([
    ['RLE, palette colour, 2 frames', 'us/OBXXXX1A_rle_2frame_palette.dcm', 2, false],
    ['RLE, RGB, 2 frames', 'sc/SC_rgb_rle_2frame.dcm', 2, true],
    ['JPEG Lossless SV1, 16-bit', 'ct/CT-MONO2-16-chest_jpeg-lossless-sv1.dcm', 1, true],
    ['JPEG Lossless P14, 12-bit', 'mr/MR-MONO2-12-shoulder_jpeg-lossless-p14.dcm', 1, true],
    ['JPEG-LS near-lossless', 'ct/CT2_JLSN_jpegls-near.dcm', 1, true],
  ])(
    'rewrites %s to Explicit VR LE holding the frames Retrieve Frames decodes',
    async (_, file, frames, load) => {
      const bytes = readFileSync(`${SAMPLES}/${file}`);
      if (load) {
        const out = await ingestInstance(gw.services, bytes, ['alpha'], 'stow');
        expect(out.ok).toBe(true);
      }
      const p = parsePart10(bytes);
      const a = await get(instanceUrl(p));
      expect(a.status).toBe(200);
      const obj = onlyObject(a);
      expect(obj.contentType).toBe(`application/dicom; transfer-syntax=${ELE}`);
      const dump = dcmdump(obj.body);
      expect(dump.ok ? '' : dump.text.slice(0, 2000)).toBe('');
      const got = pixelsOf(obj.body);
      expect(got.ts).toBe(ELE);
      const list = Array.from({ length: frames }, (_, k) => k + 1).join(',');
      const expected = await decodedFrames(p, list);
      expect(expected.length).toBeGreaterThan(0);
      expect(got.pixels.equals(expected)).toBe(true);
    },
  );

  it('answers each instance of a series in Explicit VR LE by default', async () => {
    const a = await get(seriesUrl(jpeg));
    expect(a.status).toBe(200);
    const parts = multipartParts(a.headers.get('content-type') ?? '', a.body);
    expect(parts.length).toBeGreaterThan(0);
    for (const part of parts) {
      expect(part.headers['content-type']).toBe(`application/dicom; transfer-syntax=${ELE}`);
      expect(pixelsOf(part.body).ts).toBe(ELE);
    }
  });

  it.each([
    ['JPEG Baseline', JPEG, '1.2.840.10008.1.2.4.50'],
    ['JPEG 2000 Lossless', J2K, '1.2.840.10008.1.2.4.90'],
  ])('answers the stored bytes of a %s instance for transfer-syntax=*', async (_, file, stored) => {
    const p = parsePart10(readFileSync(file));
    const a = await get(instanceUrl(p), {
      headers: { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' },
    });
    expect(a.status).toBe(200);
    const obj = onlyObject(a);
    expect(obj.contentType).toBe(`application/dicom; transfer-syntax=${stored}`);
    const [inst] = await gw.services.db
      .query<{ orthanc_id: string }>('SELECT orthanc_id FROM instances WHERE sop_instance_uid = $1', [
        p.sopInstanceUid,
      ])
      .then((r) => r.rows);
    const archived = await gw.services.archive.openInstance(inst.orthanc_id);
    const chunks: Buffer[] = [];
    for await (const c of archived.body) chunks.push(c as Buffer);
    expect(obj.body.equals(Buffer.concat(chunks))).toBe(true);
  });

  it('decodes a 12-bit JPEG (Extended, process 4) to Explicit VR Little Endian with the samples DCMTK decodes', async () => {
    const file = `${SAMPLES}/mr/MR1_JPLY_jpeg-extended-12bit.dcm`;
    const out = await ingestInstance(gw.services, readFileSync(file), ['alpha'], 'stow');
    expect(out.ok).toBe(true);
    const p = parsePart10(readFileSync(file));
    const a = await get(instanceUrl(p));
    expect(a.status).toBe(200);
    const obj = onlyObject(a);
    expect(obj.contentType).toBe(`application/dicom; transfer-syntax=${ELE}`);
    const dump = dcmdump(obj.body);
    expect(dump.ok ? '' : dump.text.slice(0, 2000)).toBe('');
    const ours = pixelsOf(obj.body);
    expect(ours.ts).toBe(ELE);
    // DCMTK's own decompressor, a peer of another code base, on the original file.
    const dir = mkdtempSync(path.join(tmpdir(), 'conf-jply-'));
    try {
      const ref = path.join(dir, 'ref.dcm');
      const run = spawnSync('dcmdjpeg', [file, ref], { encoding: 'utf8' });
      expect(run.status).toBe(0);
      expect(ours.pixels.equals(pixelsOf(readFileSync(ref)).pixels)).toBe(true);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  it('still answers the stored syntax when it is asked for by name', async () => {
    const a = await get(instanceUrl(jpeg), {
      headers: {
        accept: 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50',
      },
    });
    expect(a.status).toBe(200);
    expect(onlyObject(a).contentType).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50');
  });
});
