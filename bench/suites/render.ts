import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { CodecPool, defaultCodecThreads } from '../../src/codecs';
import { decodeNativeFrame, toDisplayImage } from '../../src/dicom/render';
import { findElement, PIXEL_DATA, readPart10 } from '../../src/dicom/deid/codec';
import { pixelLayout, withCleanedPixels } from '../../src/dicom/deid/pixels';
import { TransferSyntax } from '../../src/dicom/transfer-syntax';
import { generateInstances, uuidDerivedUid } from '../../tools/synth';
import { stowInstances } from '../../tools/stow-client';
import type { BenchRow, SuiteResult } from '../lib/report';
import { createProject, orthancAuth, type StackEnv, startGatewayProcess } from '../lib/stack';
import { msSince, summarise, timedPool } from '../lib/stats';

const N = Number(process.env.BENCH_RENDER_N ?? 48);
const PORT = Number(process.env.BENCH_RENDER_PORT ?? 18085);
/** Node options for the gateway process, e.g. `--cpu-prof --cpu-prof-dir=/tmp/prof` (profiling runs). */
const GATEWAY_NODE_ARGS = (process.env.BENCH_RENDER_GATEWAY_NODE_ARGS ?? '').split(' ').filter(Boolean);
const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../../shared/dicom-samples');

/**
 * The gateway's own event-loop delay (prom-client's monitorEventLoopDelay gauges, reset at every scrape): scrape once
 * to reset, run the load, scrape again for the delay during the load.
 */
async function eventLoopDelay(gatewayUrl: string): Promise<{ p50: number; p99: number; max: number }> {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  const gauge = (name: string) => {
    const m = new RegExp(
      `^aperture_process_nodejs_eventloop_lag_${name}_seconds(?:\\{[^}]*\\})? ([0-9.eE+-]+)$`,
      'm',
    ).exec(text);
    if (!m) throw new Error(`no aperture_process_nodejs_eventloop_lag_${name}_seconds in /metrics`);
    return Math.round(Number(m[1]) * 1e5) / 100;
  };
  return { p50: gauge('p50'), p99: gauge('p99'), max: gauge('max') };
}

const round1 = (x: number) => Math.round(x * 10) / 10;

/**
 * The architectural effect alone, in this process and without HTTP or Orthanc: the event-loop delay while 16 renders
 * of a 2048 x 2560 12-bit frame (rescale, window) run inline on the event loop (how the gateway rendered before) and
 * then through the codec pool's render task (how it renders now). Same frame, same window, same run.
 */
export async function inProcessLoopDelay(): Promise<BenchRow[]> {
  const px = {
    rows: 2560,
    columns: 2048,
    samplesPerPixel: 1,
    bitsAllocated: 16,
    bitsStored: 12,
    highBit: 11,
    signed: false,
    photometric: 'MONOCHROME2',
    planarConfiguration: 0,
    numberOfFrames: 1,
  };
  const frame = () => {
    const words = new Uint16Array(px.rows * px.columns);
    for (let i = 0; i < words.length; i++) words[i] = (i * 7) % 4096;
    return new Uint8Array(words.buffer);
  };
  const presentation = { rescaleSlope: 1, rescaleIntercept: -1024, windows: [] };
  const window = { center: 40, width: 400, fn: 'linear' as const };
  const pool = new CodecPool({ threads: defaultCodecThreads(), queue: 64, maxFrameBytes: 64 * 1024 ** 2 });
  /** Runs 16 renders at once while a 2 ms ticker records how late each tick fires (the event loop's delay). */
  const measure = async (render: (frame: Uint8Array) => Promise<unknown>) => {
    const frames = Array.from({ length: 16 }, frame); // made before the clock starts
    const delays: number[] = [];
    let ticking = true;
    const schedule = () => {
      const due = performance.now() + 2;
      setTimeout(() => {
        delays.push(Math.max(0, performance.now() - due));
        if (ticking) schedule();
      }, 2);
    };
    schedule();
    const t = process.hrtime.bigint();
    await Promise.all(frames.map((f) => new Promise((r) => setImmediate(r)).then(() => render(f))));
    const ms = msSince(t);
    // One more tick, so a loop blocked until the end still records that block.
    await new Promise((r) => setTimeout(r, 5));
    ticking = false;
    const s = summarise(delays);
    return { p99: s.p99, max: Math.max(...delays), perSecond: 16 / (ms / 1000) };
  };
  try {
    await pool.renderFrame(frame(), '1.2.840.10008.1.2.1', { px, presentation, window }); // thread start-up
    const inline = await measure(async (f) =>
      toDisplayImage(decodeNativeFrame(f, px), px, presentation, { window }),
    );
    const pooled = await measure((f) =>
      pool.renderFrame(f, '1.2.840.10008.1.2.1', { px, presentation, window }),
    );
    return [
      {
        metric:
          'event-loop delay while 16 renders of a 2048x2560 frame run: codec threads vs inline (p99, in-process)',
        unit: 'ms',
        gateway: pooled.p99,
        orthanc: inline.p99,
        ratio: pooled.p99 / inline.p99,
        ratioMeaning: 'codec threads / inline on the event loop (the "Orthanc" column is the inline figure)',
        note: `max ${round1(pooled.max)} ms vs ${round1(inline.max)} ms inline; ${round1(pooled.perSecond)} vs ${round1(inline.perSecond)} renders/s; ${defaultCodecThreads()} codec thread(s)`,
      },
    ];
  } finally {
    await pool.close();
  }
}

/** Requests per second over `total` requests with `clients` in flight, and each request's latency. */
async function rate(urls: string[], total: number, clients: number, headers: Record<string, string>) {
  const t = process.hrtime.bigint();
  const ms = await timedPool(total, clients, async (i) => {
    const res = await fetch(urls[i % urls.length], { headers });
    if (!res.ok) throw new Error(`HTTP ${res.status} for ${urls[i % urls.length]}`);
    await res.arrayBuffer();
  });
  return { perSecond: total / (msSince(t) / 1000), latency: summarise(ms) };
}

/** One benchmark object: its gateway instance URLs and the same instances' Orthanc URLs. */
export interface RenderObject {
  label: string;
  paths: string[];
  orthanc: string[];
  /** False where Orthanc 1.10 without GDCM cannot decode the syntax (JPEG 2000). */
  orthancRenders: boolean;
}

/**
 * A copy of a synthetic native object with its frame encoded as JPEG 2000 lossless (OpenJPEG, the gateway's own
 * encoder) and a SOP Instance UID of its own, so both forms of the same image are archived side by side.
 */
async function asJpeg2000(part10: Buffer, sopInstanceUid: string, pool: CodecPool): Promise<Buffer> {
  const { meta, dataset } = readPart10(part10);
  const pixel = findElement(dataset, PIXEL_DATA);
  const layout = pixelLayout(dataset);
  if (!pixel?.value || typeof layout === 'string')
    throw new Error('the synthetic object has no native pixel data');
  const encoded = await pool.encodeFrame(pixel.value, TransferSyntax.jpeg2000Lossless, layout);
  if (encoded.transferSyntaxUid !== TransferSyntax.jpeg2000Lossless)
    throw new Error('not encoded as JPEG 2000');
  const uid = (e: { tag: number; vr: string }) =>
    e.tag === 0x00020003 || e.tag === 0x00080018 ? { ...e, value: Buffer.from(sopInstanceUid, 'latin1') } : e;
  return withCleanedPixels(
    meta.map(uid),
    dataset.map(uid),
    { frames: [encoded.frame] },
    encoded.transferSyntaxUid,
    layout.photometric,
    0,
  );
}

/**
 * Stores the render benchmark's objects through the gateway's STOW-RS (project `bench`): 4 synthetic 512x512 CT, a
 * synthetic 1024x1024 CR, a synthetic 2048x2560 CR native and the same image as JPEG 2000 lossless, and the RG3
 * JPEG 2000 (lossy) CR sample; answers their gateway and Orthanc URLs.
 */
export async function renderObjects(stack: StackEnv, gatewayUrl: string): Promise<RenderObject[]> {
  const auth = { authorization: orthancAuth(stack) };
  await createProject(gatewayUrl, 'bench', 'Benchmark');
  const root = `${gatewayUrl}/projects/bench/dicom-web`;
  const synth = (seed: string, modality: 'CT' | 'CR', rows: number, cols: number, n: number) => [
    ...generateInstances({
      patients: 1,
      instancesPerSeries: n,
      rows,
      cols,
      modalities: [modality],
      seed,
    }),
  ];
  const ct = synth('render-ct', 'CT', 512, 512, 4);
  const cr = synth('render-cr', 'CR', 1024, 1024, 1);
  const large = synth('render-cr-large', 'CR', 2560, 2048, 1);
  const pool = new CodecPool({ threads: 1, queue: 4, maxFrameBytes: 64 * 1024 ** 2 });
  const j2kUid = uuidDerivedUid(`${large[0].sopInstanceUid}/jpeg2000`);
  const largeJ2k = await asJpeg2000(large[0].buffer, j2kUid, pool).finally(() => pool.close());
  const rg3 = readFileSync(join(SAMPLES, 'cr/RG3_J2KI_jpeg2000.dcm'));
  const rg3Sop = readPart10(rg3)
    .dataset.find((e) => e.tag === 0x00080018)
    ?.value?.toString('latin1');
  const files = [...ct, ...cr, ...large].map((s) => s.buffer);
  const stored = await stowInstances([...files, largeJ2k, rg3], {
    baseUrl: root,
    batch: 2,
    keepResults: true,
  });
  if (stored.failed) throw new Error('could not store the benchmark objects');
  const objects = [
    { label: 'CT 512x512 16-bit, native', sops: ct.map((s) => s.sopInstanceUid), orthancRenders: true },
    { label: 'CR 1024x1024 16-bit, native', sops: [cr[0].sopInstanceUid], orthancRenders: true },
    { label: 'CR 2048x2560 16-bit, native', sops: [large[0].sopInstanceUid], orthancRenders: true },
    { label: 'CR 2048x2560 16-bit, JPEG 2000 lossless', sops: [j2kUid], orthancRenders: false },
    {
      label: 'CR RG3 1760x1760 JPEG 2000 (lossy sample)',
      sops: rg3Sop ? [rg3Sop.replace(/\0+$/, '').trim()] : [],
      orthancRenders: false,
    },
  ];
  const out: RenderObject[] = [];
  for (const o of objects) {
    const paths: string[] = [];
    const orthanc: string[] = [];
    for (const sop of o.sops) {
      const m = (
        (await (await fetch(`${root}/instances?SOPInstanceUID=${sop}`)).json()) as Array<
          Record<string, { Value: string[] }>
        >
      )[0];
      if (!m) throw new Error(`instance ${sop} is not indexed`);
      paths.push(
        `${root}/studies/${m['0020000D'].Value[0]}/series/${m['0020000E'].Value[0]}/instances/${sop}`,
      );
      const found = (await (
        await fetch(`${stack.ORTHANC_URL}/tools/lookup`, { method: 'POST', headers: auth, body: sop })
      ).json()) as Array<{ ID: string }>;
      orthanc.push(`${stack.ORTHANC_URL}/instances/${found[0].ID}`);
    }
    out.push({ label: o.label, paths, orthanc, orthancRenders: o.orthancRenders });
  }
  return out;
}

/** The load average (1, 5, 15 minutes), for the report beside the figures. */
function loadAverage(): string {
  return readFileSync('/proc/loadavg', 'utf8').split(' ').slice(0, 3).join(' ');
}

/**
 * Thumbnails and rendered frames, decoded in-process, vs Orthanc's `/instances/{id}/rendered` on the same instances
 * in the same run; and the gateway's event-loop delay while 8 clients render the largest native frame (decoding runs
 * on the thread pool, so this should stay near an idle gateway's figure).
 */
export async function run(stack: StackEnv): Promise<SuiteResult> {
  const loadAtStart = loadAverage();
  const gw = await startGatewayProcess(
    stack,
    PORT,
    { AUTH_ENABLED: 'false', INDEXER_ENABLED: 'false' },
    GATEWAY_NODE_ARGS,
  );
  const auth = { authorization: orthancAuth(stack) };
  const rows: BenchRow[] = await inProcessLoopDelay();
  let largeRendered = '';
  try {
    const objects = await renderObjects(stack, gw.url);
    for (const { label, paths, orthanc, orthancRenders } of objects) {
      const cannot = orthancRenders ? undefined : 'Orthanc 1.10 without GDCM cannot decode JPEG 2000';
      if (label === 'CR 2048x2560 16-bit, native') largeRendered = `${paths[0]}/rendered`;
      // quality=80 keeps the thumbnail out of the cache: every request renders.
      const thumbs = paths.map((p) => `${p}/thumbnail?viewport=128,128&quality=80`);
      const orthancThumbs = orthanc.map((o) => `${o}/rendered?width=128&height=128&quality=80`);
      await rate(thumbs, 4, 2, {});
      const g = await rate(thumbs, N, 8, {});
      const o = orthancRenders ? await rate(orthancThumbs, N, 8, auth) : undefined;
      rows.push({
        metric: `thumbnails/s, ${label}, 8 clients (p50 ${g.latency.p50} / Orthanc ${o?.latency.p50 ?? '-'} ms)`,
        unit: 'req/s',
        gateway: g.perSecond,
        orthanc: o?.perSecond,
        ratio: o ? g.perSecond / o.perSecond : undefined,
        ratioMeaning: 'gateway / Orthanc /rendered',
        target: '≥ 2',
        met: o ? g.perSecond / o.perSecond >= 2 : undefined,
        note: cannot,
      });
      // Orthanc's /preview (full size, asked for JPEG) beside the same gateway thumbnails.
      const op = orthancRenders
        ? await rate(
            orthanc.map((u) => `${u}/preview`),
            N,
            8,
            { ...auth, accept: 'image/jpeg' },
          )
        : undefined;
      rows.push({
        metric: `thumbnails/s vs Orthanc /preview, ${label}, 8 clients`,
        unit: 'req/s',
        gateway: g.perSecond,
        orthanc: op?.perSecond,
        ratio: op ? g.perSecond / op.perSecond : undefined,
        ratioMeaning: 'gateway thumbnail / Orthanc /preview',
        target: '≥ 2',
        met: op ? g.perSecond / op.perSecond >= 2 : undefined,
        note: cannot,
      });
      // The default form (JPEG, THUMBNAIL_SIZE) is served from the thumbnail cache the jobs and first views fill.
      const cached = paths.map((p) => `${p}/thumbnail`);
      await rate(cached, cached.length, 1, {});
      const gc = await rate(cached, N * 2, 8, {});
      rows.push({
        metric: `cached thumbnails/s (default form), ${label}, 8 clients`,
        unit: 'req/s',
        gateway: gc.perSecond,
        orthanc: o?.perSecond,
        ratio: o ? gc.perSecond / o.perSecond : undefined,
        ratioMeaning: 'gateway cache / Orthanc /rendered',
        target: '≥ 2',
        met: o ? gc.perSecond / o.perSecond >= 2 : undefined,
      });
      const reps = Math.min(N, 24);
      const gl = await rate(
        paths.map((p) => `${p}/rendered`),
        reps,
        1,
        {},
      );
      const ol = orthancRenders
        ? await rate(
            orthanc.map((u) => `${u}/rendered`),
            reps,
            1,
            auth,
          )
        : undefined;
      rows.push({
        metric: `rendered frame latency, ${label}, 1 client (p95; p50 ${gl.latency.p50} / Orthanc ${ol?.latency.p50 ?? '-'} ms)`,
        unit: 'ms',
        gateway: gl.latency.p95,
        orthanc: ol?.latency.p95,
        ratio: ol ? gl.latency.p95 / ol.latency.p95 : undefined,
        ratioMeaning: 'gateway / Orthanc (lower is better)',
        note: cannot,
      });
    }

    // The event loop's delay and /healthz latency, idle and while 8 clients render the largest native frame.
    const health = async () => {
      const ms: number[] = [];
      for (let i = 0; i < 40; i++) {
        const t = process.hrtime.bigint();
        await (await fetch(`${gw.url}/healthz`)).arrayBuffer();
        ms.push(msSince(t));
        await new Promise((r) => setTimeout(r, 25));
      }
      return summarise(ms);
    };
    const idle = await health();
    await eventLoopDelay(gw.url);
    const idleLoop = await (async () => {
      await new Promise((r) => setTimeout(r, 1000));
      return eventLoopDelay(gw.url);
    })();
    await eventLoopDelay(gw.url);
    const load = rate([largeRendered], N, 8, {});
    const busy = await health();
    const r = await load;
    const busyLoop = await eventLoopDelay(gw.url);
    rows.push({
      metric: `gateway event-loop delay while 8 clients render the 2048x2560 CR (p99; idle p99 ${idleLoop.p99} ms)`,
      unit: 'ms',
      gateway: busyLoop.p99,
      note: `p50 ${busyLoop.p50} ms, max ${busyLoop.max} ms busy (${round1(r.perSecond)} renders/s); idle p50 ${idleLoop.p50} ms, max ${idleLoop.max} ms`,
    });
    rows.push({
      metric: `gateway /healthz latency while 8 clients render the 2048x2560 CR (p95; idle p95 ${idle.p95} ms)`,
      unit: 'ms',
      gateway: busy.p95,
      note: `p50 ${busy.p50} ms busy, ${idle.p50} ms idle`,
    });
  } finally {
    await gw.stop();
  }
  return {
    suite: 'Rendering and thumbnails (in-process decoding)',
    setup:
      'Synthetic 512x512 CT (4 instances), 1024x1024 CR and 2048x2560 CR (native, and the same image as JPEG 2000 ' +
      `lossless) stored through STOW-RS, plus the RG3 JPEG 2000 (lossy) CR sample; ${N} thumbnail requests (viewport ` +
      "128, quality 80 so the cache is bypassed) with 8 clients against the gateway and against Orthanc's " +
      '/instances/{id}/rendered?width=128&height=128&quality=80 on the same instances; sequential /rendered latency. ' +
      `Load average (1, 5, 15 min): ${loadAtStart} at the start, ${loadAverage()} at the end.`,
    rows,
  };
}
