import { SignJWT } from 'jose';
import { readScopes, requireRole } from './access';
import { mintRunToken, principalForRunToken, RUN_TOKEN_PREFIX, runTokenAllowedOn } from './run-tokens';

const SECRET = 'unit-test-secret-of-at-least-32-bytes';
const grant = {
  runId: '4f7c1a52-4a8a-4c4e-9d2e-2b1f0f3a9b10',
  projectId: 'demo',
  series: [{ studyUid: '1.2.3', seriesUid: '1.2.3.4' }],
};

describe('run tokens', () => {
  it('grant read of exactly the input series and the contributor role in the run project only', async () => {
    const p = await principalForRunToken(SECRET, await mintRunToken(SECRET, grant, 60));
    expect(p).toMatchObject({ id: grant.runId, kind: 'run', globalAdmin: false });
    expect(readScopes(p, ['demo', 'other'])).toEqual([
      { projectId: 'demo', studyUid: '1.2.3', seriesUid: '1.2.3.4' },
    ]);
    expect(() => readScopes(p, ['demo', 'other'], 'other')).toThrow(/not found/);
    expect(() => requireRole(p, 'demo', 'contributor')).not.toThrow();
    expect(() => requireRole(p, 'demo', 'curator')).toThrow();
    expect(() => requireRole(p, 'other', 'contributor')).toThrow(/project not found/);
  });

  it('are refused when signed with another key, expired, unsigned-looking or without a configured key', async () => {
    const token = await mintRunToken(SECRET, grant, 60);
    await expect(principalForRunToken('another-secret-of-at-least-32-bytes!', token)).rejects.toThrow(
      /invalid/,
    );
    await expect(principalForRunToken(undefined, token)).rejects.toThrow(/not accepted/);
    const expired = await new SignJWT({ prj: 'demo', ser: [] })
      .setProtectedHeader({ alg: 'HS256', typ: 'aperture-run+jwt' })
      .setIssuer('aperture-gateway')
      .setAudience('aperture-run')
      .setSubject(grant.runId)
      .setExpirationTime(Math.floor(Date.now() / 1000) - 10)
      .sign(new TextEncoder().encode(SECRET));
    await expect(principalForRunToken(SECRET, RUN_TOKEN_PREFIX + expired)).rejects.toThrow(/expired/);
    const [h, , s] = token.slice(RUN_TOKEN_PREFIX.length).split('.');
    const escalated = Buffer.from(JSON.stringify({ prj: 'other', ser: [], sub: 'x', exp: 9e9 })).toString(
      'base64url',
    );
    await expect(principalForRunToken(SECRET, `${RUN_TOKEN_PREFIX}${h}.${escalated}.${s}`)).rejects.toThrow();
  });

  it('open the DICOMweb roots only', () => {
    expect(runTokenAllowedOn('/projects/demo/dicom-web/studies')).toBe(true);
    expect(runTokenAllowedOn('/dicom-web/series')).toBe(true);
    expect(runTokenAllowedOn('/api/projects/demo')).toBe(false);
    expect(runTokenAllowedOn('/projects/demo/wado')).toBe(false);
    expect(runTokenAllowedOn('/share/x/dicom-web/studies')).toBe(false);
  });
});
