import type { Context } from 'koa';
import type { Principal } from '../auth/access';
import { boundedTokens } from './token-size';

const ctxWith = (authorization: string) => ({ get: () => authorization }) as unknown as Context;

describe('bounded bearer tokens', () => {
  const principal = { id: 'u', kind: 'user' } as unknown as Principal;
  const inner = jest.fn(async () => principal);
  const auth = boundedTokens(inner, 1024);

  it('passes tokens within the bound to the verifier', async () => {
    await expect(auth(ctxWith(`Bearer ${'a'.repeat(1000)}`))).resolves.toBe(principal);
  });

  it('refuses longer ones with 401 and a WWW-Authenticate naming the limit, without verifying them', async () => {
    inner.mockClear();
    await expect(auth(ctxWith(`Bearer ${'a'.repeat(64 * 1024)}`))).rejects.toMatchObject({
      status: 401,
      headers: { 'WWW-Authenticate': expect.stringMatching(/error="invalid_token".*1024 bytes/) },
    });
    expect(inner).not.toHaveBeenCalled();
  });
});
