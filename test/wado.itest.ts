import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import { createServer, type Server } from 'node:net';
import type { Readable } from 'node:stream';
import zlib from 'node:zlib';
import dcmjs from 'dcmjs';
import { api } from 'dicomweb-client';
import { createApp } from '../src/app';
import { parsePart10 } from '../src/dicom/parse';
import { removeInstance } from '../src/index-db/instances';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { OrthancArchive } from '../src/orthanc/archive';
import { OrthancClient } from '../src/orthanc/client';
import { StoredFileReader } from '../src/orthanc/storage-files';
import type { Services } from '../src/services';
import { asArchived } from './helpers/dicom-fuzz';
import { orthancEndpoint, resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

// dicomweb-client speaks XMLHttpRequest, which Node lacks; xhr2 provides it. Without keep-alive: a reused idle
// connection can meet the server closing it (its 5 s keep-alive timeout) and fail the request on a busy machine.
// eslint-disable-next-line @typescript-eslint/no-require-imports
const XHR = require('xhr2') as { nodejsSet(o: { httpAgent: http.Agent }): void };
XHR.nodejsSet({ httpAgent: new http.Agent({ keepAlive: false }) });
(globalThis as unknown as { XMLHttpRequest: unknown }).XMLHttpRequest = XHR;

// Every sample goes through store → retrieve → compare, with archive clean-ups between colliding UIDs.
jest.setTimeout(900_000);

type El = { vr: string; Value?: unknown[]; BulkDataURI?: string; InlineBinary?: string };
type DicomJson = Record<string, El>;

/** The calls of dicomweb-client used here, typed loosely as its own typings are. */
interface WadoClient {
  retrieveInstance(o: {
    studyInstanceUID: string;
    seriesInstanceUID: string;
    sopInstanceUID: string;
    mediaTypes?: object[];
  }): Promise<ArrayBuffer>;
  retrieveSeries(o: { studyInstanceUID: string; seriesInstanceUID: string }): Promise<ArrayBuffer[]>;
  retrieveStudy(o: { studyInstanceUID: string }): Promise<ArrayBuffer[]>;
  retrieveStudyMetadata(o: { studyInstanceUID: string }): Promise<DicomJson[]>;
  retrieveInstanceFrames(o: {
    studyInstanceUID: string;
    seriesInstanceUID: string;
    sopInstanceUID: string;
    frameNumbers: string;
    mediaTypes?: object[];
  }): Promise<ArrayBuffer[]>;
  retrieveBulkData(o: { BulkDataURI: string; byteRange?: number[] }): Promise<ArrayBuffer[]>;
}
function client(url: string): WadoClient {
  return new api.DICOMwebClient({ url, singlepart: false, verbose: false }) as unknown as WadoClient;
}

/** Samples the gateway refuses at ingest (test/stow.itest.ts says why); every other one must round-trip. */
const REFUSED = new Set([
  'fragments/HTJ2KLossless_08_RGB_no-patient-study.dcm',
  'fragments/UN_sequence_fragment.dcm',
  'fragments/priv_SQ_fragment.dcm',
  'malformed/Issue111_no-sop-class.dcm',
  'malformed/Issue196_only-sop-uids.dcm',
  'malformed/MR_truncated.dcm',
  'malformed/emri_small_jpeg_2k_lossless_too_short.dcm',
  'malformed/meta_missing_tsyntax.dcm',
  'malformed/no_meta.dcm',
  'malformed/oob-monochrome-65535.dcm',
  'malformed/rtplan_truncated.dcm',
  'rt-sr-seg/rtstruct_no-file-meta.dcm',
]);

const SAMPLE_PATHS = readFileSync(`${SAMPLES}/MANIFEST.tsv`, 'utf8')
  .trim()
  .split('\n')
  .slice(1)
  .map((line) => line.split('\t')[0]);

const sha = (b: ArrayBuffer | Uint8Array) =>
  createHash('sha256')
    .update(new Uint8Array(b as ArrayBuffer))
    .digest('hex');
// Ingest zeroes non-zero preambles (CVE-2019-11687), so retrieved bytes are compared with the samples as archived.
const read = (p: string) => asArchived(readFileSync(`${SAMPLES}/${p}`));
const sorted = (xs: string[]) => [...xs].sort();

interface Sample {
  path: string;
  bytes: Buffer;
  study: string;
  series: string;
  sop: string;
  ts: string;
}
function sample(path: string): Sample {
  const bytes = read(path);
  const p = parsePart10(bytes);
  return {
    path,
    bytes,
    study: p.studyInstanceUid,
    series: p.seriesInstanceUid,
    sop: p.sopInstanceUid,
    ts: p.transferSyntaxUid,
  };
}
function wadoPath(s: Pick<Sample, 'study' | 'series' | 'sop'>): string {
  return `/studies/${s.study}/series/${s.series}/instances/${s.sop}`;
}

/** The data set of a file as dcmjs reads it (values as the file holds them), for byte comparisons. */
function dcmjsDict(bytes: Buffer): Record<string, { vr: string; Value?: unknown[] }> {
  const ab = bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength) as ArrayBuffer;
  return dcmjs.data.DicomMessage.readFile(ab, { ignoreErrors: true }).dict;
}
/** The binary value at a relative BulkDataURI path (e.g. 54000100/0/54001010) in a dcmjs data set. */
function binaryAt(dict: Record<string, { vr: string; Value?: unknown[] }>, path: string): Buffer | undefined {
  const segs = path.split('/');
  let ds: Record<string, { vr: string; Value?: unknown[] }> = dict;
  for (let i = 0; i < segs.length - 1; i += 2) {
    ds = ds[segs[i]]?.Value?.[Number(segs[i + 1])] as typeof ds;
    if (!ds) return undefined;
  }
  const values = ds[segs[segs.length - 1]]?.Value ?? [];
  const parts = values.map((v) =>
    v instanceof ArrayBuffer
      ? Buffer.from(v)
      : ArrayBuffer.isView(v)
        ? Buffer.from(v.buffer, v.byteOffset, v.byteLength)
        : undefined,
  );
  if (parts.length === 0 || parts.some((p) => p === undefined)) return undefined;
  return Buffer.concat(parts as Buffer[]);
}

/** Runs a dicomweb-client call, saying which one (and the HTTP status) when it fails. */
async function step<T>(label: string, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    const e = err as { status?: number; message?: string; request?: { _error?: unknown } };
    throw new Error(
      `${label}: ${e.message ?? String(err)} (HTTP ${e.status ?? 'none'}) ${String(e.request?._error ?? '')}`,
      { cause: err },
    );
  }
}

/** Plain HTTP GET through the gateway, body collected, for what dicomweb-client hides (status, headers). */
async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers });
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, text: () => body.toString('utf8') };
}

/**
 * Retrieve Study/Series/Instance as stored. Named explicitly: without `transfer-syntax=*` the gateway answers Explicit
 * VR Little Endian (PS3.18 §8.7.3), and dicomweb-client 0.11 sends none (and throws on mediaTypes for instances).
 */
async function retrieveAsStored(url: string): Promise<Buffer[]> {
  const res = await get(url, { accept: 'multipart/related; type="application/dicom"; transfer-syntax=*' });
  if (res.status !== 200) throw new Error(`${res.status} ${res.text()}`);
  return multipartParts(res.headers.get('content-type')!, res.body).map((p) => p.body);
}

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

/** Reads the entries of a ZIP archive through its central directory (stored entries only, as the gateway writes). */
function unzip(zip: Buffer): Map<string, Buffer> {
  const eocd = zip.lastIndexOf(Buffer.from([0x50, 0x4b, 0x05, 0x06]));
  const count = zip.readUInt16LE(eocd + 10);
  let p = zip.readUInt32LE(eocd + 16);
  const out = new Map<string, Buffer>();
  for (let k = 0; k < count; k++) {
    const method = zip.readUInt16LE(p + 10);
    const size = zip.readUInt32LE(p + 20);
    const nameLen = zip.readUInt16LE(p + 28);
    const extraLen = zip.readUInt16LE(p + 30);
    const commentLen = zip.readUInt16LE(p + 32);
    const local = zip.readUInt32LE(p + 42);
    const name = zip.toString('utf8', p + 46, p + 46 + nameLen);
    const dataAt = local + 30 + zip.readUInt16LE(local + 26) + zip.readUInt16LE(local + 28);
    expect(method).toBe(0);
    out.set(name, zip.subarray(dataAt, dataAt + size));
    p += 46 + nameLen + extraLen + commentLen;
  }
  return out;
}

/** Another app on the test gateway's services (the gateway's own singletons stay untouched), for variants. */
async function serve(services: Services): Promise<{ url: string; close(): Promise<void> }> {
  const server = createApp(services).listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  return {
    url: `http://127.0.0.1:${(server.address() as { port: number }).port}`,
    close: async () => {
      server.closeAllConnections();
      await new Promise((r) => server.close(r));
    },
  };
}

// ---------------------------------------------------------------------------------------------------------------
// Metadata compared with an independent reader: Orthanc's DICOMweb plugin (DCMTK) on the same archive.

/** Person names the samples README gives for the charset files (what a correct decoder must produce). */
const README_NAMES = new Map<string, string>();
for (const line of readFileSync(`${SAMPLES}/README.md`, 'utf8').split('\n')) {
  const m = /^\| `(chr\w+\.dcm)` .*PatientName `([^`]+)` \|$/.exec(line);
  if (m) README_NAMES.set(`charset/${m[1]}`, m[2]);
}

const TEXT_VRS = new Set(['UT', 'LT', 'ST', 'DT', 'LO', 'SH']);

/**
 * Brings both sides to what they must agree on, dropping the differences this gateway keeps on purpose
 * (listed in the report of this work): small binary values inline rather than bulk, empty values of multi-valued (0008,0005) kept as null, tiny floats exact (Orthanc prints them as 0),
 * empty PN groups left out, and trailing padding/newlines of text values (dcmjs trims them).
 */
function normalise(ds: DicomJson): DicomJson {
  const out: DicomJson = {};
  for (const [tag, el] of Object.entries(ds)) {
    if (el.BulkDataURI !== undefined || el.InlineBinary !== undefined) {
      out[tag] = { vr: el.vr, Value: ['<binary>'] };
      continue;
    }
    let values = el.Value;
    if (el.vr === 'SQ') values = values?.map((item) => normalise(item as DicomJson));
    if (tag === '00080005') values = values?.filter((v) => v !== null && v !== '');
    if (el.vr === 'PN') {
      values = values?.map((v) =>
        Object.fromEntries(Object.entries((v ?? {}) as Record<string, string>).filter(([, s]) => s !== '')),
      );
    }
    if (TEXT_VRS.has(el.vr))
      values = values?.map((v) => (typeof v === 'string' ? v.replace(/[\s\0]+$/, '') : v));
    if (el.vr === 'FL' || el.vr === 'FD') {
      values = values?.map((v) => (typeof v === 'number' && Math.abs(v) < 1e-15 ? 0 : v));
    }
    out[tag] = values && values.length ? { vr: el.vr, Value: values } : { vr: el.vr };
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------------------

describe('WADO-RS retrieval through the gateway', () => {
  let gw: TestGateway;
  let unionRoot: string;
  let alphaRoot: string;
  const orthanc = orthancEndpoint();
  const orthancGet = (path: string) =>
    fetch(`${orthanc.url}${path}`, { headers: { authorization: orthanc.auth } });

  beforeAll(async () => {
    await resetStack();
    gw = await startGateway();
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    await ensureProject(gw.services.db, { id: 'beta', name: 'Beta' });
    unionRoot = `${gw.url}/dicom-web`;
    alphaRoot = `${gw.url}/projects/alpha/dicom-web`;
  });
  afterAll(async () => gw.close());

  describe('every sample, stored and retrieved back', () => {
    const storable = SAMPLE_PATHS.filter((p) => !REFUSED.has(p));
    // Some samples share a SOP Instance UID (one instance in several encodings): they go in separate rounds.
    const rounds: Sample[][] = [];
    const seen = new Map<string, number>();
    for (const path of storable) {
      const s = sample(path);
      const n = seen.get(s.sop) ?? 0;
      seen.set(s.sop, n + 1);
      (rounds[n] ??= []).push(s);
    }
    const refusedSeen: string[] = [];

    it('refuses exactly the samples known to be unreadable or invalid', async () => {
      for (const path of SAMPLE_PATHS.filter((p) => REFUSED.has(p))) {
        const out = await ingestInstance(gw.services, read(path), ['alpha'], 'stow');
        if (!out.ok) refusedSeen.push(path);
      }
      expect(sorted(refusedSeen)).toEqual(sorted([...REFUSED]));
    });

    it.each(rounds.map((r, i) => [i + 1, r] as const))(
      'round %i: each instance, series and study comes back byte-identical, with faithful metadata',
      async (_n, round) => {
        try {
          await roundTrip(round);
        } finally {
          // Clean up so that the next round can store other encodings under the same UIDs.
          for (const s of round) await forget(s.sop);
        }
      },
    );

    /** Removes an instance from the index and the archive, so that another encoding can be stored under its UIDs. */
    async function forget(sop: string): Promise<void> {
      const row = await gw.services.db.query<{ orthanc_id: string }>(
        'SELECT orthanc_id FROM instances WHERE sop_instance_uid = $1',
        [sop],
      );
      await removeInstance(gw.services.db, sop);
      if (row.rows[0]) await gw.services.archive.deleteInstance(row.rows[0].orthanc_id);
    }

    /**
     * Checks that every BulkDataURI of an instance's metadata points under `root` and resolves to the bytes the file
     * holds there; returns the relative paths it resolved (encapsulated pixel data and big-endian files are skipped:
     * the gateway, like the archive, answers those in another form).
     */
    async function resolveBulkData(m: Sample, ours: DicomJson, root: string): Promise<string[]> {
      const dict = dcmjsDict(m.bytes);
      const union = client(root);
      const resolved: string[] = [];
      const visit = async (ds: DicomJson) => {
        for (const el of Object.values(ds)) {
          if (el.vr === 'SQ') for (const item of (el.Value ?? []) as DicomJson[]) await visit(item);
          if (!el.BulkDataURI) continue;
          const base = `${root}${wadoPath(m)}/bulk/`;
          expect(el.BulkDataURI.startsWith(base)).toBe(true);
          const rel = el.BulkDataURI.slice(base.length);
          if (rel === '7FE00010' && !['1.2.840.10008.1.2', '1.2.840.10008.1.2.1'].includes(m.ts)) continue;
          // dcmjs keeps big-endian values as stored; the gateway, like the archive, answers little endian.
          if (m.ts === '1.2.840.10008.1.2.2') continue;
          const want = binaryAt(dict, rel);
          if (!want) continue;
          const [got] = await step(`bulk ${m.path} ${rel}`, () =>
            union.retrieveBulkData({ BulkDataURI: el.BulkDataURI! }),
          );
          expect({ path: m.path, rel, sha: sha(got) }).toEqual({ path: m.path, rel, sha: sha(want) });
          resolved.push(rel);
        }
      };
      await visit(ours);
      return resolved;
    }

    async function roundTrip(round: Sample[]): Promise<void> {
      for (const s of round) {
        const out = await ingestInstance(gw.services, s.bytes, ['alpha'], 'stow');
        expect({ path: s.path, ok: out.ok }).toEqual({ path: s.path, ok: true });
      }
      const union = client(unionRoot);

      for (const s of round) {
        const [got] = await step(`instance ${s.path}`, () => retrieveAsStored(`${alphaRoot}${wadoPath(s)}`));
        expect({ path: s.path, sha: sha(got) }).toEqual({ path: s.path, sha: sha(s.bytes) });
      }

      const byStudy = new Map<string, Sample[]>();
      const bySeries = new Map<string, Sample[]>();
      for (const s of round) {
        byStudy.set(s.study, [...(byStudy.get(s.study) ?? []), s]);
        bySeries.set(`${s.study}|${s.series}`, [...(bySeries.get(`${s.study}|${s.series}`) ?? []), s]);
      }
      for (const [study, members] of byStudy) {
        const parts = await step(`study ${study}`, () => retrieveAsStored(`${unionRoot}/studies/${study}`));
        expect(sorted(parts.map(sha))).toEqual(sorted(members.map((m) => sha(m.bytes))));
      }
      for (const [key, members] of bySeries) {
        const [study, series] = key.split('|');
        const parts = await step(`series ${series}`, () =>
          retrieveAsStored(`${alphaRoot}/studies/${study}/series/${series}`),
        );
        expect(sorted(parts.map(sha))).toEqual(sorted(members.map((m) => sha(m.bytes))));
      }

      for (const [study, members] of byStudy) {
        const metadata = await step(`metadata ${study}`, () =>
          union.retrieveStudyMetadata({ studyInstanceUID: study }),
        );
        expect(metadata).toHaveLength(members.length);
        for (const m of members) {
          const ours = metadata.find((ds) => ds['00080018']?.Value?.[0] === m.sop)!;
          expect(ours).toBeDefined();
          // Every tag, VR and value, as Orthanc's DICOMweb plugin (DCMTK) reads the same file.
          const res = await orthancGet(`/dicom-web${wadoPath(m)}/metadata`);
          const [theirs] = (await res.json()) as DicomJson[];
          const expected = normalise(theirs);
          const actual = normalise(ours);
          if (m.path === 'malformed/badVR.dcm') {
            // NumberOfFrames is '1A' in the file: Orthanc drops the invalid IS, dcmjs reads 1.
            delete expected['00280008'];
            delete actual['00280008'];
          }
          if (m.ts === '1.2.840.10008.1.2' || m.ts === '1.2.840.10008.1.2.2') {
            // Implicit VR LE and Explicit VR BE: dcmjs reads the US-or-SS attributes (PS3.6 "US or SS") as US
            // whatever the file or Pixel Representation says; Orthanc keeps SS. Values must still agree.
            for (const [tag, el] of Object.entries(actual)) {
              if (el.vr === 'US' && expected[tag]?.vr === 'SS') el.vr = 'SS';
            }
          }
          if (m.path === 'charset/chrH32.dcm') {
            // Orthanc 1.10 leaves ISO 2022 IR 13 + IR 87 ideographic names undecoded; the README has the truth.
            delete expected['00100010'];
            delete actual['00100010'];
          }
          const pixelOnlyOurs = !('7FE00010' in theirs) && '7FE00010' in ours;
          if (pixelOnlyOurs) {
            expect(ours['7FE00010'].BulkDataURI).toBeDefined();
            delete actual['7FE00010'];
          }
          expect({ path: m.path, ds: actual }).toEqual({ path: m.path, ds: expected });
          const name = README_NAMES.get(m.path);
          if (name) {
            const pn = ours['00100010'].Value?.[0] as Record<string, string>;
            expect(
              [pn.Alphabetic, pn.Ideographic, pn.Phonetic].filter((g) => g !== undefined).join('='),
            ).toBe(name);
            expect(ours['00080005']).toEqual(parsePart10(m.bytes).json['00080005']);
          }

          // Bulk data URIs point at the root asked and resolve to the bytes of the file (little-endian files).
          await resolveBulkData(m, ours, unionRoot);
        }
      }
    }

    it('resolves bulk data of every kind the samples hold (waveforms in sequences, private OB, native pixel data)', async () => {
      // Stands alone: stores its own objects, and removes them again for the scenarios below.
      const expected: Record<string, string[]> = {
        'rt-sr-seg/waveform_ecg.dcm': ['14551001', '54000100/0/54001010', '54000100/1/54001010'],
        'ct/CT_small.dcm': ['00431029', '7FE00010'],
        'mr/MR_small_implicit.dcm': ['7FE00010'],
      };
      const samples = Object.keys(expected).map(sample);
      try {
        for (const m of samples) {
          expect((await ingestInstance(gw.services, m.bytes, ['alpha'], 'stow')).ok).toBe(true);
          const metadata = await step(`metadata ${m.path}`, () =>
            client(unionRoot).retrieveStudyMetadata({ studyInstanceUID: m.study }),
          );
          const ours = metadata.find((ds) => ds['00080018']?.Value?.[0] === m.sop);
          expect(ours).toBeDefined();
          const resolved = await resolveBulkData(m, ours!, unionRoot);
          expect({ path: m.path, resolved: sorted(resolved) }).toEqual({
            path: m.path,
            resolved: expected[m.path],
          });
        }
      } finally {
        for (const m of samples) await forget(m.sop);
      }
    });
  });

  describe('scenarios on a fixed set of objects', () => {
    const CT = 'ct/CT_small.dcm';
    const US30 = 'us/examples_ybr_color_multiframe-jpeg.dcm';
    const RLE2 = 'sc/SC_rgb_rle_2frame.dcm';
    const SEG96 = 'rt-sr-seg/TCGA-GBM_DicomSeg_96frames.dcm';
    const ECG = 'rt-sr-seg/waveform_ecg.dcm';
    const J2K = 'ct/CT1_J2KI_jpeg2000.dcm';
    const LCTSC = ['ct/LCTSC-CT01.dcm', 'rt-sr-seg/LCTSC-RTSTRUCT.dcm'];
    const HIER = 'hierarchy/98892001/CT2N/6293';
    const s: Record<string, Sample> = {};
    const orthancIds: Record<string, string> = {};

    beforeAll(async () => {
      for (const p of [CT, US30, RLE2, SEG96, ECG, J2K, ...LCTSC]) {
        s[p] = sample(p);
        expect((await ingestInstance(gw.services, s[p].bytes, ['alpha'], 'stow')).ok).toBe(true);
      }
      s[HIER] = sample(HIER);
      expect((await ingestInstance(gw.services, s[HIER].bytes, ['beta'], 'stow')).ok).toBe(true);
      const rows = await gw.services.db.query<{ sop_instance_uid: string; orthanc_id: string }>(
        'SELECT sop_instance_uid, orthanc_id FROM instances',
      );
      for (const r of rows.rows) orthancIds[r.sop_instance_uid] = r.orthanc_id;
    });

    /** The archive's own decoding of one frame (.npy from Orthanc, header stripped): a reference for decoded frames. */
    async function orthancDecodedFrame(sop: string, frame: number): Promise<Buffer> {
      const npy = Buffer.from(
        await (
          await orthancGet(`/instances/${orthancIds[sop]}/frames/${frame - 1}/numpy?rescale=0`)
        ).arrayBuffer(),
      );
      return npy.subarray(10 + npy.readUInt16LE(8));
    }

    describe('frames', () => {
      it('returns frames 1, 3 and 5 of the 30-frame JPEG ultrasound as stored, matching the file', async () => {
        const us = s[US30];
        const frames = await client(alphaRoot).retrieveInstanceFrames({
          studyInstanceUID: us.study,
          seriesInstanceUID: us.series,
          sopInstanceUID: us.sop,
          frameNumbers: '1,3,5',
          mediaTypes: [{ mediaType: 'image/jpeg', transferSyntaxUID: '1.2.840.10008.1.2.4.50' }],
        });
        const fileFrames = dcmjsDict(us.bytes)['7FE00010'].Value as ArrayBuffer[];
        expect(frames.map(sha)).toEqual([0, 2, 4].map((k) => sha(fileFrames[k])));
      });

      it('decodes them to native octets by default, as the archive decodes them', async () => {
        const us = s[US30];
        const frames = await client(alphaRoot).retrieveInstanceFrames({
          studyInstanceUID: us.study,
          seriesInstanceUID: us.series,
          sopInstanceUID: us.sop,
          frameNumbers: '5,1,3',
        });
        expect(frames.map((f) => f.byteLength)).toEqual([230400, 230400, 230400]);
        for (const [k, f] of [5, 1, 3].entries())
          expect(sha(frames[k])).toBe(sha(await orthancDecodedFrame(us.sop, f)));
      });

      it('returns frame 2 of the 2-frame RLE image decoded, and its RLE bytes when any syntax will do', async () => {
        const rle = s[RLE2];
        const [decoded] = await client(unionRoot).retrieveInstanceFrames({
          studyInstanceUID: rle.study,
          seriesInstanceUID: rle.series,
          sopInstanceUID: rle.sop,
          frameNumbers: '2',
        });
        expect(sha(decoded)).toBe(sha(await orthancDecodedFrame(rle.sop, 2)));
        // OHIF's way of asking: octet-stream in any transfer syntax → the stored RLE frame, labelled as such.
        const res = await get(`${unionRoot}${wadoPath(rle)}/frames/2`, {
          accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*',
        });
        expect(res.status).toBe(200);
        const [part] = multipartParts(res.headers.get('content-type')!, res.body);
        expect(part.headers['content-type']).toBe(
          'application/octet-stream; transfer-syntax=1.2.840.10008.1.2.5',
        );
        const fileFrames = dcmjsDict(rle.bytes)['7FE00010'].Value as ArrayBuffer[];
        expect(sha(part.body)).toBe(sha(fileFrames[1]));
      });

      it('cuts the 96 bit-packed frames of the SEG out of its native Pixel Data', async () => {
        const seg = s[SEG96];
        const frames = await client(alphaRoot).retrieveInstanceFrames({
          studyInstanceUID: seg.study,
          seriesInstanceUID: seg.series,
          sopInstanceUID: seg.sop,
          frameNumbers: '1,48,96',
        });
        const pixels = binaryAt(dcmjsDict(seg.bytes), '7FE00010')!;
        expect(frames.map(sha)).toEqual(
          [1, 48, 96].map((f) => sha(pixels.subarray((f - 1) * 8192, f * 8192))),
        );
      });

      it('answers 404 for a frame beyond the last, 400 for a malformed list; decodes JPEG 2000 in-process', async () => {
        const us = s[US30];
        expect((await get(`${alphaRoot}${wadoPath(us)}/frames/31`)).status).toBe(404);
        expect((await get(`${alphaRoot}${wadoPath(us)}/frames/0`)).status).toBe(400);
        expect((await get(`${alphaRoot}${wadoPath(us)}/frames/1,,2`)).status).toBe(400);
        expect((await get(`${alphaRoot}${wadoPath(s[CT])}/frames/2`)).status).toBe(404);
        expect((await get(`${alphaRoot}${wadoPath(s[ECG])}/frames/1`)).status).toBe(404);
        // The archive cannot decode JPEG 2000; the gateway's own decoder does (src/codecs): 512 x 512 x 16 bits.
        const j2k = await get(`${alphaRoot}${wadoPath(s[J2K])}/frames/1`, {
          accept: 'multipart/related; type="application/octet-stream"',
        });
        expect(j2k.status).toBe(200);
        const [decoded] = multipartParts(j2k.headers.get('content-type')!, j2k.body);
        expect(decoded.headers['content-type']).toBe(
          'application/octet-stream; transfer-syntax=1.2.840.10008.1.2.1',
        );
        expect(decoded.body.length).toBe(512 * 512 * 2);
        const jp2 = await get(`${alphaRoot}${wadoPath(s[J2K])}/frames/1`, {
          accept: 'multipart/related; type="image/jp2"',
        });
        expect(jp2.status).toBe(200);
      });
    });

    describe('transfer syntaxes and archives', () => {
      it('transcodes a JPEG object to Explicit VR Little Endian keeping its UIDs, with pixels decoded', async () => {
        const us = s[US30];
        // dicomweb-client 0.11 throws on any mediaTypes for retrieveInstance: the Accept it would send, by hand.
        const res = await get(`${alphaRoot}${wadoPath(us)}`, {
          accept: 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        });
        const [part] = multipartParts(res.headers.get('content-type')!, res.body);
        expect(part.headers['content-type']).toBe('application/dicom; transfer-syntax=1.2.840.10008.1.2.1');
        const got = part.body;
        const parsed = parsePart10(got);
        expect(parsed).toMatchObject({
          transferSyntaxUid: '1.2.840.10008.1.2.1',
          sopInstanceUid: us.sop,
          seriesInstanceUid: us.series,
          studyInstanceUid: us.study,
        });
        const pixels = binaryAt(dcmjsDict(got), '7FE00010')!;
        expect(pixels.length).toBe(30 * 240 * 320 * 3);
        expect(sha(pixels.subarray(0, 230400))).toBe(sha(await orthancDecodedFrame(us.sop, 1)));
      });

      it('honours quality values and answers 406 with what is available for a syntax it cannot produce', async () => {
        const url = `${alphaRoot}${wadoPath(s[US30])}`;
        const preferred = await get(url, {
          accept:
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1; q=0.4, ' +
            'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.50; q=0.9',
        });
        const [part] = multipartParts(preferred.headers.get('content-type')!, preferred.body);
        expect(part.headers['content-type']).toBe(
          'application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50',
        );
        expect(sha(part.body)).toBe(sha(s[US30].bytes));

        const refused = await get(url, {
          accept: 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90',
        });
        expect(refused.status).toBe(406);
        expect(refused.text()).toContain('transfer-syntax=1.2.840.10008.1.2.4.50');
        expect(refused.text()).toContain('transfer-syntax=1.2.840.10008.1.2.1');
        // The archive cannot decode JPEG 2000; the gateway's codecs do, so Explicit VR LE is offered for it too.
        const j2k = await get(`${alphaRoot}${wadoPath(s[J2K])}`, {
          accept: 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.1',
        });
        expect(j2k.status).toBe(200);
        const [j2kPart] = multipartParts(j2k.headers.get('content-type')!, j2k.body);
        expect(j2kPart.headers['content-type']).toBe(
          'application/dicom; transfer-syntax=1.2.840.10008.1.2.1',
        );
      });

      it('streams a study as a ZIP archive with one stored entry per instance, named by UIDs', async () => {
        const [ct, rt] = LCTSC.map((p) => s[p]);
        const res = await get(`${unionRoot}/studies/${ct.study}`, { accept: 'application/zip' });
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe('application/zip');
        const entries = unzip(res.body);
        expect(sorted([...entries.keys()])).toEqual(
          sorted([ct, rt].map((x) => `${x.study}/${x.series}/${x.sop}.dcm`)),
        );
        for (const x of [ct, rt])
          expect(sha(entries.get(`${x.study}/${x.series}/${x.sop}.dcm`)!)).toBe(sha(x.bytes));
      });
    });

    describe('metadata', () => {
      it('builds BulkDataURIs on the root asked, honouring X-Forwarded-* behind a trusted proxy', async () => {
        const ecg = s[ECG];
        const [alphaMeta] = (await (
          await fetch(`${alphaRoot}${wadoPath(ecg)}/metadata`)
        ).json()) as DicomJson[];
        expect(alphaMeta['7FE00010']).toBeUndefined();
        const waveform = (alphaMeta['54000100'].Value![0] as DicomJson)['54001010'].BulkDataURI!;
        expect(waveform).toBe(`${alphaRoot}${wadoPath(ecg)}/bulk/54000100/0/54001010`);

        const proxied = await serve({ ...gw.services, config: { ...gw.config, TRUST_PROXY: true } });
        try {
          const res = await fetch(`${proxied.url}/projects/alpha/dicom-web${wadoPath(ecg)}/metadata`, {
            headers: {
              'x-forwarded-proto': 'https',
              'x-forwarded-host': 'pacs.example.org',
              'x-forwarded-prefix': '/gw',
            },
          });
          const [meta] = (await res.json()) as DicomJson[];
          expect((meta['54000100'].Value![0] as DicomJson)['54001010'].BulkDataURI).toBe(
            `https://pacs.example.org/gw/projects/alpha/dicom-web${wadoPath(ecg)}/bulk/54000100/0/54001010`,
          );
        } finally {
          await proxied.close();
        }
      });

      it('answers 304 to a matching If-None-Match and gzips when asked, without changing the content', async () => {
        const url = `${unionRoot}/studies/${s[LCTSC[0]].study}/metadata`;
        const first = await new Promise<http.IncomingMessage & { raw: Buffer }>((resolve, reject) => {
          http
            .get(url, { headers: { 'accept-encoding': 'gzip' } }, (res) => {
              const chunks: Buffer[] = [];
              res.on('data', (c: Buffer) => chunks.push(c));
              res.on('end', () => resolve(Object.assign(res, { raw: Buffer.concat(chunks) })));
            })
            .on('error', reject);
        });
        expect(first.headers['content-encoding']).toBe('gzip');
        const plain = await get(url);
        expect(JSON.parse(zlib.gunzipSync(first.raw).toString('utf8'))).toEqual(JSON.parse(plain.text()));
        const etag = plain.headers.get('etag')!;
        expect(etag).toMatch(/^"[^"]+"$/);
        const again = await get(url, { 'if-none-match': etag });
        expect(again.status).toBe(304);
        expect(again.body.length).toBe(0);
        expect(
          (await get(`${alphaRoot}/studies/${s[LCTSC[0]].study}/metadata`, { 'if-none-match': etag })).status,
        ).toBe(200);
      });

      it('serves series and instance metadata as DICOM XML, one document per instance', async () => {
        const res = await get(`${alphaRoot}/studies/${s[CT].study}/series/${s[CT].series}/metadata`, {
          accept: 'multipart/related; type="application/dicom+xml"',
        });
        expect(res.status).toBe(200);
        const parts = multipartParts(res.headers.get('content-type')!, res.body);
        expect(parts).toHaveLength(1);
        expect(parts[0].body.toString('utf8')).toContain(
          `<DicomAttribute tag="00080018" vr="UI" keyword="SOPInstanceUID"><Value number="1">${s[CT].sop}</Value>`,
        );
      });
    });

    describe('bulk data and ranges', () => {
      const waveformUri = () => `${alphaRoot}${wadoPath(s[ECG])}/bulk/54000100/0/54001010`;
      const waveformBytes = () => binaryAt(dcmjsDict(s[ECG].bytes), '54000100/0/54001010')!;

      it('answers a byte range as 206 with Content-Range, single part or multipart (dicomweb-client)', async () => {
        const whole = waveformBytes();
        const single = await get(waveformUri(), {
          accept: 'application/octet-stream',
          range: 'bytes=1000-1999',
        });
        expect(single.status).toBe(206);
        expect(single.headers.get('content-range')).toBe(`bytes 1000-1999/${whole.length}`);
        expect(sha(single.body)).toBe(sha(whole.subarray(1000, 2000)));
        const suffix = await get(waveformUri(), { accept: 'application/octet-stream', range: 'bytes=-16' });
        expect(sha(suffix.body)).toBe(sha(whole.subarray(whole.length - 16)));
        const [viaClient] = await client(alphaRoot).retrieveBulkData({
          BulkDataURI: waveformUri(),
          byteRange: [10, 19],
        });
        expect(sha(viaClient)).toBe(sha(whole.subarray(10, 20)));
      });

      it('answers 416 for a range beyond the value and 404/400 for unknown or malformed paths', async () => {
        const total = waveformBytes().length;
        const res = await get(waveformUri(), {
          accept: 'application/octet-stream',
          range: `bytes=${total}-`,
        });
        expect(res.status).toBe(416);
        expect(res.headers.get('content-range')).toBe(`bytes */${total}`);
        expect((await get(`${alphaRoot}${wadoPath(s[ECG])}/bulk/54000100/7/54001010`)).status).toBe(404);
        expect((await get(`${alphaRoot}${wadoPath(s[ECG])}/bulk/54000100/x`)).status).toBe(400);
      });
    });

    describe('access, roots and errors', () => {
      it('serves an object at its project root and the union root, and 404 at a project that does not hold it', async () => {
        const ct = s[CT];
        for (const root of [alphaRoot, unionRoot])
          expect((await get(`${root}${wadoPath(ct)}`)).status).toBe(200);
        const beta = await get(`${gw.url}/projects/beta/dicom-web${wadoPath(ct)}`);
        expect(beta.status).toBe(404);
        expect(JSON.parse(beta.text())).toEqual({
          errors: [{ code: 'not_found', message: 'instance not found' }],
        });
        expect((await get(`${gw.url}/projects/beta/dicom-web${wadoPath(s[HIER])}`)).status).toBe(200);
        expect((await get(`${gw.url}/projects/beta/dicom-web/studies/${ct.study}/metadata`)).status).toBe(
          404,
        );
        expect((await get(`${gw.url}/projects/nowhere/dicom-web/studies/${ct.study}`)).status).toBe(404);
      });

      it('answers 404 for unknown UIDs and 400 for malformed ones, with a body saying which', async () => {
        const ct = s[CT];
        expect((await get(`${unionRoot}/studies/1.2.3.4.5`)).status).toBe(404);
        expect((await get(`${unionRoot}/studies/${ct.study}/series/1.2.3`)).status).toBe(404);
        expect(
          (await get(`${unionRoot}/studies/${ct.study}/series/${ct.series}/instances/1.2.3`)).status,
        ).toBe(404);
        const bad = await get(`${unionRoot}/studies/${ct.study}/series/abc/instances/${ct.sop}`);
        expect(bad.status).toBe(400);
        expect(bad.text()).toContain('malformed Series Instance UID');
        expect((await get(`${unionRoot}/studies/${'1.'.repeat(40)}1/metadata`)).status).toBe(400);
      });

      it('serves WADO-URI requests as application/dicom, with the same access rules', async () => {
        const ct = s[CT];
        const q = `requestType=WADO&studyUID=${ct.study}&seriesUID=${ct.series}&objectUID=${ct.sop}`;
        const res = await get(`${gw.url}/wado?${q}&contentType=application/dicom`);
        expect(res.status).toBe(200);
        expect(res.headers.get('content-type')).toBe(
          'application/dicom; transfer-syntax=1.2.840.10008.1.2.1',
        );
        expect(sha(res.body)).toBe(sha(ct.bytes));
        // Without contentType a single-frame image is rendered as JPEG (PS3.18 §9.3): test/wado-uri.itest.ts.
        const dicom = `${q}&contentType=application/dicom`;
        expect(sha((await get(`${gw.url}/projects/alpha/wado?${dicom}`)).body)).toBe(sha(ct.bytes));
        expect((await get(`${gw.url}/projects/beta/wado?${q}`)).status).toBe(404);
        expect((await get(`${gw.url}/wado?${q}&contentType=text/html`)).status).toBe(406);
        expect(
          (await get(`${gw.url}/wado?requestType=WADO&studyUID=${ct.study}&seriesUID=${ct.series}`)).status,
        ).toBe(400);
        const transcoded = await get(
          `${gw.url}/wado?requestType=WADO&studyUID=${s[US30].study}&seriesUID=${s[US30].series}&objectUID=${s[US30].sop}&transferSyntax=1.2.840.10008.1.2.1`,
        );
        expect(parsePart10(transcoded.body).transferSyntaxUid).toBe('1.2.840.10008.1.2.1');
      });

      it('answers 503 + Retry-After when the archive is unreachable and 504 when it does not answer in time, never hanging', async () => {
        const unreachable = new OrthancClient({ ...gw.config, ORTHANC_URL: 'http://127.0.0.1:1' });
        const closed = await serve({
          ...gw.services,
          pacs: unreachable,
          archive: new OrthancArchive(unreachable),
        });
        const silent: Server = createServer(() => undefined).listen(0, '127.0.0.1');
        await new Promise((r) => silent.once('listening', r));
        const port = (silent.address() as { port: number }).port;
        const mute = new OrthancClient({
          ...gw.config,
          ORTHANC_URL: `http://127.0.0.1:${port}`,
          ORTHANC_TIMEOUT_MS: 500,
        });
        const slow = await serve({ ...gw.services, pacs: mute, archive: new OrthancArchive(mute) });
        try {
          const down = await get(`${closed.url}/dicom-web${wadoPath(s[CT])}`);
          expect([down.status, Number(down.headers.get('retry-after')) > 0]).toEqual([503, true]);
          const started = Date.now();
          expect((await get(`${slow.url}/dicom-web${wadoPath(s[CT])}`)).status).toBe(504);
          expect(Date.now() - started).toBeLessThan(5000);
          // Metadata never touches the archive.
          expect((await get(`${closed.url}/dicom-web${wadoPath(s[CT])}/metadata`)).status).toBe(200);
        } finally {
          await closed.close();
          await slow.close();
          await unreachable.close();
          await mute.close().catch(() => undefined);
          silent.close();
        }
      });

      it('releases the archive request at once when the client goes away mid-download', async () => {
        const opened: Readable[] = [];
        const pacs = gw.services.pacs;
        const original = pacs.instanceFile.bind(pacs);
        pacs.instanceFile = async (id, signal) => {
          const file = await original(id, signal);
          opened.push(file.body);
          return file;
        };
        // With ARCHIVE_FILE_READS (the test stack's setting) the files are opened from Orthanc's storage folder.
        const openFile = StoredFileReader.prototype.open;
        StoredFileReader.prototype.open = async function (this: StoredFileReader, id, signal) {
          const file = await openFile.call(this, id, signal);
          if (file) opened.push(file.body);
          return file;
        };
        const agent = (pacs as unknown as { agent: { stats: Record<string, { running: number }> } }).agent;
        const running = () => Object.values(agent.stats).reduce((n, st) => n + st.running, 0);
        try {
          // The RT structure set (2 MB) and its CT: the client reads the first chunk, then drops the connection.
          await new Promise<void>((resolve, reject) => {
            const req = http.get(`${unionRoot}/studies/${s[LCTSC[0]].study}`, (res) => {
              res.once('data', () => {
                req.destroy();
                resolve();
              });
            });
            req.on('error', () => undefined);
            req.setTimeout(10_000, () => reject(new Error('no data')));
          });
          const deadline = Date.now() + 2000;
          while (
            Date.now() < deadline &&
            (running() > 0 || opened.some((b) => !b.destroyed && !b.readableEnded))
          ) {
            await new Promise((r) => setTimeout(r, 20));
          }
          expect(opened.length).toBeGreaterThan(0);
          expect(opened.every((b) => b.destroyed || b.readableEnded)).toBe(true);
          expect(running()).toBe(0);
        } finally {
          pacs.instanceFile = original;
          StoredFileReader.prototype.open = openFile;
        }
      });
    });
  });
});
