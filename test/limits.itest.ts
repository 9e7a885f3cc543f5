/**
 * The door's own limits (issue 8, defects 8-serving, 9, 12c, 13 and 14), against the real stack: security headers
 * and download names, bounded frame lists, per-principal rate and concurrency limits, oversized and malformed
 * request heads, and request bodies that stop half way. The gateway runs in the production HTTP server
 * (src/http/server.ts), not a bare app.listen(), because the head-size and timeout limits live there.
 */
import { execFile, execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import type { Server } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { promisify } from 'node:util';
import pino from 'pino';
import { createApp } from '../src/app';
import { closeServices, initServices } from '../src/bootstrap';
import { loadConfig } from '../src/config';
import { freePort } from '../tools/net';
import { startOidcIssuer, type OidcIssuer } from '../tools/oidc-issuer/issuer';
import { parsePart10 } from '../src/dicom/parse';
import { createHttpServer } from '../src/http/server';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import type { Logger } from '../src/logger';
import type { Services } from '../src/services';
import { asArchived } from './helpers/dicom-fuzz';
import { passwordToken } from './helpers/auth';
import { resetStack, SAMPLES } from './helpers/gateway';

jest.setTimeout(120_000);

interface Gw {
  url: string;
  port: number;
  services: Services;
  logs: Array<Record<string, unknown>>;
  close(): Promise<void>;
}

const BASE_ENV = { INDEXER_ENABLED: 'false', WADO_MAX_FRAMES: '20' };

/**
 * The gateway in the production HTTP server, its log lines captured as parsed JSON. Services are process-wide
 * (one pool, one archive client), so variants with other limits share the base's services and differ in config.
 */
async function start(env: Record<string, string>, base?: Gw): Promise<Gw> {
  const config = loadConfig({ ...process.env, ...BASE_ENV, ...env });
  const logs: Array<Record<string, unknown>> = base?.logs ?? [];
  let services: Services;
  let logger: Logger;
  if (base) {
    services = { ...base.services, config };
    logger = base.services.logger;
  } else {
    const sink = new Writable({
      write(chunk: Buffer, _enc, cb) {
        for (const line of chunk.toString('utf8').split('\n').filter(Boolean)) {
          logs.push(JSON.parse(line) as Record<string, unknown>);
        }
        cb();
      },
    });
    logger = pino({ level: 'info' }, sink);
    services = await initServices(config, logger);
  }
  const server: Server = createHttpServer(createApp(services), config, logger);
  server.listen(0, '127.0.0.1');
  await new Promise<void>((r) => server.once('listening', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    port,
    services,
    logs,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((r) => server.close(() => r()));
      if (!base) await closeServices(services);
    },
  };
}

/** Writes raw bytes to the gateway and collects what comes back until the server closes or `waitMs` pass. */
function rawExchange(
  port: number,
  send: (write: (b: Buffer | string) => void) => void,
  waitMs: number,
): Promise<{ text: string; closed: boolean; ms: number }> {
  return new Promise((resolve) => {
    const started = Date.now();
    const sock = connect(port, '127.0.0.1');
    const chunks: Buffer[] = [];
    let closed = false;
    const finish = () => {
      clearTimeout(timer);
      sock.destroy();
      resolve({ text: Buffer.concat(chunks).toString('latin1'), closed, ms: Date.now() - started });
    };
    const timer = setTimeout(finish, waitMs);
    sock.on('data', (c: Buffer) => chunks.push(c));
    sock.on('error', () => undefined);
    sock.on('close', () => {
      closed = true;
      finish();
    });
    sock.on('connect', () => send((b) => sock.write(b)));
  });
}

// Ingest zeroes non-zero preambles (CVE-2019-11687): answers are compared with the samples as archived.
const read = (p: string) => asArchived(readFileSync(`${SAMPLES}/${p}`));
const MF = 'mr/emri_small_enhanced-10frames.dcm';
const CT = 'ct/CT_small.dcm';

function info(path: string) {
  const p = parsePart10(read(path));
  return { study: p.studyInstanceUid, series: p.seriesInstanceUid, sop: p.sopInstanceUid };
}
const wado = (s: ReturnType<typeof info>) =>
  `/projects/alpha/dicom-web/studies/${s.study}/series/${s.series}/instances/${s.sop}`;

/** Frame parts of a multipart/related answer, as buffers. */
function parts(body: Buffer, contentType: string): Buffer[] {
  const boundary = /boundary="?([^";]+)"?/.exec(contentType)![1];
  const text = body.toString('latin1');
  return text
    .split(`--${boundary}`)
    .slice(1, -1)
    .map((p) => Buffer.from(p.slice(p.indexOf('\r\n\r\n') + 4, -2), 'latin1'));
}

describe('limits at the door', () => {
  let issuer: OidcIssuer;
  let gw: Gw;
  let auth: Record<string, string>;
  let authLine: string;
  const mf = info(MF);
  const ct = info(CT);
  /** fetch as carol (a global administrator of the realm), through the auth-on gateway. */
  const get = (url: string, init: { headers?: Record<string, string> } = {}) =>
    fetch(url, { headers: { ...auth, ...init.headers } });
  /** A variant of the gateway with other limits, sharing the base's services. */
  const variant = (env: Record<string, string>) =>
    start({ AUTH_ENABLED: 'true', OIDC_ISSUER: issuer.issuer, ...env }, gw);

  beforeAll(async () => {
    await resetStack();
    issuer = await startOidcIssuer();
    gw = await start({ AUTH_ENABLED: 'true', OIDC_ISSUER: issuer.issuer });
    const token = await passwordToken(issuer, 'carol');
    auth = { authorization: `Bearer ${token}` };
    authLine = `Authorization: Bearer ${token}\r\n`;
    await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
    for (const p of [MF, CT]) {
      const out = await ingestInstance(gw.services, read(p), ['alpha'], 'stow');
      expect(out.ok).toBe(true);
    }
  });
  afterAll(async () => {
    await gw?.close();
    await issuer?.close();
  });

  describe('security headers (defect 13)', () => {
    it('sends nosniff, a CSP that forbids framing, no referrer and no-store on patient data', async () => {
      const res = await get(`${gw.url}/projects/alpha/dicom-web/studies`);
      expect(res.status).toBe(200);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('content-security-policy')).toBe("default-src 'none'; frame-ancestors 'none'");
      expect(res.headers.get('referrer-policy')).toBe('no-referrer');
      expect(res.headers.get('cache-control')).toBe('private, no-store');
      expect(res.headers.get('strict-transport-security')).toBeNull();
    });

    it('keeps them on refusals', async () => {
      const res = await get(`${gw.url}/projects/alpha/dicom-web/studies/1.2.3/metadata`);
      expect(res.status).toBe(404);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(res.headers.get('content-security-policy')).toContain("frame-ancestors 'none'");
    });

    it('keeps ETag revalidation of metadata while forbidding storage', async () => {
      const first = await get(`${gw.url}${wado(ct)}/metadata`);
      const etag = first.headers.get('etag')!;
      expect(etag).toBeTruthy();
      expect(first.headers.get('cache-control')).toContain('no-store');
      const again = await get(`${gw.url}${wado(ct)}/metadata`, { headers: { 'if-none-match': etag } });
      expect(again.status).toBe(304);
    });

    it('sends HSTS when a trusted proxy says the request came over TLS', async () => {
      const proxied = await variant({ TRUST_PROXY: 'true' });
      try {
        const res = await fetch(`${proxied.url}/healthz`, { headers: { 'x-forwarded-proto': 'https' } });
        expect(res.headers.get('strict-transport-security')).toMatch(/^max-age=31536000/);
        const plain = await fetch(`${proxied.url}/healthz`);
        expect(plain.headers.get('strict-transport-security')).toBeNull();
      } finally {
        await proxied.close();
      }
    });
  });

  describe('downloads are attachments (defect 8, serving half)', () => {
    it('WADO-URI answers the object as an attachment named by its UID', async () => {
      const res = await get(
        `${gw.url}/projects/alpha/wado?requestType=WADO&studyUID=${ct.study}&seriesUID=${ct.series}&objectUID=${ct.sop}&contentType=application/dicom`,
      );
      expect(res.status).toBe(200);
      expect(res.headers.get('content-disposition')).toBe(`attachment; filename="${ct.sop}.dcm"`);
      expect(res.headers.get('x-content-type-options')).toBe('nosniff');
      expect(Buffer.from(await res.arrayBuffer()).equals(read(CT))).toBe(true);
    });

    it('WADO-RS instance, ZIP, multipart and bulk data answers are attachments too', async () => {
      const single = await get(`${gw.url}${wado(ct)}`, { headers: { accept: 'application/dicom' } });
      expect(single.headers.get('content-disposition')).toBe(`attachment; filename="${ct.sop}.dcm"`);
      await single.arrayBuffer();
      const zip = await get(`${gw.url}/projects/alpha/dicom-web/studies/${ct.study}`, {
        headers: { accept: 'application/zip' },
      });
      expect(zip.headers.get('content-disposition')).toMatch(/^attachment; filename="[0-9.]+\.zip"$/);
      await zip.arrayBuffer();
      const mp = await get(`${gw.url}/projects/alpha/dicom-web/studies/${ct.study}`);
      expect(mp.headers.get('content-disposition')).toMatch(/^attachment; filename="[0-9.]+\.multipart"$/);
      await mp.arrayBuffer();
      const bulk = await get(`${gw.url}${wado(ct)}/bulk/7FE00010`, {
        headers: { accept: 'application/octet-stream' },
      });
      expect(bulk.status).toBe(200);
      expect(bulk.headers.get('content-disposition')).toMatch(/^attachment; filename="[0-9.]+\.bin"$/);
      await bulk.arrayBuffer();
    });
  });

  describe('frame lists (defect 9)', () => {
    const frames = async (list: string) => {
      const res = await get(`${gw.url}${wado(mf)}/frames/${list}`, {
        headers: { accept: 'multipart/related; type="application/octet-stream"; transfer-syntax=*' },
      });
      const body = Buffer.from(await res.arrayBuffer());
      return { status: res.status, body, type: res.headers.get('content-type') ?? '', text: body.toString() };
    };

    it('answers each frame once, in the order first asked', async () => {
      const one = await frames('1,1,1');
      expect(one.status).toBe(200);
      expect(parts(one.body, one.type)).toHaveLength(1);
      const mixed = await frames('3,1,3,2,1');
      const got = parts(mixed.body, mixed.type);
      expect(got).toHaveLength(3);
      for (const [k, f] of [3, 1, 2].entries()) {
        const single = await frames(String(f));
        expect(got[k].equals(parts(single.body, single.type)[0])).toBe(true);
      }
    });

    it('refuses frame numbers beyond the object with 404 and frame 0 with 400', async () => {
      expect((await frames('1,11')).status).toBe(404);
      expect((await frames('0')).status).toBe(400);
    });

    it('refuses lists longer than WADO_MAX_FRAMES with 400, quickly', async () => {
      const started = Date.now();
      const amplified = await frames(Array(5000).fill('1').join(','));
      expect(amplified.status).toBe(400);
      expect(amplified.text).toMatch(/at most 20 frame numbers/);
      expect(amplified.body.length).toBeLessThan(4096);
      expect(Date.now() - started).toBeLessThan(2000);
      expect((await frames(Array(21).fill('2').join(','))).status).toBe(400);
      expect((await frames(Array(20).fill('2').join(','))).status).toBe(200);
    });
  });

  describe('rate and concurrency per principal (defect 9)', () => {
    it('answers 429 with Retry-After beyond the rate, per caller', async () => {
      const limited = await variant({ RATE_LIMIT_PER_S: '2', RATE_LIMIT_BURST: '3' });
      try {
        const statuses: number[] = [];
        let refused: { retryAfter: string | null; body: { errors: Array<{ code: string }> } } | undefined;
        for (let i = 0; i < 5; i++) {
          const res = await get(`${limited.url}/projects/alpha/dicom-web/studies`);
          statuses.push(res.status);
          const text = await res.text();
          if (res.status === 429) {
            refused = { retryAfter: res.headers.get('retry-after'), body: JSON.parse(text) as never };
          }
        }
        expect(statuses.slice(0, 3)).toEqual([200, 200, 200]);
        expect(statuses).toContain(429);
        expect(Number(refused!.retryAfter)).toBeGreaterThanOrEqual(1);
        expect(refused!.body.errors[0].code).toBe('too_many_requests');
        // Another principal has its own budget.
        const alice = await passwordToken(issuer, 'alice');
        const other = await fetch(`${limited.url}/dicom-web/studies`, {
          headers: { authorization: `Bearer ${alice}` },
        });
        expect(other.status).toBe(200);
        // Health checks are never limited.
        expect((await fetch(`${limited.url}/healthz`)).status).toBe(200);
      } finally {
        await limited.close();
      }
    });

    it('answers 429 while the same caller already has CONCURRENCY_LIMIT requests in progress', async () => {
      const limited = await variant({ CONCURRENCY_LIMIT: '1', HTTP_BODY_IDLE_TIMEOUT_MS: '3000' });
      try {
        // A STOW whose body stalls holds the one slot.
        const held = rawExchange(
          limited.port,
          (w) =>
            w(
              'POST /projects/alpha/dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n' +
                authLine +
                'Content-Type: multipart/related; type="application/dicom"; boundary=b\r\n\r\n--b\r\n',
            ),
          8000,
        );
        await new Promise((r) => setTimeout(r, 500));
        const second = await get(`${limited.url}/projects/alpha/dicom-web/studies`);
        expect(second.status).toBe(429);
        expect(second.headers.get('retry-after')).toBe('1');
        await held;
        // The slot is free again once the stalled request has been answered.
        expect((await get(`${limited.url}/projects/alpha/dicom-web/studies`)).status).toBe(200);
      } finally {
        await limited.close();
      }
    });
  });

  describe('request heads (defect 12c, 16)', () => {
    it('answers a 64 KiB bearer token with 401 and WWW-Authenticate, not 431', async () => {
      const res = await fetch(`${gw.url}/dicom-web/studies`, {
        headers: { authorization: `Bearer ${'a'.repeat(64 * 1024)}` },
      });
      expect(res.status).toBe(401);
      expect(res.headers.get('www-authenticate')).toMatch(/^Bearer realm="aperture", error="invalid_token"/);
      expect(res.headers.get('www-authenticate')).toContain('16384');
      // A real token still works on the same gateway.
      expect((await get(`${gw.url}/dicom-web/studies`)).status).toBe(200);
    });

    it('answers a head beyond HTTP_MAX_HEADER_BYTES with a 431 that says why', async () => {
      const r = await rawExchange(
        gw.port,
        (w) => w(`GET /dicom-web/studies HTTP/1.1\r\nHost: x\r\nX-Big: ${'b'.repeat(200 * 1024)}\r\n\r\n`),
        5000,
      );
      expect(r.text).toMatch(/^HTTP\/1.1 431 /);
      expect(r.text).toContain('nosniff');
      expect(r.text).toMatch(/exceed 131072 bytes/);
    });

    it('logs parse errors as one structured line each, without stack or bytes', async () => {
      const before = gw.logs.length;
      const r = await rawExchange(gw.port, (w) => w('GARBAGE\x00\x01 / HTTP/9.9\r\n\r\n'), 5000);
      expect(r.text).toMatch(/^HTTP\/1.1 400 /);
      const lines = gw.logs.slice(before).filter((l) => l.msg === 'http parse error');
      expect(lines).toHaveLength(1);
      expect(typeof lines[0].code).toBe('string');
      expect(JSON.stringify(lines[0])).not.toMatch(/GARBAGE|stack/);
      expect((await fetch(`${gw.url}/healthz`)).status).toBe(200);
    });
  });

  describe('request timeouts (defect 14)', () => {
    let slow: Gw;
    beforeAll(async () => {
      slow = await variant({
        HTTP_HEADERS_TIMEOUT_MS: '1000',
        HTTP_BODY_IDLE_TIMEOUT_MS: '1000',
        HTTP_REQUEST_TIMEOUT_MS: '4000',
      });
    });
    afterAll(async () => {
      await slow?.close();
    });

    const head = (length: number) =>
      'POST /projects/alpha/dicom-web/studies HTTP/1.1\r\nHost: x\r\nAccept: application/dicom+json\r\n' +
      authLine +
      `Content-Type: multipart/related; type="application/dicom"; boundary=b\r\nContent-Length: ${length}\r\n\r\n`;

    it('answers a STOW whose body stops half way with 408 listing the parts already stored', async () => {
      const part = read(CT);
      const stalled = Buffer.concat([
        Buffer.from('--b\r\nContent-Type: application/dicom\r\n\r\n'),
        part,
        Buffer.from('\r\n--b\r\nContent-Type: application/dicom\r\n\r\n'),
        part.subarray(0, 1000),
      ]);
      const r = await rawExchange(
        slow.port,
        (w) => {
          w(head(stalled.length + 100_000));
          w(stalled);
        },
        15_000,
      );
      expect(r.text).toMatch(/^HTTP\/1.1 408 /);
      expect(r.ms).toBeLessThan(8000);
      const body = JSON.parse(r.text.slice(r.text.indexOf('\r\n\r\n') + 4)) as Record<
        string,
        { Value?: Array<Record<string, { Value?: string[] }>> }
      >;
      expect(body['00081199'].Value!.map((i) => i['00081155'].Value![0])).toEqual([ct.sop]);
      expect(r.closed).toBe(true);
    });

    it('answers 408 when nothing was stored before the body stalled', async () => {
      const r = await rawExchange(slow.port, (w) => w(head(5000) + '--b\r\n'), 15_000);
      expect(r.text).toMatch(/^HTTP\/1.1 408 /);
      expect(r.text).toContain('request_timeout');
    });

    it('cuts a body that trickles beyond the total request timeout', async () => {
      let timer: NodeJS.Timeout | undefined;
      const r = await rawExchange(
        slow.port,
        (w) => {
          w(head(1_000_000) + '--b\r\nContent-Type: application/dicom\r\n\r\n');
          timer = setInterval(() => w('x'), 200);
        },
        15_000,
      );
      clearInterval(timer);
      expect(r.text).toMatch(/^HTTP\/1.1 408 /);
      expect(r.ms).toBeGreaterThanOrEqual(3500);
      expect(r.ms).toBeLessThan(10_000);
    });

    it('closes a connection whose request head never completes', async () => {
      const r = await rawExchange(slow.port, (w) => w('GET /healthz HTTP/1.1\r\nHost: x\r\n'), 40_000);
      expect(r.closed).toBe(true);
      expect(r.ms).toBeLessThan(5000);
      expect(r.text === '' || /^HTTP\/1.1 408 /.test(r.text)).toBe(true);
    });
  });
});

describe('calling AE allow-list on the DICOM port (defect 13)', () => {
  const run = promisify(execFile);
  const stack = join(__dirname, '../scripts/stack.sh');
  let dir: string;
  let env: NodeJS.ProcessEnv;
  let rest: { url: string; auth: string };

  beforeAll(async () => {
    // A second Orthanc, alone, started by the same script as every stack, with the allow-list on.
    dir = mkdtempSync(join(tmpdir(), 'aperture-allowlist-'));
    env = {
      ...process.env,
      STACK_DIR: dir,
      ORTHANC_HTTP_PORT: String(await freePort()),
      ORTHANC_DICOM_PORT: String(await freePort()),
      ORTHANC_DICOM_ALLOWED: 'GOODSCU@127.0.0.1,ELSEWHERE@192.0.2.1',
    };
    const out = execFileSync('bash', [stack, 'orthanc'], { env, encoding: 'utf8', timeout: 120_000 });
    const kv = Object.fromEntries(
      out
        .split('\n')
        .map((l) => /^([A-Z_]+)=(.*)$/.exec(l))
        .filter((m): m is RegExpExecArray => m !== null)
        .map((m) => [m[1], m[2]]),
    );
    rest = {
      url: kv.ORTHANC_URL,
      auth: 'Basic ' + Buffer.from(`${kv.ORTHANC_USERNAME}:${kv.ORTHANC_PASSWORD}`).toString('base64'),
    };
  });
  afterAll(() => {
    if (!dir) return;
    execFileSync('bash', [stack, 'down'], { env, stdio: 'ignore' });
    rmSync(dir, { recursive: true, force: true });
  });

  /** storescu as a modality would send, with the given calling AE title; resolves to its exit code. */
  const storescu = async (callingAet: string): Promise<{ code: number; output: string }> => {
    try {
      const r = await run(
        'storescu',
        ['-aet', callingAet, '-aec', 'LUNGSTUDY', '127.0.0.1', env.ORTHANC_DICOM_PORT!, `${SAMPLES}/${CT}`],
        { timeout: 60_000 },
      );
      return { code: 0, output: r.stdout + r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: e.code ?? -1, output: `${e.stdout ?? ''}${e.stderr ?? ''}` };
    }
  };
  const instances = async () =>
    (
      (await (
        await fetch(`${rest.url}/instances`, { headers: { authorization: rest.auth } })
      ).json()) as string[]
    ).length;

  it('refuses a calling AE title that is not listed', async () => {
    const r = await storescu('INTRUDER');
    expect(r.code).not.toBe(0);
    expect(r.output).toMatch(/Calling AE Title Not Recognized/);
    expect(await instances()).toBe(0);
  });

  it('refuses a listed AE title calling from another address', async () => {
    const r = await storescu('ELSEWHERE');
    expect(r.code).not.toBe(0);
    expect(await instances()).toBe(0);
  });

  it('stores from a listed AE title at its address', async () => {
    const r = await storescu('GOODSCU');
    expect(r.code).toBe(0);
    expect(await instances()).toBe(1);
  });
});
