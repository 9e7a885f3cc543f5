import Koa from 'koa';
import type { AddressInfo } from 'node:net';
import { Writable } from 'node:stream';
import pino from 'pino';
import {
  BadRequestError,
  DependencyUnavailableError,
  errorMiddleware,
  NotFoundError,
  setRetryAfterSeconds,
  UnauthorizedError,
  UpstreamError,
} from './errors';

/*
 * The one error middleware, over real HTTP: what a client sees for each kind of failure, and what the log keeps.
 * PHI stand-in: a patient name that a careless error message could carry.
 */
const PATIENT = 'Doe^Jane';

interface Answer {
  status: number;
  headers: Headers;
  text: string;
  body: { errors?: Array<{ code: string; message: string; dependency?: string }> };
}

/** Serves one request through errorMiddleware with `handler` behind it; returns the answer and the log lines. */
async function answer(
  handler: Koa.Middleware,
  path = '/dicom-web/studies',
): Promise<Answer & { logs: string[] }> {
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      logs.push(chunk.toString('utf8'));
      cb();
    },
  });
  const app = new Koa();
  // Koa's own last-resort handler would print to stderr; the middleware must leave nothing to it.
  app.silent = true;
  app.use(errorMiddleware(pino({ level: 'debug' }, sink)));
  app.use(handler);
  const server = app.listen(0, '127.0.0.1');
  await new Promise((r) => server.once('listening', r));
  try {
    const { port } = server.address() as AddressInfo;
    const res = await fetch(`http://127.0.0.1:${port}${path}`);
    const text = await res.text();
    return {
      status: res.status,
      headers: res.headers,
      text,
      body: /json/.test(res.headers.get('content-type') ?? '') ? JSON.parse(text) : {},
      logs,
    };
  } finally {
    server.closeAllConnections();
    server.close();
  }
}

const throwing =
  (err: unknown): Koa.Middleware =>
  () => {
    throw err;
  };

describe('the error middleware', () => {
  beforeAll(() => setRetryAfterSeconds(7));
  afterAll(() => setRetryAfterSeconds(5));

  it.each([
    [new BadRequestError('invalid StudyInstanceUID', 'invalid_uid'), 400, 'invalid_uid'],
    [new NotFoundError('study not found'), 404, 'not_found'],
    [new UpstreamError('the archive failed'), 502, 'upstream_error'],
    [new UpstreamError('the archive did not answer in time', true), 504, 'upstream_timeout'],
  ])('answers %p with its status, a JSON error list and a Warning: 299', async (err, status, code) => {
    const a = await answer(throwing(err));
    expect(a.status).toBe(status);
    expect(a.headers.get('content-type')).toMatch(/^application\/json/);
    expect(a.body).toEqual({ errors: [{ code, message: err.message }] });
    expect(a.headers.get('warning')).toBe(`299 aperture "${err.message}"`);
  });

  it('passes the headers an error carries, such as the bearer challenge of a 401', async () => {
    const a = await answer(throwing(new UnauthorizedError('invalid token', 'Bearer error="invalid_token"')));
    expect(a.status).toBe(401);
    expect(a.headers.get('www-authenticate')).toBe('Bearer error="invalid_token"');
    expect(a.body.errors?.[0].code).toBe('unauthorized');
  });

  it('answers an unknown error with a bare 500 that leaks neither message nor stack, and logs it without the query', async () => {
    const bug = new TypeError(`cannot read properties of undefined (patient ${PATIENT})`);
    const a = await answer(throwing(bug), `/dicom-web/studies?PatientName=${encodeURIComponent(PATIENT)}`);
    expect(a.status).toBe(500);
    expect(a.body).toEqual({ errors: [{ code: 'internal_error', message: 'internal error' }] });
    expect(a.text).not.toContain('Doe');
    expect(a.text).not.toMatch(/TypeError|at .*\.ts/);
    expect(a.headers.get('warning')).toBeNull();
    expect(a.headers.get('retry-after')).toBeNull();
    const logged = a.logs.join('');
    expect(logged).toContain('unhandled error');
    expect(logged).toContain('"path":"/dicom-web/studies"');
    expect(logged).not.toContain('PatientName');
  });

  it('answers a dependency that is down with 503, Retry-After and the dependency named, nothing of the internals', async () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 10.1.2.3:5432'), { code: 'ECONNREFUSED' });
    const a = await answer(throwing(refused));
    expect(a.status).toBe(503);
    expect(a.headers.get('retry-after')).toBe('7');
    expect(a.body).toEqual({
      errors: [
        {
          code: 'dependency_unavailable',
          message: 'the index database is unavailable; retry later',
          dependency: 'database',
        },
      ],
    });
    expect(a.text + [...a.headers.values()].join(' ')).not.toMatch(/ECONN|10\.1\.2\.3|5432/);

    const queue = await answer(throwing(new DependencyUnavailableError('queue')));
    expect(queue.status).toBe(503);
    expect(queue.headers.get('retry-after')).toBe('7');
    expect(queue.body.errors?.[0].dependency).toBe('queue');
  });

  it('keeps koa client errors (4xx) as such rather than turning them into 500s', async () => {
    const a = await answer((ctx) => ctx.throw(413, 'request body too large'));
    expect(a.status).toBe(413);
    expect(a.body).toEqual({ errors: [{ code: 'bad_request', message: 'request body too large' }] });
  });

  it('leaves a response that already started alone and logs the failure', async () => {
    const a = await answer((ctx) => {
      ctx.status = 200;
      ctx.res.write('partial');
      throw new Error(`stream broke for ${PATIENT}`);
    });
    expect(a.status).toBe(200);
    expect(a.text.startsWith('partial')).toBe(true);
    expect(a.text).not.toContain('Doe');
    expect(a.logs.join('')).toContain('error after response started');
  });

  it('lets answers that did not fail through untouched', async () => {
    const a = await answer((ctx) => {
      ctx.body = { ok: true };
    });
    expect(a.status).toBe(200);
    expect(a.body).toEqual({ ok: true });
  });
});
