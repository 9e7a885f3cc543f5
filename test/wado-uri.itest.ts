import dcmjs from 'dcmjs';
import { readFileSync } from 'node:fs';
import sharp from 'sharp';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

/** UIDs of an ingested sample and its WADO-URI query. */
interface Stored {
  q: string;
}

async function store(gw: TestGateway, bytes: Buffer, projects: string[]): Promise<Stored> {
  const out = await ingestInstance(gw.services, bytes, projects, 'stow');
  if (!out.ok) throw new Error(`ingest failed: ${out.message}`);
  const { studyInstanceUid: st, seriesInstanceUid: se, sopInstanceUid: sop } = out.parsed;
  return { q: `requestType=WADO&studyUID=${st}&seriesUID=${se}&objectUID=${sop}` };
}

const sample = (path: string) => readFileSync(`${SAMPLES}/${path}`);

/** Decoded pixels of an answered image, one channel for grey images. */
async function pixels(
  body: Buffer,
): Promise<{ data: Buffer; width: number; height: number; channels: number }> {
  const meta = await sharp(body).metadata();
  const grey = meta.channels === 1 || (meta.format === 'gif' && (await sharp(body).stats()).isOpaque);
  const img = sharp(body).removeAlpha();
  const { data, info } = await (grey && meta.channels !== 3 ? img.toColourspace('b-w') : img)
    .raw()
    .toBuffer({ resolveWithObject: true });
  return { data, width: info.width, height: info.height, channels: info.channels };
}

/** Stored values and rescale of a single-frame 16-bit grey Part-10 file, read with dcmjs. */
function modalityValues(bytes: Buffer): { values: number[]; dict: Record<string, { Value?: unknown[] }> } {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length);
  const { dict } = dcmjs.data.DicomMessage.readFile(ab as ArrayBuffer);
  const pd = Buffer.from(dict['7FE00010'].Value?.[0] as ArrayBuffer);
  const signed = dict['00280103']?.Value?.[0] === 1;
  const n = Number(dict['00280010'].Value?.[0]) * Number(dict['00280011'].Value?.[0]);
  const raw = signed
    ? new Int16Array(pd.buffer, pd.byteOffset, n)
    : new Uint16Array(pd.buffer, pd.byteOffset, n);
  const slope = Number(dict['00281053']?.Value?.[0] ?? 1);
  const intercept = Number(dict['00281052']?.Value?.[0] ?? 0);
  return { values: Array.from(raw, (v) => v * slope + intercept), dict };
}

/** Independent statement of the linear VOI function (PS3.3 C.11.2.1.2.1). */
function linearWindow(x: number, c: number, w: number): number {
  if (x <= c - 0.5 - (w - 1) / 2) return 0;
  if (x > c - 0.5 + (w - 1) / 2) return 255;
  return Math.round(((x - (c - 0.5)) / (w - 1) + 0.5) * 255);
}

function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i] - b[i]));
  return d;
}

function meanAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let d = 0;
  for (let i = 0; i < a.length; i++) d += Math.abs(a[i] - b[i]);
  return d / a.length;
}

describe('WADO-URI rendered images (PS3.18 §9.5) and DICOM objects (§9.4)', () => {
  let gw: TestGateway;
  let wado: string;
  let ct: Stored;
  let mr: Stored;
  let us: Stored;
  let cr: Stored;
  let cine: Stored;
  let sr: Stored;
  let rtstruct: Stored;
  let j2k: Stored;

  const get = async (query: string, accept?: string) => {
    const res = await fetch(`${wado}?${query}`, { headers: accept ? { accept } : {} });
    return { res, body: Buffer.from(await res.arrayBuffer()) };
  };
  const message = (body: Buffer): string => JSON.parse(body.toString()).errors[0].message;

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    wado = `${gw.url}/projects/alpha/wado`;
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    await ensureProject(gw.services.db, { id: 'beta', name: 'Beta' });
    ct = await store(gw, sample('ct/CT_small.dcm'), ['alpha']);
    mr = await store(gw, sample('mr/MR_small.dcm'), ['alpha']);
    us = await store(gw, sample('us/US-Philips-3EAF5680_jpeg-baseline.dcm'), ['alpha']);
    cr = await store(gw, sample('hierarchy/77654033/CR1/6154'), ['alpha']);
    cine = await store(gw, sample('us/examples_ybr_color_multiframe-jpeg.dcm'), ['alpha']);
    sr = await store(gw, sample('rt-sr-seg/reportsi_basic-text-sr.dcm'), ['alpha']);
    rtstruct = await store(gw, sample('rt-sr-seg/LCTSC-RTSTRUCT.dcm'), ['alpha']);
    j2k = await store(gw, sample('ct/CT1_J2KI_jpeg2000.dcm'), ['alpha']);
  });
  afterAll(async () => gw.close());

  it('answers a single-frame CT without contentType as a JPEG of the image (the default), and as PNG, GIF or JPEG when asked', async () => {
    const plain = await get(ct.q);
    expect(plain.res.status).toBe(200);
    expect(plain.res.headers.get('content-type')).toBe('image/jpeg');
    expect(await sharp(plain.body).metadata()).toMatchObject({ format: 'jpeg', width: 128, height: 128 });

    const png = await get(`${ct.q}&contentType=image/png`);
    expect(png.res.headers.get('content-type')).toBe('image/png');
    const gif = await get(`${ct.q}&contentType=image/gif`);
    expect(gif.res.status).toBe(200);
    expect(gif.res.headers.get('content-type')).toBe('image/gif');
    expect(await sharp(gif.body).metadata()).toMatchObject({ format: 'gif', width: 128, height: 128 });
    const a = await pixels(png.body);
    const b = await pixels(gif.body);
    expect(meanAbsDiff(a.data, b.data)).toBeLessThan(2);
    const jpeg = await pixels((await get(`${ct.q}&contentType=image/jpeg`)).body);
    expect(meanAbsDiff(a.data, jpeg.data)).toBeLessThan(3);
  });

  it('honours the contentType list with q-values and the Accept header when contentType is absent', async () => {
    const pref = await get(`${ct.q}&contentType=${encodeURIComponent('image/jpeg;q=0.5,image/png')}`);
    expect(pref.res.headers.get('content-type')).toBe('image/png');
    const dicomFirst = await get(
      `${ct.q}&contentType=${encodeURIComponent('image/gif;q=0.2,application/dicom;q=0.9')}`,
    );
    expect(dicomFirst.res.headers.get('content-type')).toMatch(/^application\/dicom/);
    expect(dicomFirst.body.subarray(128, 132).toString('latin1')).toBe('DICM');
    const byAccept = await get(ct.q, 'application/dicom');
    expect(byAccept.res.headers.get('content-type')).toMatch(/^application\/dicom/);
    expect((await get(`${ct.q}&contentType=text/html`)).res.status).toBe(406);
    expect((await get(`${ct.q}&contentType=image/jpeg;q=0`)).res.status).toBe(406);
  });

  it('applies windowCenter/windowWidth to the CT (exact pixels), and a different window changes the image', async () => {
    const narrow = await pixels(
      (await get(`${ct.q}&contentType=image/png&windowCenter=40&windowWidth=80`)).body,
    );
    const { values } = modalityValues(sample('ct/CT_small.dcm'));
    expect(narrow.channels).toBe(1);
    expect(
      maxAbsDiff(
        narrow.data,
        values.map((v) => linearWindow(v, 40, 80)),
      ),
    ).toBeLessThanOrEqual(1);
    const wide = await pixels(
      (await get(`${ct.q}&contentType=image/png&windowCenter=0&windowWidth=2000`)).body,
    );
    expect(meanAbsDiff(narrow.data, wide.data)).toBeGreaterThan(10);
  });

  it('renders the MR through its own window when none is asked, and the MONOCHROME1 CR as the inverse of its window', async () => {
    const mrOut = await pixels((await get(`${mr.q}&contentType=image/png`)).body);
    const m = modalityValues(sample('mr/MR_small.dcm'));
    const [c, w] = [Number(m.dict['00281050'].Value?.[0]), Number(m.dict['00281051'].Value?.[0])];
    expect([mrOut.width, mrOut.height]).toEqual([64, 64]);
    expect(
      maxAbsDiff(
        mrOut.data,
        m.values.map((v) => linearWindow(v, c, w)),
      ),
    ).toBeLessThanOrEqual(1);

    const crOut = await pixels(
      (await get(`${cr.q}&contentType=image/png&windowCenter=1600&windowWidth=2800`)).body,
    );
    const r = modalityValues(sample('hierarchy/77654033/CR1/6154'));
    expect([crOut.width, crOut.height]).toEqual([16, 16]);
    expect(
      maxAbsDiff(
        crOut.data,
        r.values.map((v) => 255 - linearWindow(v, 1600, 2800)),
      ),
    ).toBeLessThanOrEqual(1);
  });

  it('scales to rows/columns keeping the aspect ratio, both being maxima, on the colour ultrasound', async () => {
    const cols = await get(`${us.q}&columns=320`);
    expect(await sharp(cols.body).metadata()).toMatchObject({
      format: 'jpeg',
      width: 320,
      height: 240,
      channels: 3,
    });
    expect(await sharp((await get(`${us.q}&rows=120&columns=400`)).body).metadata()).toMatchObject({
      width: 160,
      height: 120,
    });
    expect(await sharp((await get(`${us.q}&rows=48`)).body).metadata()).toMatchObject({
      width: 64,
      height: 48,
    });
    const colour = await pixels((await get(`${us.q}&contentType=image/png`)).body);
    expect([colour.width, colour.height, colour.channels]).toEqual([640, 480, 3]);
  });

  it('crops the region given as four fractions (left, top, right, bottom), before scaling', async () => {
    const full = await pixels((await get(`${ct.q}&contentType=image/png`)).body);
    const crop = await pixels((await get(`${ct.q}&contentType=image/png&region=0.25,0.25,0.75,0.75`)).body);
    expect([crop.width, crop.height]).toEqual([64, 64]);
    const expected: number[] = [];
    for (let y = 32; y < 96; y++) for (let x = 32; x < 96; x++) expected.push(full.data[y * 128 + x]);
    expect(maxAbsDiff(crop.data, expected)).toBe(0);
    const scaled = await get(`${ct.q}&region=0,0,0.5,1&rows=64`);
    expect(await sharp(scaled.body).metadata()).toMatchObject({ width: 32, height: 64 });
  });

  it('lowers JPEG size with imageQuality', async () => {
    const low = await get(`${ct.q}&imageQuality=5`);
    const high = await get(`${ct.q}&imageQuality=100`);
    expect([low.res.status, high.res.status]).toEqual([200, 200]);
    expect(low.body.length).toBeLessThan(high.body.length);
  });

  it('answers a multi-frame object as application/dicom by default, and renders the frame named by frameNumber', async () => {
    const plain = await get(cine.q);
    expect(plain.res.status).toBe(200);
    expect(plain.res.headers.get('content-type')).toMatch(/^application\/dicom/);
    const noFrame = await get(`${cine.q}&contentType=image/jpeg`);
    expect(noFrame.res.status).toBe(406);
    expect(message(noFrame.body)).toContain('frameNumber');
    const f1 = await pixels((await get(`${cine.q}&contentType=image/png&frameNumber=1`)).body);
    const f30res = await get(`${cine.q}&frameNumber=30`);
    expect(f30res.res.headers.get('content-type')).toBe('image/jpeg');
    const f30 = await pixels((await get(`${cine.q}&contentType=image/png&frameNumber=30`)).body);
    expect([f30.width, f30.height, f30.channels]).toEqual([320, 240, 3]);
    expect(meanAbsDiff(f1.data, f30.data)).toBeGreaterThan(1);
    expect((await get(`${cine.q}&contentType=image/png&frameNumber=31`)).res.status).toBe(400);
    expect((await get(`${cine.q}&contentType=image/png&frameNumber=0`)).res.status).toBe(400);
    expect((await get(`${cine.q}&contentType=application/dicom&frameNumber=2`)).res.status).toBe(400);
    expect((await get(`${ct.q}&frameNumber=1`)).res.status).toBe(400);
  });

  it('answers 406 for an SR or an RT Structure Set asked as an image, and the object itself by default', async () => {
    for (const obj of [sr, rtstruct]) {
      const img = await get(`${obj.q}&contentType=image/jpeg`);
      expect(img.res.status).toBe(406);
      expect(message(img.body)).toContain('available: application/dicom');
      const dflt = await get(obj.q);
      expect(dflt.res.status).toBe(200);
      expect(dflt.res.headers.get('content-type')).toMatch(/^application\/dicom/);
    }
  });

  it('answers 400 for malformed rendering parameters, naming the parameter', async () => {
    for (const [bad, name] of [
      ['windowCenter=40', 'windowWidth'],
      ['windowWidth=80', 'windowCenter'],
      ['windowCenter=abc&windowWidth=80', 'windowCenter'],
      ['windowCenter=40&windowWidth=0', 'windowWidth'],
      ['rows=0', 'rows'],
      ['columns=12.5', 'columns'],
      ['region=0.5,0.5,0.2,0.9', 'region'],
      ['region=0,0,1', 'region'],
      ['region=0,0,1.5,1', 'region'],
      ['imageQuality=0', 'imageQuality'],
      ['imageQuality=101', 'imageQuality'],
      ['rows=100000&columns=100000', 'pixels'],
    ]) {
      const { res, body } = await get(`${ct.q}&${bad}`);
      expect([bad, res.status]).toEqual([bad, 400]);
      expect(message(body)).toContain(name);
    }
    // Rendering parameters make no sense for the DICOM object itself.
    expect((await get(`${ct.q}&contentType=application/dicom&windowCenter=1&windowWidth=2`)).res.status).toBe(
      400,
    );
  });

  it('ignores annotation with a Warning: 299 and still renders', async () => {
    const { res } = await get(`${ct.q}&annotation=patient,technique`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe('image/jpeg');
    expect(res.headers.get('warning')).toMatch(/^299 aperture ".*annotation/);
  });

  it('answers for a JPEG 2000 source what /rendered answers for it', async () => {
    const viaUri = await get(j2k.q);
    const [, st, se, sop] = /studyUID=([^&]+)&seriesUID=([^&]+)&objectUID=([^&]+)/.exec(j2k.q) ?? [];
    const rendered = await fetch(
      `${gw.url}/projects/alpha/dicom-web/studies/${st}/series/${se}/instances/${sop}/rendered`,
    );
    expect(viaUri.res.status).toBe(rendered.status);
    if (viaUri.res.status === 422) expect(message(viaUri.body)).toContain('1.2.840.10008.1.2.4.91');
  });

  it('draws exactly what /rendered draws for the same window and size (one pipeline)', async () => {
    const [, st, se, sop] = /studyUID=([^&]+)&seriesUID=([^&]+)&objectUID=([^&]+)/.exec(us.q) ?? [];
    const viaRs = await fetch(
      `${gw.url}/projects/alpha/dicom-web/studies/${st}/series/${se}/instances/${sop}/rendered?viewport=320,240`,
      { headers: { accept: 'image/png' } },
    );
    const viaUri = await get(`${us.q}&contentType=image/png&columns=320&rows=240`);
    expect(viaUri.body.equals(Buffer.from(await viaRs.arrayBuffer()))).toBe(true);
    const ctIds = /studyUID=([^&]+)&seriesUID=([^&]+)&objectUID=([^&]+)/.exec(ct.q) ?? [];
    const ctRs = await fetch(
      `${gw.url}/projects/alpha/dicom-web/studies/${ctIds[1]}/series/${ctIds[2]}/instances/${ctIds[3]}/rendered?window=40,80,linear`,
      { headers: { accept: 'image/png' } },
    );
    const ctUri = await get(`${ct.q}&contentType=image/png&windowCenter=40&windowWidth=80`);
    expect(ctUri.body.equals(Buffer.from(await ctRs.arrayBuffer()))).toBe(true);
  });

  it('keeps images inside the project: another project is a 404, the union root sees it', async () => {
    expect((await fetch(`${gw.url}/projects/beta/wado?${ct.q}&contentType=image/jpeg`)).status).toBe(404);
    expect((await fetch(`${gw.url}/projects/beta/wado?${ct.q}`)).status).toBe(404);
    const union = await fetch(`${gw.url}/wado?${ct.q}&contentType=image/png`);
    expect(union.status).toBe(200);
    expect(union.headers.get('content-type')).toBe('image/png');
  });
});
