/**
 * Graceful shutdown under load (issue 17, "Operations"): two gateway processes behind a real HAProxy, readers and
 * uploaders sending through it, and one gateway told to stop (SIGTERM) mid-run. Nothing may fail: the stopping
 * gateway leaves rotation through /readyz ("draining") while it still answers, finishes what is in flight (a slow
 * STOW sent straight to it included), and exits 0; every acknowledged instance is indexed exactly once. Its log is
 * pure JSON and every line written for a request carries that request's id.
 */
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { mkdtempSync, rmSync } from 'node:fs';
import { Readable } from 'node:stream';
import { Agent, request } from 'undici';
import { multipartBody } from '../tools/stow-client';
import { type Balancer, startBalancer } from './helpers/balancer';
import { freePort, type GatewayChild, spawnGateway, syntheticCopies, waitFor } from './helpers/dimse';
import { resetStack, SAMPLES } from './helpers/gateway';

jest.setTimeout(180_000);

const PROJECT = 'drain';
const TEMPLATE = `${SAMPLES}/ct/CT_small.dcm`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

let a: GatewayChild | undefined;
let b: GatewayChild | undefined;
let lb: Balancer | undefined;
let dir: string;

beforeAll(async () => {
  await resetStack();
  dir = mkdtempSync(join(tmpdir(), 'aperture-drain-'));
  const env = { SHUTDOWN_GRACE_MS: '1500', SHUTDOWN_TIMEOUT_MS: '60000' };
  [a, b] = await Promise.all([
    freePort().then((p) => spawnGateway(p, env)),
    freePort().then((p) => spawnGateway(p, env)),
  ]);
  lb = await startBalancer({ a: a.url, b: b.url });
  const res = await fetch(`${lb.url}/api/projects`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ id: PROJECT, name: 'Graceful shutdown' }),
  });
  expect(res.status).toBe(201);
});

afterAll(async () => {
  await lb?.stop();
  await Promise.all([a?.stop('SIGKILL'), b?.stop('SIGKILL')]);
  if (dir) rmSync(dir, { recursive: true, force: true });
});

interface Outcome {
  kind: string;
  status?: number;
  servedBy?: string;
  error?: string;
  at: number;
}

async function stow(
  base: string,
  files: string[],
  agent: Agent,
  slowMs = 0,
): Promise<Outcome & { acked: string[] }> {
  const body = multipartBody(files.map((f) => readFileSync(f)));
  async function* slowly() {
    for (const chunk of body.chunks()) {
      // A slow uploader: the body trickles in over about slowMs.
      if (slowMs) await sleep(slowMs / (files.length * 2 + 1));
      yield chunk;
    }
  }
  const res = await request(`${base}/projects/${PROJECT}/dicom-web/studies`, {
    method: 'POST',
    dispatcher: agent,
    headers: {
      'content-type': body.contentType,
      'content-length': String(body.length),
      accept: 'application/dicom+json',
    },
    body: Readable.from(slowly()),
  });
  const json = (await res.body.json()) as Record<
    string,
    { Value?: Array<Record<string, { Value?: string[] }>> }
  >;
  const acked = (json['00081199']?.Value ?? []).map((item) => item['00081155']?.Value?.[0] ?? '');
  return {
    kind: 'stow',
    status: res.statusCode,
    servedBy: header(res.headers['x-served-by']),
    at: Date.now(),
    acked,
  };
}

function header(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

describe('graceful shutdown behind HAProxy', () => {
  it('stops one of two gateways mid-load with no failed request and nothing lost', async () => {
    const base = lb!.url;
    // Something to read: one study of 4 instances.
    const seed = syntheticCopies(TEMPLATE, join(dir, 'seed'), 4);
    const agent = new Agent({ connections: 16, keepAliveTimeout: 4_000 });
    expect(
      (
        await stow(
          base,
          seed.map((s) => s.path),
          agent,
        )
      ).status,
    ).toBe(200);
    const { studyUid, seriesUid, sopInstanceUid } = seed[0];
    const reads = [
      `/projects/${PROJECT}/dicom-web/studies?limit=10`,
      `/projects/${PROJECT}/dicom-web/studies/${studyUid}/series/${seriesUid}/metadata`,
      `/projects/${PROJECT}/dicom-web/studies/${studyUid}/series/${seriesUid}/instances/${sopInstanceUid}`,
    ];

    const outcomes: Outcome[] = [];
    const acked: string[] = [];
    let running = true;
    let n = 0;
    const reader = async () => {
      while (running) {
        const path = reads[n++ % reads.length];
        try {
          const res = await request(`${base}${path}`, {
            dispatcher: agent,
            headers: {
              accept: path.endsWith(sopInstanceUid) ? 'application/dicom' : 'application/dicom+json',
            },
          });
          await res.body.dump({ limit: Infinity });
          outcomes.push({
            kind: 'read',
            status: res.statusCode,
            servedBy: header(res.headers['x-served-by']),
            at: Date.now(),
          });
        } catch (err) {
          outcomes.push({ kind: 'read', error: (err as Error).message, at: Date.now() });
        }
      }
    };
    let batch = 0;
    const uploader = async () => {
      while (running) {
        const files = syntheticCopies(TEMPLATE, join(dir, `up-${batch++}`), 2).map((c) => c.path);
        try {
          const out = await stow(base, files, agent);
          outcomes.push(out);
          if (out.status === 200) acked.push(...out.acked);
        } catch (err) {
          outcomes.push({ kind: 'stow', error: (err as Error).message, at: Date.now() });
        }
      }
    };
    const clients = [reader(), reader(), reader(), reader(), uploader(), uploader()];
    await sleep(2_000);

    // A slow STOW straight to gateway a, in flight when it is told to stop.
    const slowCopies = syntheticCopies(TEMPLATE, join(dir, 'slow'), 3);
    const direct = new Agent({ connections: 1 });
    const slow = stow(
      a!.url,
      slowCopies.map((c) => c.path),
      direct,
      2_500,
    );
    await sleep(300);
    const signalledAt = Date.now();
    a!.child.kill('SIGTERM');
    const exitCode = new Promise<number | null>((r) => a!.child.once('exit', (code) => r(code)));
    // Keeps loading through the drain and for a while on b alone.
    await a!.exited;
    const exitedAt = Date.now();
    await sleep(1_500);
    running = false;
    await Promise.all(clients);
    const slowOut = await slow;
    await Promise.all([agent.close(), direct.close()]);

    // The stopping gateway drained: the slow upload it had accepted was answered and stored.
    expect(await exitCode).toBe(0);
    expect(slowOut.status).toBe(200);
    expect([...slowOut.acked].sort()).toEqual(slowCopies.map((c) => c.sopInstanceUid).sort());
    acked.push(...slowOut.acked);

    // Nothing failed: every request through the balancer was answered with success, before, during and after.
    const failed = outcomes.filter((o) => o.error || (o.status ?? 0) >= 300);
    expect(failed.map((o) => `${o.kind} ${o.status ?? o.error} via ${o.servedBy ?? '-'}`)).toEqual([]);
    const servedBy = (who: string, from: number, to: number) =>
      outcomes.filter((o) => o.servedBy === who && o.at >= from && o.at <= to).length;
    // Both gateways carried the load before the signal; b alone after a was gone.
    expect(servedBy('a', 0, signalledAt)).toBeGreaterThan(0);
    expect(servedBy('b', 0, signalledAt)).toBeGreaterThan(0);
    expect(servedBy('b', exitedAt, Infinity)).toBeGreaterThan(0);
    expect(servedBy('a', exitedAt + 50, Infinity)).toBe(0);
    expect(outcomes.filter((o) => o.kind === 'stow').length).toBeGreaterThan(4);

    // Every acknowledged instance is indexed exactly once (QIDO through the survivor).
    const unique = new Set(acked);
    expect(unique.size).toBe(acked.length);
    const indexed = await waitFor(
      'every acknowledged instance in the index',
      async () => {
        const res = await fetch(`${b!.url}/projects/${PROJECT}/dicom-web/instances?limit=1000`);
        const rows = (await res.json()) as Array<Record<string, { Value?: string[] }>>;
        const uids = rows.map((r) => r['00080018']?.Value?.[0] ?? '');
        return [...unique].every((u) => uids.includes(u)) ? uids : undefined;
      },
      20_000,
      200,
    );
    expect(indexed.length).toBe(new Set(indexed).size);
    expect(indexed.length).toBe(unique.size + seed.length);

    // The stopping gateway said what it did, in order, and every line of its log was JSON.
    expect(a!.nonJsonLines).toEqual([]);
    const msgs = a!.logs.map((l) => String(l.msg));
    const draining = msgs.findIndex((m) => m.startsWith('draining'));
    const drained = msgs.findIndex((m) => m.startsWith('drained'));
    expect(draining).toBeGreaterThanOrEqual(0);
    expect(drained).toBeGreaterThan(draining);
  });

  it('puts the request id on every log line written for a request, and takes a caller id only if it is plain', async () => {
    const gw = b!;
    const before = gw.logs.length;
    const res = await fetch(`${gw.url}/projects/${PROJECT}/dicom-web/studies?StudyDate=notadate`, {
      headers: { 'X-Request-Id': 'trace-42.a' },
    });
    expect(res.status).toBe(400);
    expect(res.headers.get('x-request-id')).toBe('trace-42.a');
    const bad = await fetch(`${gw.url}/healthz`, { headers: { 'X-Request-Id': 'x'.repeat(200) } });
    const given = bad.headers.get('x-request-id') ?? '';
    expect(given).toMatch(/^[0-9a-f-]{36}$/);
    // A STOW logs from deep inside ingest; every line it causes carries its id.
    const files = syntheticCopies(TEMPLATE, join(dir, 'ids'), 1).map((c) => c.path);
    const up = await stow(gw.url, files, new Agent());
    expect(up.status).toBe(200);
    await sleep(200);
    const lines = gw.logs.slice(before);
    expect(gw.nonJsonLines).toEqual([]);
    const forRequests = lines.filter((l) => l.msg === 'request');
    expect(forRequests.length).toBeGreaterThanOrEqual(3);
    expect(forRequests.every((l) => typeof l.req === 'string')).toBe(true);
    const ofBadQuery = lines.filter((l) => l.req === 'trace-42.a');
    expect(ofBadQuery.length).toBeGreaterThanOrEqual(1);
    // Lines other than the request line itself, written inside a request, carry the id too.
    const inner = lines.filter((l) => l.msg !== 'request' && l.req !== undefined);
    expect(inner.length).toBeGreaterThan(0);
  });
});
