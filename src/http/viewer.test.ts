import { APP_CONFIG, viewerPolicy } from './viewer';

describe('OHIF configuration served under /viewer', () => {
  it('is valid JavaScript (a syntax error would leave OHIF without its data source)', () => {
    expect(() => new Function(APP_CONFIG)).not.toThrow();
  });

  it('lets the viewer tab reach the issuer for token refresh, and nothing else beyond its origin', () => {
    const p = viewerPolicy([], 'http://issuer.example:8180');
    expect(p).toContain("connect-src 'self' http://issuer.example:8180;");
    expect(viewerPolicy([])).toContain("connect-src 'self';");
    expect(APP_CONFIG).toContain("grant_type: 'refresh_token'");
  });
});
