/**
 * The OHIF viewer served by the gateway under /viewer, opened from the web application's study page (issue 13): the
 * person logs in once at the issuer, clicks "Open in the viewer", and OHIF draws the CT with the same session's token
 * (no second login, no token in the URL), under its own content security policy.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { ensureOhifDist } from '../scripts/viewer';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const ROOT = join(__dirname, '..');

/** Distinct colours (every 4th pixel) and non-black samples of the richest canvas; a blank viewport has one or two. */
const canvasStats = (): { distinct: number; nonBlack: number } => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const d = (globalThis as any).document;
  let best = { distinct: 0, nonBlack: 0 };
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  for (const canvas of Array.from(d.querySelectorAll('canvas')) as any[]) {
    if (canvas.width < 64 || canvas.height < 64) continue;
    const ctx = canvas.getContext('2d', { willReadFrequently: true });
    if (!ctx) continue;
    const { data } = ctx.getImageData(0, 0, canvas.width, canvas.height);
    const seen = new Set<number>();
    let nonBlack = 0;
    for (let i = 0; i < data.length; i += 16) {
      const v = (data[i] << 16) | (data[i + 1] << 8) | data[i + 2];
      seen.add(v);
      if (v !== 0) nonBlack++;
    }
    if (seen.size > best.distinct) best = { distinct: seen.size, nonBlack };
  }
  return best;
};

describe('OHIF viewer under /viewer, opened from the web application (Chromium)', () => {
  let issuer: OidcIssuer;
  let gw: TestGateway;
  let browser: Browser;
  let study = '';

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
    execFileSync(
      join(ROOT, 'node_modules/.bin/vite'),
      ['build', '--config', 'web/vite.config.mts', '--logLevel', 'error'],
      { cwd: ROOT, stdio: 'inherit' },
    );
    const dist = ensureOhifDist();
    await resetStack();
    issuer = await startOidcIssuer({ tokenLifetimeS: 600 });
    gw = await startGateway({
      AUTH_ENABLED: 'true',
      OIDC_ISSUER: issuer.issuer,
      WEB_DIST_DIR: join(ROOT, 'dist/web'),
      VIEWER_DIST_DIR: dist,
    });
    issuer.allowOrigin(gw.url);
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung study' });
    const ct = await ingestInstance(
      gw.services,
      readFileSync(join(SAMPLES, 'ct/CT_small.dcm')),
      ['lung-study'],
      'stow',
    );
    if (!ct.ok) throw new Error(`ingest failed: ${ct.message}`);
    study = ct.parsed.studyInstanceUid;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
      ],
    });
  }, 15 * 60_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    await issuer?.close();
  });

  it(
    'dave opens the study in OHIF from the study page and sees the CT drawn with his session',
    async () => {
      const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
      const problems: string[] = [];
      const gatewayAnswers: string[] = [];
      try {
        const page: Page = await ctx.newPage();
        page.on('console', (m) => {
          if (/Content Security Policy|Refused to/i.test(m.text())) problems.push(m.text());
          if (process.env.DEBUG_VIEWER) console.log(`console ${m.type()}: ${m.text().slice(0, 300)}`);
        });
        page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
        page.on('response', (r) => {
          const u = new URL(r.url());
          if (process.env.DEBUG_VIEWER && r.status() >= 400) console.log(`${r.status()} ${u.pathname}`);
          if (u.origin === gw.url && u.pathname.includes('/dicom-web/'))
            gatewayAnswers.push(`${r.status()} ${u.pathname}`);
          if (u.origin === gw.url && u.pathname.includes('/dicom-web/') && r.status() === 200) {
            const auth = r.request().headers().authorization ?? '';
            if (!auth.startsWith('Bearer ')) problems.push(`no token on ${u.pathname}`);
          }
        });
        await page.goto(`${gw.url}/`);
        await page.click('#sign-in');
        await page.waitForURL((u) => u.href.startsWith(issuer.url));
        await page.fill('#username', 'dave');
        await page.fill('#password', 'dave-demo');
        await page.click('#kc-login');
        await page.waitForSelector('#projects');
        await page.goto(`${gw.url}/#/p/lung-study/studies/${study}`);
        await page.click('#open-viewer');
        await page.waitForURL((u) => u.pathname === '/viewer/viewer');
        // The token travels in a header only, never in the address bar.
        expect(page.url()).not.toMatch(/token|eyJ/);
        let stats = await page.evaluate(canvasStats);
        const deadline = Date.now() + 120_000;
        while (stats.distinct < 16 && Date.now() < deadline) {
          await page.waitForTimeout(1000);
          stats = await page.evaluate(canvasStats);
        }
        if (process.env.DEBUG_VIEWER) await page.screenshot({ path: '/tmp/aperture-web-viewer.png' });
        expect(problems).toEqual([]);
        expect(stats.distinct).toBeGreaterThanOrEqual(16);
        expect(stats.nonBlack).toBeGreaterThan(100);
        // The pixels came from the project's DICOMweb root, with the user's token, under the viewer's policy.
        expect(gatewayAnswers.some((a) => a.startsWith('200 /projects/lung-study/dicom-web/studies/'))).toBe(
          true,
        );
        expect(gatewayAnswers.filter((a) => !a.startsWith('200') && !a.includes('/thumbnail'))).toEqual([]);
        expect(problems).toEqual([]);
      } finally {
        await ctx.close();
      }
    },
    5 * 60_000,
  );

  it('the viewer page carries its own policy: wasm allowed, no eval, no framing', async () => {
    const res = await fetch(`${gw.url}/viewer/viewer?StudyInstanceUIDs=${study}`);
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '';
    expect(csp).toContain("'wasm-unsafe-eval'");
    expect(csp).not.toContain("'unsafe-eval'");
    expect(csp).toContain("frame-ancestors 'none'");
    expect(await res.text()).toContain('src="/viewer/app-config.js"');
    // A path the build does not have falls through to the API (which wants a token), never the viewer page.
    expect((await fetch(`${gw.url}/viewer/nothing-here.js`)).status).toBe(401);
  });
});
