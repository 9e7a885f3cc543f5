import { Readable } from 'node:stream';
import { MockAgent } from 'undici';
import { generateInstances, type SyntheticInstance } from './synth';
import { BadRequestError } from '../src/errors';
import { parseMultipartRelated, readPartBody } from '../src/dicomweb/multipart';
import { multipartBody, stowInstances, type StowRequestResult } from './stow-client';

const ORIGIN = 'http://gateway.test';
const BASE = `${ORIGIN}/projects/demo/dicom-web`;
const LIMITS = { maxParts: 1000, maxPartBytes: 1 << 26, maxTotalBytes: 1 << 28 };

interface Received {
  headers: Record<string, string>;
  parts: Buffer[];
}

/** A MockAgent standing in for the gateway: parses each STOW body with the gateway's own multipart parser. */
function fakeGateway(status = 200, delayMs = 0) {
  const agent = new MockAgent();
  agent.disableNetConnect();
  const received: Received[] = [];
  let inFlight = 0;
  let maxInFlight = 0;
  agent
    .get(ORIGIN)
    .intercept({ path: '/projects/demo/dicom-web/studies', method: 'POST' })
    .reply(
      status,
      async (opts: { headers?: unknown; body?: unknown }) => {
        inFlight++;
        maxInFlight = Math.max(maxInFlight, inFlight);
        const headers = Object.fromEntries(
          Object.entries(opts.headers as Record<string, string>).map(([k, v]) => [
            k.toLowerCase(),
            String(v),
          ]),
        );
        const parts: Buffer[] = [];
        for await (const part of parseMultipartRelated(
          opts.body as Readable,
          headers['content-type'],
          LIMITS,
        )) {
          expect(part.mediaType).toBe('application/dicom');
          parts.push(await readPartBody(part));
        }
        received.push({ headers, parts });
        await new Promise((r) => setTimeout(r, delayMs));
        inFlight--;
        return JSON.stringify({ '00081199': { vr: 'SQ', Value: parts.map(() => ({})) } });
      },
      { headers: { 'content-type': 'application/dicom+json' } },
    )
    .persist();
  return { agent, received, maxInFlight: () => maxInFlight };
}

const instances = (patients: number, instancesPerSeries = 2): SyntheticInstance[] => [
  ...generateInstances({ patients, seriesPerStudy: 2, instancesPerSeries, rows: 16, cols: 16, seed: 'stow' }),
];

describe('STOW-RS client', () => {
  it('sends one request per study whose parts the gateway parser splits back into the same objects', async () => {
    const gateway = fakeGateway();
    const source = instances(3);
    const summary = await stowInstances(source, {
      baseUrl: BASE,
      token: 'tok-123',
      dispatcher: gateway.agent,
    });

    expect(summary).toMatchObject({ requests: 3, instances: 12, ok: 3, failed: 0, statuses: { 200: 3 } });
    expect(summary.bytes).toBe(source.reduce((n, i) => n + i.buffer.length, 0));
    expect(gateway.received.flatMap((r) => r.parts)).toEqual(source.map((i) => i.buffer));
    summary.results.forEach((result, k) => {
      expect(result.studyInstanceUids).toEqual([source[k * 4].studyInstanceUid]);
      expect(result.body).toEqual({ '00081199': { vr: 'SQ', Value: [{}, {}, {}, {}] } });
    });
    for (const { headers, parts } of gateway.received) {
      expect(headers.authorization).toBe('Bearer tok-123');
      expect(headers.accept).toBe('application/dicom+json');
      expect(headers['content-type']).toMatch(/^multipart\/related; type="application\/dicom"; boundary=/);
      expect(Number(headers['content-length'])).toBeGreaterThan(parts.reduce((n, p) => n + p.length, 0));
    }
    await gateway.agent.close();
  });

  it('batches a fixed number of instances per request and keeps up to `concurrency` requests in flight', async () => {
    const gateway = fakeGateway(200, 30);
    const seen: StowRequestResult[] = [];
    const summary = await stowInstances(instances(4), {
      baseUrl: `${BASE}/`,
      batch: 3,
      concurrency: 3,
      dispatcher: gateway.agent,
      keepResults: false,
      onResult: (r) => seen.push(r),
    });
    expect(summary.requests).toBe(6);
    expect(summary.results).toEqual([]);
    expect(seen.map((r) => r.instances).sort()).toEqual([1, 3, 3, 3, 3, 3]);
    expect(gateway.maxInFlight()).toBe(3);
    await gateway.agent.close();
  });

  it('cuts a study into several requests when it would exceed maxBatchBytes', async () => {
    const gateway = fakeGateway();
    const source = instances(1, 3);
    const summary = await stowInstances(source, {
      baseUrl: BASE,
      // Any two fit, three never do.
      maxBatchBytes: 2 * Math.max(...source.map((i) => i.buffer.length)),
      dispatcher: gateway.agent,
    });
    expect(summary.results.map((r) => r.instances)).toEqual([2, 2, 2]);
    await gateway.agent.close();
  });

  it('reports refusals and unreachable servers per request instead of throwing', async () => {
    const refusing = fakeGateway(409);
    const refused = await stowInstances(instances(2), { baseUrl: BASE, dispatcher: refusing.agent });
    expect(refused).toMatchObject({ requests: 2, ok: 0, failed: 2, statuses: { 409: 2 } });
    await refusing.agent.close();

    const down = new MockAgent();
    down.disableNetConnect();
    down
      .get(ORIGIN)
      .intercept({ path: '/projects/demo/dicom-web/studies', method: 'POST' })
      .replyWithError(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))
      .persist();
    const unreachable = await stowInstances(instances(1), { baseUrl: BASE, dispatcher: down });
    expect(unreachable).toMatchObject({ requests: 1, failed: 1, statuses: { 0: 1 } });
    expect(unreachable.results[0].error).toMatch(/ECONNREFUSED/);
    await down.close();
  });

  it('sends a request not answered 200 again when asked to, and reports its last answer', async () => {
    const flaky = new MockAgent();
    flaky.disableNetConnect();
    const pool = flaky.get(ORIGIN);
    const studies = { path: '/projects/demo/dicom-web/studies', method: 'POST' };
    pool.intercept(studies).reply(503, 'busy');
    pool.intercept(studies).reply(200, '{}', { headers: { 'content-type': 'application/dicom+json' } });
    const summary = await stowInstances(instances(1), { baseUrl: BASE, dispatcher: flaky, retries: 2 });
    expect(summary).toMatchObject({ requests: 1, ok: 1, failed: 0, retried: 1, statuses: { 200: 1 } });
    await flaky.close();

    const refusing = fakeGateway(409);
    const refused = await stowInstances(instances(1), {
      baseUrl: BASE,
      dispatcher: refusing.agent,
      retries: 2,
    });
    expect(refused).toMatchObject({ requests: 1, failed: 1, retried: 2, statuses: { 409: 1 } });
    expect(refusing.received).toHaveLength(3);
    await refusing.agent.close();
  });

  it('sends credentials given in the base URL as Basic authentication, not in the request line', async () => {
    const gateway = fakeGateway();
    const summary = await stowInstances(instances(1), {
      baseUrl: 'http://orthanc:s%3Acret@gateway.test/projects/demo/dicom-web',
      dispatcher: gateway.agent,
    });
    expect(summary.ok).toBe(1);
    const expected = `Basic ${Buffer.from('orthanc:s:cret').toString('base64')}`;
    expect(gateway.received[0].headers.authorization).toBe(expected);
    await gateway.agent.close();
  });

  it('frames parts with an exact Content-Length and a boundary absent from the data', () => {
    const parts = [Buffer.from('first'), Buffer.alloc(0), Buffer.from('third part')];
    const body = multipartBody(parts);
    const bytes = Buffer.concat([...body.chunks()]);
    expect(bytes.length).toBe(body.length);
    expect(bytes.toString('latin1')).toBe(
      `--${body.boundary}\r\nContent-Type: application/dicom\r\n\r\nfirst\r\n` +
        `--${body.boundary}\r\nContent-Type: application/dicom\r\n\r\n\r\n` +
        `--${body.boundary}\r\nContent-Type: application/dicom\r\n\r\nthird part\r\n--${body.boundary}--\r\n`,
    );
    for (const p of parts) expect(p.includes(body.boundary)).toBe(false);
  });

  it('rejects a bad base URL, batch or concurrency before sending anything', async () => {
    await expect(stowInstances([], { baseUrl: 'localhost:8080/dicom-web' })).rejects.toThrow(BadRequestError);
    await expect(stowInstances([], { baseUrl: BASE, batch: 0 })).rejects.toThrow(BadRequestError);
    await expect(stowInstances([], { baseUrl: BASE, concurrency: 0 })).rejects.toThrow(BadRequestError);
    await expect(stowInstances([Buffer.from('x')], { baseUrl: BASE, batch: 'study' })).rejects.toThrow(
      /studyInstanceUid/,
    );
  });
});
