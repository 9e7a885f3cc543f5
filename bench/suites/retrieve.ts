import dcmjs from 'dcmjs';
import { gunzipSync } from 'node:zlib';
import { request } from 'undici';
import { generateInstances } from '../../tools/synth';
import { stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, orthancAuth, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, percentile, round, summarise, timedPool } from '../lib/stats';

const DOWNLOADS = Number(process.env.BENCH_RETRIEVE_DOWNLOADS ?? 64);
const TTFB_REPS = Number(process.env.BENCH_TTFB_REPS ?? 100);
const META_SERIES = Number(process.env.BENCH_META_SERIES ?? 20);
const META_INSTANCES = Number(process.env.BENCH_META_INSTANCES ?? 100);
const META_WARM_REPS = Number(process.env.BENCH_META_WARM_REPS ?? 30);
/** Study metadata: one study of STUDY_META_SERIES series x STUDY_META_PER_SERIES instances (1,000 by default). */
const STUDY_META_SERIES = Number(process.env.BENCH_STUDY_META_SERIES ?? 10);
const STUDY_META_PER_SERIES = Number(process.env.BENCH_STUDY_META_PER_SERIES ?? 100);
const STUDY_META_WARM_REPS = Number(process.env.BENCH_STUDY_META_WARM_REPS ?? 10);
const DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*';

/** A ~10.5 MB object: a 1024x1024 synthetic CT turned into five frames. */
function largeObject(): Buffer {
  const [ct] = generateInstances({
    patients: 1,
    rows: 1024,
    cols: 1024,
    modalities: ['CT'],
    seed: 'bench-large',
  });
  const buf = ct.buffer;
  const msg = dcmjs.data.DicomMessage.readFile(
    buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.length) as ArrayBuffer,
  );
  const frame = new Uint8Array(msg.dict['7FE00010'].Value![0] as ArrayBuffer);
  const all = new Uint8Array(frame.length * 5);
  for (let i = 0; i < 5; i++) all.set(frame, i * frame.length);
  msg.dict['7FE00010'].Value = [all.buffer];
  msg.dict['00280008'] = { vr: 'IS', Value: [5] };
  return Buffer.from(msg.write());
}

/** Downloads every URL `DOWNLOADS` times in total with `clients` in flight; MB/s over the whole run. */
async function download(urls: string[], clients: number, headers: Record<string, string>): Promise<number> {
  let bytes = 0;
  const t = process.hrtime.bigint();
  await timedPool(DOWNLOADS, clients, async (i) => {
    const res = await fetch(urls[i % urls.length], { headers });
    if (!res.ok) throw new Error(`HTTP ${res.status} for ${urls[i % urls.length]}`);
    for await (const chunk of res.body!) bytes += (chunk as Uint8Array).byteLength;
  });
  return bytes / 1024 / 1024 / (msSince(t) / 1000);
}

/** Time to the response headers, sequential requests: p50/p95 ms. */
async function ttfb(url: string, headers: Record<string, string>, reps: number) {
  const ms: number[] = [];
  for (let i = 0; i < reps + 3; i++) {
    const t = process.hrtime.bigint();
    const res = await fetch(url, { headers });
    if (i >= 3) ms.push(msSince(t));
    await res.arrayBuffer();
  }
  return summarise(ms);
}

/** WADO-RS retrieve throughput, time to first byte, streaming memory and metadata latency vs Orthanc direct. */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const gw = await startGatewayProcess(stack, 18083, { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' });
  const auth = { authorization: orthancAuth(stack) };
  const rows: BenchRow[] = [];
  try {
    await createProject(gw.url, 'bench', 'Benchmark');
    const root = `${gw.url}/projects/bench/dicom-web`;
    const small = [
      ...generateInstances({
        patients: 4,
        seriesPerStudy: 1,
        instancesPerSeries: 4,
        rows: 512,
        cols: 512,
        modalities: ['CT'],
        seed: 'bench-ct',
      }),
    ];
    const large = largeObject();
    const stored = await stowInstances([...small.map((s) => s.buffer), large], {
      baseUrl: root,
      batch: 4,
      keepResults: true,
    });
    if (stored.failed) {
      const why = stored.results
        .filter((r) => r.status < 200 || r.status > 202)
        .map((r) => `HTTP ${r.status} ${r.error ?? JSON.stringify(r.body).slice(0, 300)}`);
      throw new Error(`could not store the benchmark objects: ${why.join('; ')}`);
    }

    const largeMeta = dcmjs.data.DicomMessage.readFile(
      large.buffer.slice(large.byteOffset, large.byteOffset + large.length) as ArrayBuffer,
    ).dict;
    const uidsOf = (d: Record<string, { Value?: unknown[] }>) =>
      [d['0020000D'].Value![0], d['0020000E'].Value![0], d['00080018'].Value![0]].map(String);
    const objects = {
      'CT 512x512 (0.5 MB)': small.map((s) => [s.studyInstanceUid, s.seriesInstanceUid, s.sopInstanceUid]),
      'multi-frame 1024x1024x5 (10.5 MB)': [uidsOf(largeMeta)],
    };
    const orthancIds = new Map<string, string>();
    for (const list of Object.values(objects)) {
      for (const [, , sop] of list) {
        const found = (await (
          await fetch(`${stack.ORTHANC_URL}/tools/lookup`, { method: 'POST', headers: auth, body: sop })
        ).json()) as Array<{ ID: string }>;
        orthancIds.set(sop, found[0].ID);
      }
    }

    for (const [label, list] of Object.entries(objects)) {
      const gwUrls = list.map(([s, x, i]) => `${root}/studies/${s}/series/${x}/instances/${i}`);
      const pluginUrls = list.map(
        ([s, x, i]) => `${stack.ORTHANC_URL}/dicom-web/studies/${s}/series/${x}/instances/${i}`,
      );
      const restUrls = list.map(([, , i]) => `${stack.ORTHANC_URL}/instances/${orthancIds.get(i)}/file`);
      for (const clients of [1, 8, 16]) {
        await download(gwUrls, clients, { accept: DICOM }); // warm the page cache and connections
        const g = await download(gwUrls, clients, { accept: DICOM });
        const p = await download(pluginUrls, clients, { accept: DICOM, ...auth });
        const r = await download(restUrls, clients, auth);
        rows.push({
          metric: `retrieve ${label}, ${clients} client(s), vs DICOMweb plugin`,
          unit: 'MB/s',
          gateway: g,
          orthanc: p,
          ratio: g / p,
          ratioMeaning: 'gateway / plugin',
          target: '≥ 0.9',
          met: g / p >= 0.9,
          note: `Orthanc REST /file: ${round(r)} MB/s (gateway / REST ${round(g / r)})`,
        });
      }
    }

    // Time to first byte for the small CT, sequential.
    const [s0, x0, i0] = objects['CT 512x512 (0.5 MB)'][0];
    const tg = await ttfb(`${root}/studies/${s0}/series/${x0}/instances/${i0}`, { accept: DICOM }, TTFB_REPS);
    const tp = await ttfb(
      `${stack.ORTHANC_URL}/dicom-web/studies/${s0}/series/${x0}/instances/${i0}`,
      { accept: DICOM, ...auth },
      TTFB_REPS,
    );
    const tr = await ttfb(`${stack.ORTHANC_URL}/instances/${orthancIds.get(i0)}/file`, auth, TTFB_REPS);
    rows.push({
      metric: `time to first byte, CT 0.5 MB (p95; p50 ${tg.p50} / plugin ${tp.p50} / REST ${tr.p50} ms)`,
      unit: 'ms',
      gateway: tg.p95,
      orthanc: tp.p95,
      ratio: tg.p95 - tr.p95,
      ratioMeaning: 'added ms over Orthanc REST',
      target: 'added p95 < 3 ms',
      met: tg.p95 - tr.p95 < 3,
    });

    // Memory while streaming 16 large downloads at once.
    const [sl, xl, il] = objects['multi-frame 1024x1024x5 (10.5 MB)'][0];
    const before = gw.rssMb();
    let peak = before;
    const sampler = setInterval(() => (peak = Math.max(peak, gw.rssMb())), 25);
    await download(Array(16).fill(`${root}/studies/${sl}/series/${xl}/instances/${il}`), 16, {
      accept: DICOM,
    });
    clearInterval(sampler);
    rows.push({
      metric: 'gateway RSS growth, 16 concurrent 10.5 MB downloads',
      unit: 'MB',
      gateway: peak - before,
      target: '< 50 MB',
      met: peak - before < 50,
      note: `RSS ${round(before)} MB before, ${round(peak)} MB peak`,
    });

    // Series metadata: series of META_INSTANCES small instances; cold = first request per series, warm = repeats.
    const metaSeries: Array<[string, string]> = [];
    for (let k = 0; k < META_SERIES; k++) {
      const items = [
        ...generateInstances({
          patients: 1,
          seriesPerStudy: 1,
          instancesPerSeries: META_INSTANCES,
          modalities: ['MR'],
          seed: `bench-meta-${k}`,
        }),
      ];
      await stowInstances(
        items.map((x) => x.buffer),
        { baseUrl: root, batch: 50, keepResults: false },
      );
      metaSeries.push([items[0].studyInstanceUid, items[0].seriesInstanceUid]);
    }
    const half = Math.floor(META_SERIES / 2);
    const coldGw: number[] = [];
    const coldPl: number[] = [];
    for (const [k, [s, x]] of metaSeries.entries()) {
      // Each side gets its cold request first on half the series, so neither always benefits from the other's disk reads.
      const g = async () => {
        coldGw.push(await metadataTime(`${root}/studies/${s}/series/${x}/metadata`, META_GW));
      };
      const p = async () => {
        coldPl.push(
          await metadataTime(`${stack.ORTHANC_URL}/dicom-web/studies/${s}/series/${x}/metadata`, auth),
        );
      };
      if (k < half) {
        await g();
        await p();
      } else {
        await p();
        await g();
      }
    }
    const [sw, xw] = metaSeries[0];
    const warmGw = await metadataTimes(
      `${root}/studies/${sw}/series/${xw}/metadata`,
      META_GW,
      META_WARM_REPS,
    );
    const warmPl = await metadataTimes(
      `${stack.ORTHANC_URL}/dicom-web/studies/${sw}/series/${xw}/metadata`,
      auth,
      META_WARM_REPS,
    );
    const coldG = percentile(coldGw, 95);
    const coldP = percentile(coldPl, 95);
    rows.push({
      metric: `series metadata, ${META_INSTANCES} instances, cold (p95 of ${META_SERIES} series)`,
      unit: 'ms',
      gateway: coldG,
      orthanc: coldP,
      ratio: coldG / coldP,
      ratioMeaning: 'gateway / plugin',
      target: 'p95 ≤ 15 ms and ≤ 0.25x',
      met: coldG <= 15 && coldG / coldP <= 0.25,
    });
    rows.push({
      metric: `series metadata, ${META_INSTANCES} instances, warm (p95 of ${META_WARM_REPS})`,
      unit: 'ms',
      gateway: warmGw.p95,
      orthanc: warmPl.p95,
      ratio: warmGw.p95 / warmPl.p95,
      ratioMeaning: 'gateway / plugin',
      target: 'p95 ≤ 15 ms and ≤ 0.25x',
      met: warmGw.p95 <= 15 && warmGw.p95 / warmPl.p95 <= 0.25,
    });

    // Study metadata (issue 15, item 5): one study of 1,000 instances; cold = first request, warm = repeats.
    const studyItems = [
      ...generateInstances({
        patients: 1,
        seriesPerStudy: STUDY_META_SERIES,
        instancesPerSeries: STUDY_META_PER_SERIES,
        modalities: ['MR'],
        seed: 'bench-study-meta',
      }),
    ];
    const studyStored = await stowInstances(
      studyItems.map((x) => x.buffer),
      { baseUrl: root, batch: 50, keepResults: false },
    );
    if (studyStored.failed) throw new Error('could not store the study metadata benchmark objects');
    const st = studyItems[0].studyInstanceUid;
    const nStudy = studyItems.length;
    const timed = async (url: string, headers: Record<string, string>) => {
      let length = 0;
      const ms = await metadataTime(
        url,
        headers,
        (body) => (length = (JSON.parse(body) as unknown[]).length),
      );
      if (length !== nStudy) throw new Error(`study metadata: ${length} instances instead of ${nStudy}`);
      return ms;
    };
    const studyGwUrl = `${root}/studies/${st}/metadata`;
    const studyPlUrl = `${stack.ORTHANC_URL}/dicom-web/studies/${st}/metadata`;
    const coldStudyGw = await timed(studyGwUrl, META_GW);
    const coldStudyPl = await timed(studyPlUrl, auth);
    rows.push({
      metric: `study metadata, ${nStudy} instances, cold (first request)`,
      unit: 'ms',
      gateway: coldStudyGw,
      orthanc: coldStudyPl,
      ratio: coldStudyGw / coldStudyPl,
      ratioMeaning: 'gateway / plugin',
      target: '≤ 150 ms',
      met: coldStudyGw <= 150,
    });
    const warmStudyGw = await metadataTimes(studyGwUrl, META_GW, STUDY_META_WARM_REPS);
    const warmStudyPl = await metadataTimes(studyPlUrl, auth, STUDY_META_WARM_REPS);
    rows.push({
      metric: `study metadata, ${nStudy} instances, warm (p95 of ${STUDY_META_WARM_REPS})`,
      unit: 'ms',
      gateway: warmStudyGw.p95,
      orthanc: warmStudyPl.p95,
      ratio: warmStudyGw.p95 / warmStudyPl.p95,
      ratioMeaning: 'gateway / plugin',
      target: '≤ 150 ms',
      met: warmStudyGw.p95 <= 150,
    });
    return {
      suite: 'WADO-RS retrieval and metadata',
      setup:
        `Gateway (one process, auth off) streaming from Orthanc vs Orthanc's DICOMweb plugin and REST API on the same ` +
        `stack. ${DOWNLOADS} downloads per figure, bodies read to the end. Objects: 512x512 CT (0.5 MB) and a ` +
        `1024x1024x5 multi-frame (10.5 MB), stored syntax (no transcoding).`,
      rows,
    };
  } finally {
    await gw.stop();
  }
}

const META_GW = { accept: 'application/dicom+json' };

/**
 * Time for one metadata answer, headers to the last byte, decompressed when it came gzipped (body text to `check`).
 *
 * Both sides are asked with Accept-Encoding: gzip, as a browser asks; the gateway compresses, Orthanc (compression off
 * in this stack, as Orthanc ships) does not. The client is undici's `request` with Node's native gunzip, what a
 * browser's network stack does, rather than the global `fetch`: on this 2-core machine fetch's own decompression
 * (WHATWG streams) added 2-4 ms to the median and 10-15 ms stalls at p95 to the gzipped answers only, a cost of the
 * measuring client that the plugin's uncompressed answers never paid (bench/REPORT.md, "Cold metadata").
 */
async function metadataTime(
  url: string,
  headers: Record<string, string>,
  check?: (body: string) => void,
): Promise<number> {
  const t = process.hrtime.bigint();
  const res = await request(url, { headers: { ...headers, 'accept-encoding': 'gzip' } });
  const raw = Buffer.from(await res.body.arrayBuffer());
  const body = res.headers['content-encoding'] === 'gzip' ? gunzipSync(raw) : raw;
  const ms = msSince(t);
  if (res.statusCode !== 200) throw new Error(`metadata: HTTP ${res.statusCode} for ${url}`);
  check?.(body.toString('utf8'));
  return ms;
}

/** metadataTime repeated, sequential, after two unmeasured requests: p50/p95 ms. */
async function metadataTimes(url: string, headers: Record<string, string>, reps: number) {
  const ms: number[] = [];
  for (let i = 0; i < reps + 2; i++) {
    const one = await metadataTime(url, headers);
    if (i >= 2) ms.push(one);
  }
  return summarise(ms);
}
