import { NotFoundError, UpstreamError } from '../errors';
import { OrthancHttpError } from '../orthanc/client';
import { failureMessage, isInfrastructureError } from './arrival';

const pgError = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('telling an unavailable dependency from an object that cannot be indexed', () => {
  it('holds the feed for a database or archive that is down', () => {
    for (const code of ['08006', '08001', '53300', '57P01', '58030', '40P01', '40001', 'XX000']) {
      expect({ code, infra: isInfrastructureError(pgError(code)) }).toEqual({ code, infra: true });
    }
    for (const code of ['ECONNREFUSED', 'ECONNRESET', 'EPIPE', 'ETIMEDOUT']) {
      expect({ code, infra: isInfrastructureError(pgError(code)) }).toEqual({ code, infra: true });
    }
    expect(isInfrastructureError(new Error('Connection terminated unexpectedly'))).toBe(true);
    expect(isInfrastructureError(new Error('timeout exceeded when trying to connect'))).toBe(true);
    expect(isInfrastructureError(new UpstreamError('the archive is unreachable'))).toBe(true);
    expect(isInfrastructureError(new UpstreamError('slow', true))).toBe(true);
    expect(isInfrastructureError(new OrthancHttpError(503, 'resource', ''))).toBe(true);
    // Behind a load balancer, an Orthanc that dies mid-request shows as 502 or 504 from the balancer.
    expect(isInfrastructureError(new OrthancHttpError(502, 'resource', ''))).toBe(true);
    expect(isInfrastructureError(new OrthancHttpError(504, 'resource', ''))).toBe(true);
    // undici: a connection closed in the middle of an answer (the body of an instance file cut short).
    for (const code of [
      'UND_ERR_SOCKET',
      'UND_ERR_CLOSED',
      'UND_ERR_BODY_TIMEOUT',
      'UND_ERR_HEADERS_TIMEOUT',
    ]) {
      expect({ code, infra: isInfrastructureError(pgError(code, 'other side closed')) }).toEqual({
        code,
        infra: true,
      });
    }
    expect(isInfrastructureError(new TypeError('terminated', { cause: pgError('UND_ERR_SOCKET') }))).toBe(
      true,
    );
  });
  it("blames the object for data errors, constraint violations, Orthanc's refusals and bugs", () => {
    for (const code of ['22P05', '22021', '22P02', '22003', '23505', '42703']) {
      expect({ code, infra: isInfrastructureError(pgError(code)) }).toEqual({ code, infra: false });
    }
    expect(isInfrastructureError(new OrthancHttpError(500, 'resource', ''))).toBe(false);
    expect(isInfrastructureError(new OrthancHttpError(400, 'resource', ''))).toBe(false);
    expect(isInfrastructureError(new NotFoundError())).toBe(false);
    expect(isInfrastructureError(new TypeError('Cannot read properties of undefined'))).toBe(false);
    expect(isInfrastructureError(undefined)).toBe(false);
    expect(isInfrastructureError(pgError('UND_ERR_ABORTED'))).toBe(false);
    expect(isInfrastructureError(new TypeError('x', { cause: new TypeError('y') }))).toBe(false);
  });
  it('records the kind of error, never its text (which can quote values)', () => {
    expect(failureMessage(pgError('22P02', 'invalid input syntax for type integer: "DOE^JOHN"'))).toBe(
      'the index refused the object (SQLSTATE 22P02)',
    );
    expect(failureMessage(new TypeError('DOE^JOHN'))).toBe('indexing failed (TypeError)');
  });
});
