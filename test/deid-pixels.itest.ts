/**
 * Clean Pixel Data in a cohort (issue 10 item 3): ultrasound with burned-in text, from the samples, goes through a
 * real cohort job; the output's pixels, rendered by DCMTK (dcmj2pnm, after dcmdjpls for JPEG-LS), are black in
 * every region the rule names and the same as the source's rendering everywhere else. Objects no rule names are
 * withheld with a reason, never passed through.
 */
import type { Worker } from 'bullmq';
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deidentifier } from '../src/cohorts/deidentifier';
import { findElement, rawString, readPart10 } from '../src/dicom/deid/codec';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { initCohortWorker } from '../src/jobs/cohort';
import { closeQueues, initQueues } from '../src/jobs/queues';
import { type AuthStack, bearer, startAuthStack } from './helpers/auth';
import { waitFor } from './helpers/dimse';
import { resetStack } from './helpers/gateway';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../shared/dicom-samples');
const ATL = join(SAMPLES, 'us/US-Philips-3EAF5680_jpeg-baseline.dcm'); // JPEG baseline, rule: rows 0-39
const OB = join(SAMPLES, 'us/OBXXXX1A_rle_2frame_palette.dcm'); // RLE, 2 frames, palette, rule: rows 0-59
const NO_RULE = [join(SAMPLES, 'us/US1_J2KR_jpeg2000-lossless.dcm'), join(SAMPLES, 'sc/SC_rgb.dcm')];

interface Pnm {
  width: number;
  height: number;
  channels: number;
  data: Buffer;
}

/** Binary PGM/PPM (P5/P6, maxval 255) as dcmj2pnm writes it. */
function readPnm(b: Buffer): Pnm {
  const m = /^(P[56])\s+(\d+)\s+(\d+)\s+(\d+)\s/.exec(b.subarray(0, 64).toString('latin1'));
  if (!m || m[4] !== '255') throw new Error('not an 8-bit binary PNM');
  const width = Number(m[2]);
  const height = Number(m[3]);
  const channels = m[1] === 'P6' ? 3 : 1;
  return { width, height, channels, data: b.subarray(m[0].length, m[0].length + width * height * channels) };
}

describe('Clean Pixel Data: burned-in regions blacked out in a cohort, checked against DCMTK', () => {
  let stack: AuthStack;
  let worker: Worker;
  let alice: Record<string, string>;
  let work: string;
  const sources = new Map<string, string>(); // source SOP Instance UID -> file

  const post = (path: string, body: unknown) =>
    fetch(`${stack.gw.url}${path}`, {
      method: 'POST',
      headers: { ...alice, 'content-type': 'application/json' },
      body: JSON.stringify(body),
    });
  const get = (path: string) => fetch(`${stack.gw.url}${path}`, { headers: alice });
  interface View {
    state: string;
    profile: { options: string[] };
    progress: {
      done: number;
      withheld: number;
      failed: number;
      reasons: Array<{ reason: string; count: number }>;
    };
  }
  const finished = (id: string) =>
    waitFor(
      `cohort ${id}`,
      async () => {
        const c = (await (await get(`/api/cohorts/${id}`)).json()) as View;
        return c.state === 'done' ? c : undefined;
      },
      120_000,
      250,
    );

  /** dcmj2pnm's rendering of one frame (JPEG-LS decompressed by dcmdjpls first: dcmj2pnm has no JPEG-LS codec). */
  const render = (bytes: Buffer, name: string, frame = 1): Pnm => {
    let file = join(work, `${name}.dcm`);
    writeFileSync(file, bytes);
    const ts = rawString(findElement(readPart10(bytes).meta, 0x00020010)!);
    if (ts.startsWith('1.2.840.10008.1.2.4.8')) {
      execFileSync('dcmdjpls', [file, `${file}.raw.dcm`]);
      file = `${file}.raw.dcm`;
    }
    const out = join(work, `${name}-${frame}.pnm`);
    execFileSync('dcmj2pnm', ['--frame', String(frame), file, out], { stdio: 'pipe' });
    return readPnm(readFileSync(out));
  };

  /** Mean absolute difference outside the band of the first `rows` rows, and the band's pixels. */
  const compare = (src: Pnm, out: Pnm, rows: number) => {
    expect([out.width, out.height, out.channels]).toEqual([src.width, src.height, src.channels]);
    const band = rows * src.width * src.channels;
    let diff = 0;
    for (let i = band; i < src.data.length; i++) diff += Math.abs(src.data[i] - out.data[i]);
    return {
      meanOutside: diff / (src.data.length - band),
      band: out.data.subarray(0, band),
      srcBand: src.data.subarray(0, band),
    };
  };

  beforeAll(async () => {
    await resetStack();
    stack = await startAuthStack();
    const { services, config } = stack.gw;
    initQueues(config);
    worker = initCohortWorker({ ...services, deid: deidentifier, config });
    // alice is curator of lung-study (a Keycloak group in the test realm).
    await ensureProject(services.db, { id: 'lung-study', name: 'Lung study' });
    for (const f of [ATL, OB, ...NO_RULE]) {
      const bytes = readFileSync(f);
      const out = await ingestInstance(services, bytes, ['lung-study'], 'stow');
      if (!out.ok) throw new Error(`could not seed ${f}`);
      sources.set(rawString(findElement(readPart10(bytes).dataset, 0x00080018)!), f);
    }
    alice = bearer(await stack.issuer.userToken('alice'));
    work = mkdtempSync(join(tmpdir(), 'deid-pixels-'));
  }, 180_000);

  afterAll(async () => {
    await worker?.close();
    await closeQueues();
    await stack?.close();
    if (work) rmSync(work, { recursive: true, force: true });
  });

  it('withholds every burned-in object without the option, and those no rule names with it', async () => {
    const studies = (await (await get('/projects/lung-study/dicom-web/studies')).json()) as Array<
      Record<string, { Value: string[] }>
    >;
    const uids = studies.map((s) => s['0020000D'].Value[0]);
    const plain = await post('/api/projects/lung-study/cohorts', {
      name: 'no pixel cleaning',
      studies: uids,
      target: { new: { id: 'echo-plain', name: 'Echo plain' } },
    });
    expect(plain.status).toBe(202);
    const p = await finished(((await plain.json()) as { id: string }).id);
    expect(p.progress).toMatchObject({ done: 0, withheld: 4, failed: 0 });
    expect(p.progress.reasons.map((r) => r.reason)).toEqual(['burned-in-annotation-likely']);

    const res = await post('/api/projects/lung-study/cohorts', {
      name: 'cleaned',
      studies: uids,
      options: { cleanPixelData: true },
      target: { new: { id: 'echo-clean', name: 'Echo cleaned' } },
    });
    expect(res.status).toBe(202);
    const id = ((await res.json()) as { id: string }).id;
    const c = await finished(id);
    expect(c.profile.options).toContain('Clean Pixel Data Option');
    expect(c.progress).toMatchObject({ done: 2, withheld: 2, failed: 0 });
    expect(c.progress.reasons).toEqual([expect.objectContaining({ reason: 'burned-in-no-rule', count: 2 })]);

    // Each cleaned output against its source, both rendered by DCMTK.
    const outputs = await stack.gw.services.db.query<{ source_sop_uid: string; orthanc_id: string }>(
      `SELECT ci.source_sop_uid, i.orthanc_id FROM cohort_instances ci
         JOIN instances i ON i.sop_instance_uid = ci.output_sop_uid
        WHERE ci.cohort_id = $1 AND ci.state = 'done'`,
      [id],
    );
    const checked: string[] = [];
    for (const { source_sop_uid: oldUid, orthanc_id: archiveId } of outputs.rows) {
      const file = sources.get(oldUid)!;
      expect(NO_RULE).not.toContain(file);
      const bytes = await stack.gw.services.archive.readInstanceFile(archiveId, 64 * 1024 * 1024);
      const out = readPart10(bytes);
      expect(rawString(findElement(out.dataset, 0x00280301)!)).toBe('NO');
      const codes = findElement(out.dataset, 0x00120064)!.items!.map((it) =>
        rawString(findElement(it, 0x00080100)!),
      );
      expect(codes).toContain('113101');
      const ts = rawString(findElement(out.meta, 0x00020010)!);
      const name = file === ATL ? 'atl' : 'ob';
      const source = readFileSync(file);
      if (file === ATL) {
        // JPEG baseline → JPEG-LS lossless of the decoded RGB: the band is exactly black; elsewhere the two
        // decoders (libjpeg-turbo here, IJG in DCMTK) agree to within rounding of the colour conversion.
        expect(ts).toBe('1.2.840.10008.1.2.4.80');
        const r = compare(render(source, `${name}-src`), render(bytes, name), 40);
        expect(r.band.every((v) => v === 0)).toBe(true);
        expect(r.srcBand.some((v) => v > 128)).toBe(true); // there was text to remove
        expect(r.meanOutside).toBeLessThan(1);
      } else {
        // RLE palette colour, two frames → RLE again, lossless: every pixel outside the band identical, the band
        // one colour (palette entry 0) in both frames.
        expect(ts).toBe('1.2.840.10008.1.2.5');
        for (const frame of [1, 2]) {
          const r = compare(render(source, `${name}-src`, frame), render(bytes, name, frame), 60);
          expect(r.meanOutside).toBe(0);
          // One expect for the whole band: a per-pixel expect costs minutes on a loaded machine.
          const offColour = r.band.filter((v, i) => v !== r.band[i % 3]).length;
          expect(offColour).toBe(0);
          expect(r.srcBand.some((v, i) => v !== r.srcBand[i % 3])).toBe(true);
        }
      }
      checked.push(name);
    }
    expect(checked.sort()).toEqual(['atl', 'ob']);
  });
});
