import { bearerChallenge, invalidToken, parseAlgorithms, splitList } from './tokens';
import { hashShareToken, looksLikeShareToken, newShareToken } from './share-links';

describe('token verification settings', () => {
  it('accepts asymmetric algorithms only', () => {
    expect(parseAlgorithms('RS256, ES256,PS256')).toEqual(['RS256', 'ES256', 'PS256']);
    for (const bad of ['none', 'HS256', 'RS256,HS512', '', 'rs256']) {
      expect(() => parseAlgorithms(bad)).toThrow(/OIDC_ALGORITHMS/);
    }
  });

  it('splits comma lists, dropping blanks', () => {
    expect(splitList(' aperture-gateway, ,other ')).toEqual(['aperture-gateway', 'other']);
    expect(splitList('')).toEqual([]);
  });
});

describe('RFC 6750 challenges', () => {
  it('has no error code when no token was sent, and quotes-safe descriptions otherwise', () => {
    expect(bearerChallenge()).toBe('Bearer realm="aperture"');
    expect(bearerChallenge('invalid_token', 'bad "kid"')).toBe(
      `Bearer realm="aperture", error="invalid_token", error_description="bad 'kid'"`,
    );
    const err = invalidToken('token expired');
    expect(err.status).toBe(401);
    expect(err.headers['WWW-Authenticate']).toBe(
      'Bearer realm="aperture", error="invalid_token", error_description="token expired"',
    );
  });
});

describe('share tokens', () => {
  it('are 32 random bytes behind a recognisable prefix, stored as SHA-256', () => {
    const t = newShareToken();
    expect(t).toMatch(/^apsh_[A-Za-z0-9_-]{43}$/);
    expect(Buffer.from(t.slice(5), 'base64url')).toHaveLength(32);
    expect(newShareToken()).not.toBe(t);
    expect(looksLikeShareToken(t)).toBe(true);
    expect(looksLikeShareToken('eyJhbGciOi')).toBe(false);
    expect(hashShareToken(t)).toHaveLength(32);
    expect(hashShareToken(t).equals(hashShareToken(t))).toBe(true);
  });
});
