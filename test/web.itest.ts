/**
 * The web application (issue 13) as a person uses it, in Debian's Chromium against the real stack: the browser logs
 * in at the local issuer's login page with authorization code + PKCE (as against Keycloak), browses its projects and
 * studies, and meets errors in words. Each user gets a fresh browser context (a private window).
 */
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import dcmjs from 'dcmjs';
import { type Browser, type BrowserContext, chromium, type Page } from 'playwright-core';
import { signInThroughIssuer } from './helpers/browser';
import { type DicomJson } from '../src/dicom/json';
import { ensureProject } from '../src/index-db/projects';
import { quarantineInstance } from '../src/index-db/routing';
import { ingestInstance } from '../src/ingest/ingest';
import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';
import { builtWebApp } from './helpers/once';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Long enough to log in, short enough that oidc-client-ts refreshes it (60 s before expiry) within the test. */
const TOKEN_LIFETIME_S = 75;

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

/**
 * Page-side checks, passed as functions (Playwright calls them through the debugger protocol, which the page's
 * policy allows; strings would be eval'd and refused). The tests compile without DOM types, hence the casts.
 */
const thumbnailDrawn = (table: string): boolean => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const d = (globalThis as any).document;
  const imgs = Array.from(d.querySelectorAll(`${table} img.thumb`) as ArrayLike<{ naturalWidth: number }>);
  return imgs.some((i) => i.naturalWidth > 0);
};
const rowsAre = ([table, n]: [string, number]): boolean =>
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  (globalThis as any).document.querySelectorAll(`${table} tbody tr`).length === n;

const first = (d: DicomJson, tag: string): unknown => d[tag]?.Value?.[0];
const personName = (d: DicomJson): string =>
  String((first(d, '00100010') as { Alphabetic?: string } | undefined)?.Alphabetic ?? '');

describe('web application in Chromium (login, projects, study browser)', () => {
  let issuer: OidcIssuer;
  let gw: TestGateway;
  let browser: Browser;
  const demoStudies = new Map<string, { name: string; date: string }>();
  let lungStudy = '';
  const pageProblems: string[] = [];

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
    // The test serves what `npm run build` serves: the production build of web/ (built once per test run).
    const webDist = await builtWebApp();
    await resetStack();
    issuer = await startOidcIssuer({ tokenLifetimeS: TOKEN_LIFETIME_S });
    gw = await startGateway({ AUTH_ENABLED: 'true', OIDC_ISSUER: issuer.issuer, WEB_DIST_DIR: webDist });
    issuer.allowOrigin(gw.url);
    await ensureProject(gw.services.db, { id: 'demo', name: 'Demo project' });
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung study' });
    for (const f of filesUnder(join(SAMPLES, 'hierarchy'))) {
      const out = await ingestInstance(gw.services, readFileSync(f), ['demo'], 'stow');
      if (!out.ok) throw new Error(`ingest of ${f} failed: ${out.message}`);
      demoStudies.set(out.parsed.studyInstanceUid, {
        name: personName(out.parsed.json),
        date: String(first(out.parsed.json, '00080020') ?? ''),
      });
    }
    const ct = await ingestInstance(
      gw.services,
      readFileSync(join(SAMPLES, 'ct/CT_small.dcm')),
      ['lung-study'],
      'stow',
    );
    if (!ct.ok) throw new Error(`ingest failed: ${ct.message}`);
    lungStudy = ct.parsed.studyInstanceUid;
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
  }, 5 * 60_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    await issuer?.close();
  });

  afterEach(() => {
    // A policy violation or an uncaught error in any page of the test is a failure of that test.
    const seen = pageProblems.splice(0);
    expect(seen).toEqual([]);
  });

  async function privateWindow(): Promise<BrowserContext> {
    const ctx = await browser.newContext({ viewport: { width: 1300, height: 850 } });
    ctx.on('page', (p) => {
      p.on('pageerror', (e) => pageProblems.push(`page error: ${e.message}`));
      p.on('console', (m) => {
        if (/Content Security Policy|Refused to/i.test(m.text())) pageProblems.push(`console: ${m.text()}`);
      });
    });
    return ctx;
  }

  /** Opens the application and logs in through the issuer's login form, as a person would. */
  async function signIn(ctx: BrowserContext, user: string): Promise<Page> {
    const page = await ctx.newPage();
    await signInThroughIssuer(page, gw.url, issuer.url, user, '#projects, #no-projects');
    return page;
  }

  async function projectRows(page: Page): Promise<Array<{ id: string; studies: string; role: string }>> {
    return page.$$eval('#projects tbody tr', (rows) =>
      rows.map((r) => ({
        id: r.getAttribute('data-project') ?? '',
        studies: r.querySelector('[data-col=studies]')?.textContent ?? '',
        role: r.querySelector('[data-col=role]')?.textContent ?? '',
      })),
    );
  }

  const demoCount = () => String(demoStudies.size);
  const expectedProjects: Record<string, () => Array<{ id: string; studies: string; role: string }>> = {
    alice: () => [
      { id: 'demo', studies: demoCount(), role: 'reader' },
      { id: 'lung-study', studies: '1', role: 'curator' },
    ],
    bob: () => [{ id: 'demo', studies: demoCount(), role: 'contributor' }],
    carol: () => [
      { id: 'demo', studies: demoCount(), role: 'admin' },
      { id: 'lung-study', studies: '1', role: 'admin' },
    ],
    dave: () => [{ id: 'lung-study', studies: '1', role: 'admin' }],
    erin: () => [{ id: 'demo', studies: demoCount(), role: 'reader' }],
  };

  for (const user of Object.keys(expectedProjects)) {
    it(`${user} logs in with authorization code + PKCE and sees exactly their projects, counts and role`, async () => {
      const ctx = await privateWindow();
      const tokenRequests: string[] = [];
      ctx.on('request', (r) => {
        if (r.url().endsWith('/protocol/openid-connect/token')) tokenRequests.push(r.postData() ?? '');
      });
      try {
        const page = await signIn(ctx, user);
        expect(await page.textContent('#username')).toBe(user);
        expect(await projectRows(page)).toEqual(expectedProjects[user]());
        // The code went through the token endpoint with its PKCE verifier, and left no trace in the address bar.
        expect(
          tokenRequests.some((b) => /grant_type=authorization_code/.test(b) && /code_verifier=/.test(b)),
        ).toBe(true);
        expect(page.url()).toBe(`${gw.url}/`);
      } finally {
        await ctx.close();
      }
    });
  }

  it('signing out ends the session at the issuer: the next sign-in asks for the password again', async () => {
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'alice');
      await page.click('#sign-out');
      await page.waitForSelector('#sign-in');
      await page.click('#sign-in');
      await page.waitForSelector('#username');
      expect(page.url().startsWith(issuer.url)).toBe(true);
    } finally {
      await ctx.close();
    }
  });

  it('a wrong password is refused on the login page in words, and nothing is issued', async () => {
    const ctx = await privateWindow();
    try {
      const page = await ctx.newPage();
      await page.goto(`${gw.url}/`);
      await page.click('#sign-in');
      await page.fill('#username', 'alice');
      await page.fill('#password', 'not-her-password');
      await page.click('#kc-login');
      expect(await page.textContent('[role=alert]')).toBe('Invalid username or password.');
      expect(page.url().startsWith(issuer.url)).toBe(true);
    } finally {
      await ctx.close();
    }
  });

  it('refreshes the access token silently with the refresh token, and the session keeps working', async () => {
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'alice');
      const refreshed = await page.waitForResponse(
        (r) =>
          r.url().endsWith('/protocol/openid-connect/token') &&
          /grant_type=refresh_token/.test(r.request().postData() ?? ''),
        { timeout: (TOKEN_LIFETIME_S - 50) * 1000 },
      );
      expect(refreshed.status()).toBe(200);
      // Still signed in without a second login: the gateway takes the new token.
      await page.click('a[href="#/studies"]');
      await page.waitForSelector('#studies tbody tr');
      expect(page.url().startsWith(gw.url)).toBe(true);
    } finally {
      await ctx.close();
    }
  });

  it('finds a study by fuzzy patient name and date range; the name never reaches the URL', async () => {
    const ctx = await privateWindow();
    const urls: string[] = [];
    ctx.on('framenavigated', (f) => urls.push(f.url()));
    try {
      const page = await signIn(ctx, 'alice');
      await page.click('a[href="#/p/demo/studies"]');
      await page.waitForSelector('#studies tbody tr');
      expect(await page.$$eval('#studies tbody tr', (r) => r.length)).toBe(demoStudies.size);
      // "peter" in lower case, a word of the name: fuzzy matching (PS3.4 C.2.2.2.1.3), not an exact match.
      await page.fill('input[name=name]', 'peter');
      await page.fill('input[name=from]', '2003-01-01');
      await page.fill('input[name=to]', '2003-12-31');
      await page.click('#search');
      const expected = [...demoStudies]
        .filter(([, s]) => s.name.includes('Peter') && s.date.startsWith('2003'))
        .map(([uid]) => uid)
        .sort();
      expect(expected.length).toBeGreaterThan(0);
      await page.waitForFunction(rowsAre, ['#studies', expected.length] as [string, number]);
      const shown = await page.$$eval('#studies tbody tr', (rows) =>
        rows.map((r) => r.getAttribute('data-study')),
      );
      expect(shown.sort()).toEqual(expected);
      // Thumbnails are drawn in the list (fetched with the token, shown from blob: URLs).
      await page.waitForFunction(thumbnailDrawn, '#studies');
      expect(await page.$$eval('#studies tbody tr', (r) => r.map((x) => x.textContent ?? ''))).toEqual(
        expect.arrayContaining([expect.stringContaining('Doe Peter')]),
      );
      for (const u of [...urls, page.url()]) expect(u.toLowerCase()).not.toContain('peter');
    } finally {
      await ctx.close();
    }
  });

  it('pages through the studies with limit/offset', async () => {
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'carol');
      await page.click('a[href="#/studies"]');
      await page.waitForSelector('#studies tbody tr');
      // Everything fits one page of 25 here: Next stays disabled, the range says how many are shown.
      expect(await page.textContent('#page-range')).toBe(`1–${demoStudies.size + 1}`);
      expect(await page.isDisabled('#next-page')).toBe(true);
      expect(await page.isDisabled('#prev-page')).toBe(true);

      // Column sorting is the gateway's: the heading asks QIDO-RS for `orderby` from the first page on, and the page
      // shows the rows in the order they came (the order across pages is test/qido-orderby.itest.ts').
      const column = (n: number) =>
        page.$$eval(`#studies tbody tr td:nth-child(${n})`, (cells) => cells.map((c) => c.textContent ?? ''));
      const sortBy = async (key: string, orderby: string) => {
        const [req] = await Promise.all([
          page.waitForRequest((r) => new URL(r.url()).searchParams.get('orderby') === orderby),
          page.click(`#studies th button[data-sort=${key}]`),
        ]);
        expect(new URL(req.url()).searchParams.get('offset')).toBe('0');
        const res = await req.response();
        const served = ((await res!.json()) as DicomJson[]).map((d) => String(first(d, '0020000D')));
        await page.waitForFunction(
          (uids: string[]) =>
            Array.from(
              // eslint-disable-next-line @typescript-eslint/no-explicit-any
              (globalThis as any).document.querySelectorAll('#studies tbody tr') as ArrayLike<{
                getAttribute(n: string): string | null;
              }>,
            )
              .map((r) => r.getAttribute('data-study'))
              .join() === uids.join(),
          served,
        );
        return served;
      };
      expect(await page.textContent('#sort-note')).toContain('Newest first');
      await sortBy('date', 'StudyDate');
      const up = await column(4);
      expect(up).toEqual([...up].sort());
      expect(await page.getAttribute('#studies th:nth-child(4)', 'aria-sort')).toBe('ascending');
      expect(await page.textContent('#sort-note')).toContain('sorted by date, ascending');
      const downUids = await sortBy('date', '-StudyDate');
      expect(await column(4)).toEqual([...up].reverse());
      expect(await page.getAttribute('#studies th:nth-child(4)', 'aria-sort')).toBe('descending');
      expect(downUids.length).toBe(demoStudies.size + 1);
      await sortBy('name', 'PatientName');
      expect(await page.getAttribute('#studies th:nth-child(2)', 'aria-sort')).toBe('ascending');
      expect(await page.getAttribute('#studies th:nth-child(4)', 'aria-sort')).toBe('none');
      const names = (await column(2)).filter((n) => n !== '(no name)');
      expect(new Set(names).size).toBeGreaterThan(1);
    } finally {
      await ctx.close();
    }
  });

  it('shows a study page with series, thumbnails and instance counts, and downloads it as a ZIP', async () => {
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'dave');
      await page.click('a[href="#/p/lung-study/studies"]');
      await page.click(`tr[data-study="${lungStudy}"] a`);
      await page.waitForSelector('#series tbody tr');
      expect(page.url()).toBe(`${gw.url}/#/p/lung-study/studies/${lungStudy}`);
      expect(await page.$$eval('#series [data-col=instances]', (c) => c.map((x) => x.textContent))).toEqual([
        '1',
      ]);
      expect(await page.textContent('#study-attributes')).toContain('CompressedSamples CT1');
      await page.waitForFunction(thumbnailDrawn, '#series');
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-zip')]);
      expect(download.suggestedFilename()).toBe(`${lungStudy}.zip`);
      const path = await download.path();
      expect(readFileSync(path).subarray(0, 4)).toEqual(Buffer.from([0x50, 0x4b, 0x03, 0x04]));
      // Streamed through a single-use link the gateway made (no token in the URL, no copy in page memory).
      const link = new URL(download.url());
      expect(link.origin + link.pathname).toMatch(new RegExp(`^${gw.url}/download/[A-Za-z0-9_-]{43}$`));
      expect(download.url()).not.toMatch(/eyJ|token=/);
      const again = await fetch(download.url());
      expect(again.status).toBe(404);
      expect(JSON.stringify(await again.json())).toContain('expired or was already used');
      // A link made for a study the caller cannot see opens nothing (the usual 404), and only ZIPs can be linked.
      const erin = await issuer.userToken('erin');
      const make = (p: string) =>
        fetch(`${gw.url}/api/download-links`, {
          method: 'POST',
          headers: { Authorization: `Bearer ${erin}`, 'Content-Type': 'application/json' },
          body: JSON.stringify({ path: p }),
        });
      const made = await make(`/projects/lung-study/dicom-web/studies/${lungStudy}`);
      expect(made.status).toBe(201);
      expect((await fetch(`${gw.url}${((await made.json()) as { url: string }).url}`)).status).toBe(404);
      expect((await make('/api/audit')).status).toBe(400);
    } finally {
      await ctx.close();
    }
  });

  it("a study outside the user's projects reads as not found, in words (404, never 403)", async () => {
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'erin');
      await page.goto(`${gw.url}/#/p/lung-study/studies/${lungStudy}`);
      const alert = await page.waitForSelector('[role=alert]');
      const text = (await alert.textContent()) ?? '';
      expect(text).toContain('Not found.');
      expect(text).toContain('not in a project you can see');
      expect(text).not.toMatch(/[{}]|Error:|at \w+ \(/);
      await page.goto(`${gw.url}/#/studies/${lungStudy}`);
      expect(await (await page.waitForSelector('[role=alert]')).textContent()).toContain('Not found.');
    } finally {
      await ctx.close();
    }
  });

  it('serves the application with a strict policy: no inline scripts, no framing, no referrer', async () => {
    const res = await fetch(`${gw.url}/`, { headers: { accept: 'text/html' } });
    expect(res.status).toBe(200);
    const csp = res.headers.get('content-security-policy') ?? '';
    const directives = Object.fromEntries(
      csp.split(';').map((d) => {
        const [k, ...v] = d.trim().split(/\s+/);
        return [k, v];
      }),
    );
    expect(directives['script-src']).toEqual(["'self'"]);
    expect(directives['default-src']).toEqual(["'none'"]);
    expect(directives['frame-ancestors']).toEqual(["'none'"]);
    expect(csp).not.toContain('unsafe');
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('x-frame-options')).toBe('DENY');
    const html = await res.text();
    expect(html).not.toMatch(/<script(?![^>]*\bsrc=)[^>]*>/);
    // API clients asking for `/` still get the JSON summary.
    const api = await fetch(`${gw.url}/`, { headers: { accept: 'application/json' } });
    expect(api.headers.get('content-type')).toMatch(/^application\/json/);
  });

  it('creates a share link for a study, copies it, opens it in a private window, lists and revokes it', async () => {
    const owner = await privateWindow();
    await owner.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: gw.url });
    const stranger = await privateWindow();
    try {
      const page = await signIn(owner, 'alice');
      // In demo alice only reads: her study page there offers no share link (the API would refuse to make one).
      const [demoStudy] = [...demoStudies.keys()];
      const [roles] = await Promise.all([
        page.waitForResponse((r) => new URL(r.url()).pathname === '/api/projects'),
        page.goto(`${gw.url}/#/p/demo/studies/${demoStudy}`),
      ]);
      expect(roles.status()).toBe(200);
      await page.waitForSelector('#series tbody tr');
      expect(await page.locator('#share-study').count()).toBe(0);
      await page.goto(`${gw.url}/#/p/lung-study/studies/${lungStudy}`);
      await page.click('#share-study');
      expect(await page.inputValue('input[name=studyUid]')).toBe(lungStudy);
      await page.selectOption('select[name=expiresIn]', '1d');
      await page.click('#create-share');
      const url = await page.inputValue('#share-url');
      expect(url).toMatch(new RegExp(`^${gw.url}/#/share/[^/]+$`));
      await page.click('#copy-share');
      await page.waitForSelector('#copy-share:text("Copied")');
      expect(await page.evaluate('navigator.clipboard.readText()')).toBe(url);
      const row = page.locator('#shares tbody tr[data-status=active]');
      expect(await row.count()).toBe(1);
      expect(await row.textContent()).toContain(`study ${lungStudy}`);

      // Someone without an account opens it: the study and its series, nothing else.
      const shared = await stranger.newPage();
      await shared.goto(url);
      await shared.waitForSelector('#studies tbody tr');
      expect(
        await shared.$$eval('#studies tbody tr', (r) => r.map((x) => x.getAttribute('data-study'))),
      ).toEqual([lungStudy]);
      await shared.click(`tr[data-study="${lungStudy}"] a`);
      await shared.waitForSelector('#series tbody tr');
      expect(await shared.$$eval('#series [data-col=instances]', (c) => c.map((x) => x.textContent))).toEqual(
        ['1'],
      );
      // Its ZIP streams to the download manager from the share URL: no fetch in the page carries the archive.
      const zipsInPage: string[] = [];
      shared.on('response', (r) => {
        const kind = r.request().resourceType();
        if ((kind === 'fetch' || kind === 'xhr') && /zip/.test(r.headers()['content-type'] ?? ''))
          zipsInPage.push(r.url());
      });
      const [zip] = await Promise.all([shared.waitForEvent('download'), shared.click('#download-zip')]);
      expect(zip.suggestedFilename()).toBe(`${lungStudy}.zip`);
      const token = decodeURIComponent(new URL(url).hash.replace('#/share/', ''));
      expect(zip.url()).toBe(
        `${gw.url}/share/${encodeURIComponent(token)}/dicom-web/studies/${lungStudy}?accept=application%2Fzip`,
      );
      const archive = readFileSync(await zip.path());
      expect(archive.subarray(0, 4).toString('latin1')).toBe('PK\x03\x04');
      expect(archive.includes(Buffer.from(`${lungStudy}/`))).toBe(true);
      expect(zipsInPage).toEqual([]);

      // A fresh load of the stranger's study page (no checks left pending from the download above).
      await shared.reload();
      await shared.waitForSelector('#series tbody tr');
      // Revoked: the list says so, and the link stops working at once, explained in words.
      await row.locator('button[data-action=revoke]').click();
      await page.waitForSelector('#shares tbody tr[data-status=revoked]');
      // The stranger's study page stays open while the link is revoked: Download checks the link first and says what
      // happened, instead of handing the download manager a request that fails without words.
      const downloads: string[] = [];
      shared.on('download', (d) => downloads.push(d.url()));
      // (force: a check on the tab's focus may already have disabled the button; the words must be there either way)
      await shared.click('#download-zip', { force: true });
      const gone = await shared.waitForSelector('#share-gone [role=alert]');
      expect(await gone.textContent()).toContain('This share link has expired, was revoked');
      expect(await shared.textContent('#share-gone')).toContain(
        'Ask the person who shared the study for a new link',
      );
      expect(await shared.isDisabled('#download-zip')).toBe(true);
      expect(downloads).toEqual([]);
      await shared.goto(url);
      await shared.reload();
      const alert = await shared.waitForSelector('[role=alert]');
      expect(await alert.textContent()).toContain('This share link has expired, was revoked');
    } finally {
      await owner.close();
      await stranger.close();
    }
  });

  it('reads the audit trail of what the test just did, filtered, and exports it as CSV', async () => {
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'dave');
      await page.goto(`${gw.url}/#/p/lung-study/studies/${lungStudy}`);
      await page.waitForSelector('#series tbody tr');
      await page.goto(`${gw.url}/#/`);
      await page.click('tr[data-project="lung-study"] a[data-action=audit]');
      await page.waitForSelector('#audit-filters');
      await page.fill('input[name=study]', lungStudy);
      // Audit events are written in batches: ask again until this visit shows up.
      const deadline = Date.now() + 20_000;
      for (;;) {
        await page.click('#audit-search');
        await page.waitForSelector('#audit tbody tr, #no-events');
        if ((await page.locator('#audit tbody tr').count()) > 0) break;
        if (Date.now() > deadline) throw new Error('the study visit never reached the audit trail');
        await page.waitForTimeout(500);
      }
      const rows = await page.$$eval('#audit tbody tr', (trs) =>
        trs.map((t) => ({
          action: t.querySelector('[data-col=action]')?.textContent ?? '',
          outcome: t.querySelector('[data-col=outcome]')?.textContent ?? '',
          text: t.textContent ?? '',
        })),
      );
      for (const r of rows) expect(r.text).toContain(lungStudy);
      expect(rows.some((r) => r.outcome === '200')).toBe(true);
      const [download] = await Promise.all([page.waitForEvent('download'), page.click('#audit-csv')]);
      const csv = readFileSync(await download.path(), 'utf8')
        .split(/\r?\n/)
        .filter(Boolean);
      expect(csv[0]).toMatch(/^id,at,principal,/);
      expect(csv.length - 1).toBeGreaterThanOrEqual(rows.length);
      for (const line of csv.slice(1)) expect(line).toContain(lungStudy);
    } finally {
      await ctx.close();
    }
  });

  it('a global administrator assigns a quarantined study to a project', async () => {
    // An arrival no routing rule claimed: indexed, in no project, waiting in the quarantine.
    const mr = await ingestInstance(gw.services, readFileSync(join(SAMPLES, 'mr/MR_small.dcm')), [], 'stow');
    if (!mr.ok) throw new Error(`ingest failed: ${mr.message}`);
    const { studyInstanceUid: studyUid, seriesInstanceUid: seriesUid, sopInstanceUid } = mr.parsed;
    await quarantineInstance(gw.services.db, {
      sopInstanceUid,
      studyUid,
      seriesUid,
      route: { calledAet: 'APERTURE', callingAet: 'MODALITY1', remoteIp: '127.0.0.1' },
      reason: 'no routing rule matched',
    });
    const ctx = await privateWindow();
    try {
      const page = await signIn(ctx, 'carol');
      await page.click('a[href="#/quarantine"]');
      const row = page.locator(`#quarantine tr[data-study="${studyUid}"]`);
      await row.waitFor();
      expect(await row.textContent()).toContain('MODALITY1');
      await row.locator('select[name=project]').selectOption('demo');
      await row.locator('button[data-action=assign]').click();
      expect(await page.textContent('#assign-done')).toBe(
        `Assigned 1 instances of study ${studyUid} to demo.`,
      );
      await row.waitFor({ state: 'detached' });
      // The study is now in the project for its readers.
      await page.goto(`${gw.url}/#/p/demo/studies/${studyUid}`);
      await page.waitForSelector('#series tbody tr');
    } finally {
      await ctx.close();
    }
  });

  it('uploads a folder of 300 files (nested, 3 malformed, 1 not DICOM) by STOW-RS and shows each outcome in words', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'aperture-upload-'));
    const ctx = await privateWindow();
    try {
      // 296 distinct instances: copies of a real CT with new SOP Instance UIDs, spread over nested folders.
      const source = readFileSync(join(SAMPLES, 'ct/CT_small.dcm'));
      for (let i = 0; i < 296; i++) {
        const sub = join(dir, `exam-${i % 4}`, `series-${i % 3}`);
        mkdirSync(sub, { recursive: true });
        const ab = source.buffer.slice(source.byteOffset, source.byteOffset + source.byteLength);
        const dd = dcmjs.data.DicomMessage.readFile(ab);
        const uid = `2.25.${BigInt(0x5eed0000 + i) * 1000003n}`;
        dd.dict['00080018'].Value = [uid];
        dd.meta['00020003'].Value = [uid];
        writeFileSync(join(sub, `img-${i}.dcm`), Buffer.from(dd.write()));
      }
      const malformed = ['MR_truncated.dcm', 'rtplan_truncated.dcm', 'Issue111_no-sop-class.dcm'];
      mkdirSync(join(dir, 'broken'));
      for (const m of malformed)
        writeFileSync(join(dir, 'broken', m), readFileSync(join(SAMPLES, 'malformed', m)));
      writeFileSync(join(dir, 'notes.txt'), 'scanner export notes, not DICOM\n');
      expect(filesUnder(dir)).toHaveLength(300);

      const page = await signIn(ctx, 'bob');
      await page.click('tr[data-project="demo"] a[data-action=upload]');
      await page.setInputFiles('#pick-folder', dir);
      await page.waitForSelector('#upload-summary', { timeout: 120_000 });
      const counts = await page.$$eval('#upload-summary [data-count]', (els) =>
        Object.fromEntries(els.map((e) => [e.getAttribute('data-count'), e.textContent])),
      );
      expect(counts).toEqual({ stored: '296', already: '0', failed: '3', skipped: '1' });
      const rows = await page.$$eval('#upload-results tbody tr', (trs) =>
        trs.map((t) => ({
          file: t.getAttribute('data-file') ?? '',
          outcome: t.getAttribute('data-outcome'),
          why: t.querySelectorAll('td')[2]?.textContent ?? '',
        })),
      );
      const failed = rows.filter((r) => r.outcome === 'failed');
      expect(failed.map((r) => r.file.split('/').pop()).sort()).toEqual([...malformed].sort());
      // In words, from the Failure Reason code: never a raw code alone, a stack or JSON.
      for (const f of failed)
        expect(f.why).toMatch(/^(The file cannot be read as DICOM|Required identifiers)/);
      expect(rows.filter((r) => r.outcome === 'skipped').map((r) => r.file.split('/').pop())).toEqual([
        'notes.txt',
      ]);
      expect(await page.textContent('#upload-progress')).toContain('299 of 299 files');
      // The index agrees: 296 new instances in the project.
      const n = await gw.services.db.query<{ n: number }>(
        "SELECT count(*)::int AS n FROM instances i WHERE i.sop_instance_uid LIKE '2.25.%'",
      );
      expect(n.rows[0].n).toBe(296);

      // Retrying the failed files sends them again; they fail again for the same reasons, the rest is untouched.
      await page.click('#retry-failed');
      await page.waitForSelector('#retry-failed');
      expect(
        await page.$$eval('#upload-summary [data-count]', (els) => els.map((e) => e.textContent)),
      ).toEqual(['296', '0', '3', '1']);
    } finally {
      await ctx.close();
      rmSync(dir, { recursive: true, force: true });
    }
  }, 180_000);
});
