import pino from 'pino';
import type { Context } from 'koa';
import {
  asDependencyError,
  DependencyUnavailableError,
  errorMiddleware,
  isDatabaseUnavailable,
  loggablePath,
  setRetryAfterSeconds,
  warning299,
} from './errors';

describe('errors and logs', () => {
  it('keeps share tokens out of logged paths', () => {
    expect(loggablePath('/share/apsh_secret123/dicom-web/studies')).toBe('/share/-/dicom-web/studies');
    expect(loggablePath('/projects/demo/dicom-web/studies')).toBe('/projects/demo/dicom-web/studies');
  });
  it('quotes Warning: 299 texts safely', () => {
    expect(warning299('bad "limit" value')).toBe(`299 aperture "bad 'limit' value"`);
  });
});

const withCode = (message: string, code: string) => Object.assign(new Error(message), { code });

describe('dependency outages', () => {
  it('recognises the ways node-postgres says the database is unreachable', () => {
    expect(isDatabaseUnavailable(withCode('connect ECONNREFUSED 127.0.0.1:55432', 'ECONNREFUSED'))).toBe(
      true,
    );
    expect(isDatabaseUnavailable(withCode('read ECONNRESET', 'ECONNRESET'))).toBe(true);
    const happyEyeballs = Object.assign(
      new AggregateError([withCode('connect ECONNREFUSED ::1:5432', 'ECONNREFUSED')], ''),
      {},
    );
    expect(isDatabaseUnavailable(happyEyeballs)).toBe(true);
    expect(isDatabaseUnavailable(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isDatabaseUnavailable(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(
      isDatabaseUnavailable(new Error('Client has encountered a connection error and is not queryable')),
    ).toBe(true);
    expect(
      isDatabaseUnavailable(withCode('terminating connection due to administrator command', '57P01')),
    ).toBe(true);
    expect(isDatabaseUnavailable(withCode('the database system is starting up', '57P03'))).toBe(true);
    expect(isDatabaseUnavailable(withCode('sorry, too many clients already', '53300'))).toBe(true);
    expect(isDatabaseUnavailable(withCode('connection failure', '08006'))).toBe(true);
  });

  it('leaves errors of the statement or the code itself alone: they are bugs (500), not outages', () => {
    expect(isDatabaseUnavailable(withCode('duplicate key value violates unique constraint', '23505'))).toBe(
      false,
    );
    expect(isDatabaseUnavailable(withCode('syntax error at or near "SELEC"', '42601'))).toBe(false);
    expect(isDatabaseUnavailable(withCode('invalid byte sequence for encoding "UTF8": 0x00', '22021'))).toBe(
      false,
    );
    expect(isDatabaseUnavailable(new TypeError("Cannot read properties of undefined (reading 'rows')"))).toBe(
      false,
    );
    expect(isDatabaseUnavailable(new AggregateError([], 'nothing'))).toBe(false);
    expect(isDatabaseUnavailable(undefined)).toBe(false);
    expect(asDependencyError(new Error('boom'))).toBeUndefined();
  });

  it('names the dependency, carries Retry-After and nothing of the internals', () => {
    setRetryAfterSeconds(9);
    try {
      const err = asDependencyError(withCode('connect ECONNREFUSED 127.0.0.1:55432', 'ECONNREFUSED'));
      expect(err).toBeInstanceOf(DependencyUnavailableError);
      expect(err).toMatchObject({ status: 503, code: 'dependency_unavailable', dependency: 'database' });
      expect(err!.headers).toEqual({ 'Retry-After': '9' });
      expect(err!.message).not.toMatch(/ECONN|127|55432/);
      expect(new DependencyUnavailableError('archive').message).toMatch(/archive/);
    } finally {
      setRetryAfterSeconds(5);
    }
  });
});

/** A Koa context with just what the error middleware touches. */
function fakeContext(): Context & { headers: Record<string, string> } {
  const headers: Record<string, string> = {};
  return {
    headerSent: false,
    writable: true,
    method: 'GET',
    path: '/dicom-web/studies',
    status: 404,
    body: undefined,
    headers,
    set(k: string, v: string) {
      headers[k.toLowerCase()] = v;
    },
    append(k: string, v: string) {
      headers[k.toLowerCase()] = headers[k.toLowerCase()] ? `${headers[k.toLowerCase()]}, ${v}` : v;
    },
  } as unknown as Context & { headers: Record<string, string> };
}

describe('the error middleware', () => {
  const logger = pino({ level: 'silent' });
  const run = async (err: unknown) => {
    const ctx = fakeContext();
    await errorMiddleware(logger)(ctx, async () => {
      throw err;
    });
    return ctx;
  };

  it('answers a raw database connection failure with 503, Retry-After and the dependency, never 500', async () => {
    const ctx = await run(withCode('connect ECONNREFUSED 127.0.0.1:55432', 'ECONNREFUSED'));
    expect(ctx.status).toBe(503);
    expect(ctx.headers['retry-after']).toBe('5');
    expect(ctx.body).toEqual({
      errors: [
        {
          code: 'dependency_unavailable',
          message: 'the index database is unavailable; retry later',
          dependency: 'database',
        },
      ],
    });
    expect(JSON.stringify(ctx.body) + JSON.stringify(ctx.headers)).not.toMatch(/ECONN|127\.0\.0\.1|55432/);
  });

  it('answers an archive outage with 503 and Retry-After', async () => {
    const ctx = await run(new DependencyUnavailableError('archive'));
    expect(ctx.status).toBe(503);
    expect(ctx.headers['retry-after']).toBe('5');
    expect((ctx.body as { errors: Array<{ dependency: string }> }).errors[0].dependency).toBe('archive');
  });

  it('still answers a real bug with a bare 500', async () => {
    const ctx = await run(new TypeError('oops'));
    expect(ctx.status).toBe(500);
    expect(ctx.headers['retry-after']).toBeUndefined();
  });
});
