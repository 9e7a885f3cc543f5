import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Pool } from 'pg';
import { closeQueues, initQueues } from '../src/jobs/queues';
import { syntheticCopies, waitFor } from './helpers/dimse';
import { SAMPLES, startGateway, type TestGateway } from './helpers/gateway';
import { type PrivateStack, startPrivateStack } from './helpers/private-stack';

jest.setTimeout(300_000);

const CT = `${SAMPLES}/ct/CT_small.dcm`;
const BOUNDARY = 'outage-boundary';
const MULTIPART_TYPE = `multipart/related; type="application/dicom"; boundary=${BOUNDARY}`;
type DicomJson = Record<string, { vr: string; Value?: unknown[] }>;

function part(body: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from(`--${BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n`),
    body,
    Buffer.from('\r\n'),
  ]);
}
const CLOSE = Buffer.from(`--${BOUNDARY}--\r\n`);

interface Answer {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
}

/** An HTTP exchange whose request body the test writes piece by piece (so a dependency can die halfway). */
function openUpload(url: string): {
  write(b: Buffer): Promise<void>;
  end(): void;
  answer: Promise<Answer>;
} {
  const req = http.request(url, {
    method: 'POST',
    headers: { 'content-type': MULTIPART_TYPE, accept: 'application/dicom+json' },
    agent: false,
  });
  const answer = new Promise<Answer>((resolve, reject) => {
    req.on('response', (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () =>
        resolve({
          status: res.statusCode ?? 0,
          headers: res.headers,
          text: Buffer.concat(chunks).toString(),
        }),
      );
      res.on('error', reject);
    });
    req.on('error', (err) => reject(new Error(`the upload got no answer: ${err.message}`)));
  });
  return {
    write: (b) => new Promise<void>((r, j) => req.write(b, (err) => (err ? j(err) : r()))),
    end: () => req.end(),
    answer,
  };
}

const seq = (ds: DicomJson, tag: string) => (ds[tag]?.Value ?? []) as DicomJson[];
const uidOf = (item: DicomJson) => String(item['00081155']?.Value?.[0]);
const reasonOf = (item: DicomJson) => Number(item['00081197']?.Value?.[0]);

/** The error body every dependency outage answers with: which dependency, no internals. */
function expectDependencyAnswer(
  res: { status: number; retryAfter: string | null; text: string },
  dep: string,
) {
  expect(res.status).toBe(503);
  expect(Number(res.retryAfter)).toBeGreaterThan(0);
  const body = JSON.parse(res.text) as {
    errors: Array<{ code: string; message: string; dependency?: string }>;
  };
  expect(body.errors[0]).toMatchObject({ code: 'dependency_unavailable', dependency: dep });
  // Nothing of the internals: no socket errors, addresses or ports, no SQL.
  expect(res.text).not.toMatch(/ECONN|127\.0\.0\.1|:\d{4,5}\b|SELECT|stack|at /);
}

/**
 * Dependencies going away under a running gateway (defect 10 of issue 8): each outage answers 503 with Retry-After
 * and names the dependency, /readyz says which one is down, /healthz stays a liveness check, and the stack script
 * restarts what a kill -9 left behind. A private stack, so that killing services disturbs no other test file.
 */
describe('dependency outages', () => {
  let stack: PrivateStack;
  let gw: TestGateway;
  let tmp: string;
  let db: Pool;
  const get = async (path: string, headers: Record<string, string> = {}) => {
    const started = Date.now();
    const res = await fetch(gw.url + path, { headers, signal: AbortSignal.timeout(20_000) });
    return {
      status: res.status,
      retryAfter: res.headers.get('retry-after'),
      text: await res.text(),
      ms: Date.now() - started,
    };
  };
  const stow = async (files: Buffer[]) => {
    const res = await fetch(`${gw.url}/projects/outage/dicom-web/studies`, {
      method: 'POST',
      headers: { 'content-type': MULTIPART_TYPE, accept: 'application/dicom+json' },
      body: Buffer.concat([...files.map(part), CLOSE]),
      signal: AbortSignal.timeout(60_000),
    });
    return { status: res.status, retryAfter: res.headers.get('retry-after'), text: await res.text() };
  };
  const copies = (name: string, n: number) =>
    syntheticCopies(CT, join(tmp, name), n).map((c) => ({ ...c, bytes: readFileSync(c.path) }));
  const indexed = async (uids: string[]) =>
    (
      await db.query<{ n: number }>(
        'SELECT count(*)::int AS n FROM project_instances WHERE sop_instance_uid = ANY($1)',
        [uids],
      )
    ).rows[0].n;

  beforeAll(async () => {
    stack = await startPrivateStack('aperture-outage-');
    tmp = mkdtempSync(join(tmpdir(), 'aperture-outage-files-'));
    gw = await startGateway({ ...stack.env, RETRY_AFTER_S: '7' });
    initQueues(gw.config);
    db = new Pool({ connectionString: stack.env.DATABASE_URL, max: 2 });
    db.on('error', () => undefined);
    const res = await fetch(`${gw.url}/api/projects`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ id: 'outage', name: 'Outage' }),
    });
    expect(res.status).toBe(201);
  }, 300_000);
  afterAll(async () => {
    await db?.end().catch(() => undefined);
    await closeQueues();
    await gw?.close().catch(() => undefined);
    await stack?.destroy();
    if (tmp) rmSync(tmp, { recursive: true, force: true });
  }, 120_000);

  it('says ready, checking each dependency, while everything is up', async () => {
    const res = await get('/readyz');
    expect(res.status).toBe(200);
    expect(JSON.parse(res.text)).toEqual({
      status: 'ready',
      checks: { database: 'up', archive: 'up', queue: 'up' },
      site: { role: 'primary', replicationLagBytes: 0, replicationLagSeconds: 0, standbys: 0 },
    });
  });

  it('PostgreSQL killed: 503 + Retry-After everywhere it is needed, /readyz names it, and stack.sh up restarts it', async () => {
    const one = copies('pg-down', 1);
    await stack.kill('postgres');

    const ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.retryAfter).toBe('7');
    expect(ready.ms).toBeLessThan(3000);
    expect(JSON.parse(ready.text)).toMatchObject({
      status: 'unavailable',
      // Orthanc's own index is in the same PostgreSQL (orthanc-postgresql): the archive is down with it.
      checks: { database: 'down', archive: 'down', queue: 'up' },
    });
    expect((await get('/healthz')).status).toBe(200);

    const qido = await get('/dicom-web/studies');
    expectDependencyAnswer(qido, 'database');
    expect(qido.retryAfter).toBe('7');
    expectDependencyAnswer(await get('/api/projects'), 'database');
    expectDependencyAnswer(await stow(one.map((c) => c.bytes)), 'database');

    const log = await stack.up();
    expect(log).not.toMatch(/PostgreSQL already running/);
    expect(log).toMatch(/PostgreSQL started/);
    // Orthanc 1.10's PostgreSQL plugin does not reconnect: the stack script restarts it.
    expect(log).toMatch(/lost its index database: restarting it|Orthanc started/);
    await waitFor(
      'QIDO to answer again',
      async () => (await get('/dicom-web/studies')).status === 200,
      30_000,
    );
    const stored = await stow(one.map((c) => c.bytes));
    expect(stored.status).toBe(200);
    expect((await get('/readyz')).status).toBe(200);
  });

  it('PostgreSQL dying mid-STOW: the answer still lists what was stored, the rest failed with Retry-After', async () => {
    const files = copies('pg-mid', 24);
    const upload = openUpload(`${gw.url}/projects/outage/dicom-web/studies`);
    for (const f of files.slice(0, 8)) await upload.write(part(f.bytes));
    // The first parts are through the archive and the index before the database goes.
    await waitFor(
      'the first parts to be indexed',
      async () => (await indexed(files.map((f) => f.sopInstanceUid))) >= 4,
    );
    await stack.kill('postgres');
    for (const f of files.slice(8)) await upload.write(part(f.bytes));
    await upload.write(CLOSE);
    upload.end();
    const answer = await upload.answer;

    expect(answer.status).toBe(202);
    expect(Number(answer.headers['retry-after'])).toBeGreaterThan(0);
    const body = JSON.parse(answer.text) as DicomJson;
    const stored = seq(body, '00081199').map(uidOf);
    const failed = seq(body, '00081198');
    expect(stored.length).toBeGreaterThanOrEqual(4);
    expect(stored.length + failed.length).toBe(files.length);
    for (const f of failed) expect([0xa700, 0x0110]).toContain(reasonOf(f));
    // Each part is accounted for once, in order of the body.
    expect(new Set([...stored, ...failed.map(uidOf)])).toEqual(new Set(files.map((f) => f.sopInstanceUid)));

    await stack.up();
    await waitFor('the database to answer', async () => (await get('/readyz')).status === 200, 30_000);
    // What the answer called stored is indexed, once.
    const rows = await db.query<{ sop_instance_uid: string; n: number }>(
      'SELECT sop_instance_uid, count(*)::int AS n FROM project_instances WHERE sop_instance_uid = ANY($1) GROUP BY 1',
      [stored],
    );
    expect(rows.rows.length).toBe(stored.length);
    expect(rows.rows.every((r) => r.n === 1)).toBe(true);
  });

  it('Orthanc killed: reads of bytes and STOW answer 503 + Retry-After, QIDO still answers, /readyz names it', async () => {
    const one = copies('orthanc-down', 1);
    const ok = await stow(one.map((c) => c.bytes));
    expect(ok.status).toBe(200);
    const c = one[0];
    await stack.kill('orthanc');

    const ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.ms).toBeLessThan(3000);
    expect(JSON.parse(ready.text)).toMatchObject({ checks: { database: 'up', archive: 'down' } });

    expect((await get('/dicom-web/studies')).status).toBe(200);
    expectDependencyAnswer(
      await get(`/dicom-web/studies/${c.studyUid}/series/${c.seriesUid}/instances/${c.sopInstanceUid}`, {
        accept: 'multipart/related; type="application/dicom"',
      }),
      'archive',
    );
    const failed = await stow(copies('orthanc-down-2', 2).map((x) => x.bytes));
    expect(failed.status).toBe(503);
    expect(Number(failed.retryAfter)).toBeGreaterThan(0);
    const body = JSON.parse(failed.text) as DicomJson;
    // The first part fails storing (0x0110); the second too, or is not attempted once the archive is known down (0xA700).
    const reasons = seq(body, '00081198').map(reasonOf);
    expect(reasons).toHaveLength(2);
    expect(reasons[0]).toBe(0x0110);
    expect([0x0110, 0xa700]).toContain(reasons[1]);

    const log = await stack.up();
    expect(log).not.toMatch(/Orthanc already running/);
    expect(log).toMatch(/Orthanc started/);
    expect((await get('/readyz')).status).toBe(200);
  });

  it('Redis killed: the job status answers 503 + Retry-After, /readyz names it, STOW goes on; stack.sh up restarts it', async () => {
    await stack.kill('redis');
    const ready = await get('/readyz');
    expect(ready.status).toBe(503);
    expect(ready.ms).toBeLessThan(3000);
    expect(JSON.parse(ready.text)).toMatchObject({
      checks: { database: 'up', archive: 'up', queue: 'down' },
    });
    const jobs = await get('/api/jobs');
    expectDependencyAnswer(jobs, 'queue');
    expect(jobs.ms).toBeLessThan(5000);
    // Derived work is best effort: storing does not need Redis.
    expect((await stow(copies('redis-down', 1).map((x) => x.bytes))).status).toBe(200);

    const log = await stack.up();
    expect(log).not.toMatch(/Redis already running/);
    expect(log).toMatch(/Redis started/);
    await waitFor('the queue to answer again', async () => (await get('/api/jobs')).status === 200, 30_000);
    expect((await get('/readyz')).status).toBe(200);
  });
});
