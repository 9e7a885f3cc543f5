/**
 * The web application's viewer and administration pages (issue 13), in Chromium against the real stack. The OHIF
 * viewer served by the gateway under /viewer is opened from a study page: the person logs in once at the issuer,
 * clicks "Open in the viewer", and OHIF draws the CT with the same session's token (no second login, no token in the
 * URL), under its own content security policy. Routing rules added and switched in the browser are the ones the
 * indexer's routing decision (decideRoute) then applies.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, signInThroughIssuer } from './helpers/browser';
import { builtWebApp, ohifDist } from './helpers/once';
import { decideRoute } from '../src/ingest/arrival';
import { getQueue, QueueName, queueCounts } from '../src/jobs/queues';
import { initThumbnailWorker } from '../src/jobs/thumbnail';
import { initCohortWorker } from '../src/jobs/cohort';
import { deidentifier } from '../src/cohorts/deidentifier';
import { parsePart10 } from '../src/dicom/parse';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

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

/** The oidc-client-ts session of the tab: its access token, expiry and the token's own lifetime (exp - iat). */
const storedSession = (): { token: string; exp: number; lifetime: number } => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const ss = (globalThis as any).sessionStorage;
  for (let i = 0; i < ss.length; i++) {
    const key = ss.key(i) as string;
    if (!key.startsWith('oidc.user:')) continue;
    const u = JSON.parse(ss.getItem(key)) as { access_token: string };
    const c = JSON.parse(atob(u.access_token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))) as {
      exp: number;
      iat: number;
    };
    return { token: u.access_token, exp: c.exp, lifetime: c.exp - c.iat };
  }
  return { token: '', exp: 0, lifetime: 0 };
};
/** Makes the stored session look one second from expiry. */
const expireStoredSession = (): void => {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const ss = (globalThis as any).sessionStorage;
  for (let i = 0; i < ss.length; i++) {
    const key = ss.key(i) as string;
    if (!key.startsWith('oidc.user:')) continue;
    const u = JSON.parse(ss.getItem(key)) as Record<string, unknown>;
    ss.setItem(key, JSON.stringify({ ...u, expires_at: Math.floor(Date.now() / 1000) + 1 }));
  }
};

describe('web application: viewer and administration pages (Chromium)', () => {
  let issuer: OidcIssuer;
  let gw: TestGateway;
  let browser: Browser;
  let study = '';

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
    // What `npm run build` serves (built once per test run) and the published OHIF viewer.
    const webDist = await builtWebApp();
    const dist = await ohifDist();
    await resetStack();
    issuer = await startOidcIssuer({ tokenLifetimeS: 600 });
    gw = await startGateway({
      AUTH_ENABLED: 'true',
      OIDC_ISSUER: issuer.issuer,
      WEB_DIST_DIR: webDist,
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
    browser = await launchChromium(['--disable-quic']);
  }, 15 * 60_000);

  /** Logs in through the issuer's login form, as a person would. */
  async function signIn(page: Page, user: string): Promise<void> {
    await signInThroughIssuer(page, gw.url, issuer.url, user);
  }

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
        await signIn(page, 'dave');
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

        // The viewer tab refreshes the token itself. Tokens minted from now on live 12 s; the stored one is made to
        // look about to expire: the viewer exchanges it, then keeps exchanging each short-lived one before it ends.
        issuer.setTokenLifetime(12);
        const first = await page.evaluate(storedSession);
        await page.evaluate(expireStoredSession);
        const deadline2 = Date.now() + 60_000;
        let a = first;
        while ((a.token === first.token || a.lifetime !== 12) && Date.now() < deadline2) {
          await page.waitForTimeout(500);
          a = await page.evaluate(storedSession);
        }
        expect(a.lifetime).toBe(12);
        // Past the real expiry of that 12 s token, the session holds a newer, valid one.
        while (Date.now() / 1000 < a.exp + 1 && Date.now() < deadline2) await page.waitForTimeout(500);
        const b = await page.evaluate(storedSession);
        expect(b.token).not.toBe(a.token);
        expect(b.exp).toBeGreaterThan(Date.now() / 1000);
        // OHIF, reloaded in the same tab, reads the study with the refreshed token; then the web app, without login.
        gatewayAnswers.length = 0;
        const answered = page.waitForResponse(
          (r) => r.url().includes('/projects/lung-study/dicom-web/studies') && r.status() === 200,
        );
        await page.reload();
        await answered;
        expect(gatewayAnswers.filter((x) => x.startsWith('401'))).toEqual([]);
        await page.goto(`${gw.url}/`);
        await page.waitForSelector('#projects');
        expect(page.url()).not.toContain(issuer.url);
      } finally {
        issuer.setTokenLifetime(600);
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
  it(
    'a project admin adds, orders and disables routing rules in the browser, and arrivals follow them',
    async () => {
      const ctx = await browser.newContext({ viewport: { width: 1300, height: 850 } });
      const route = { calledAet: 'CT_ROOM_7', callingAet: 'MODALITY1', remoteIp: '10.1.2.3' };
      try {
        const page = await ctx.newPage();
        await signIn(page, 'dave');
        await page.click('tr[data-project="lung-study"] a[data-action=routing]');
        await page.waitForSelector('#no-rules');
        // Before: nothing claims an arrival at CT_ROOM_7 (no DEFAULT_PROJECT: quarantine).
        expect((await decideRoute(gw.services, route, {})).projectId).toBeNull();

        await page.selectOption('#add-rule select[name=kind]', 'called_aet');
        await page.fill('#add-rule input[name=value]', 'CT_ROOM_7');
        await page.click('#add-rule-submit');
        await page.waitForSelector('#rules tbody tr');
        await page.selectOption('#add-rule select[name=kind]', 'attribute');
        await page.fill('#add-rule input[name=attribute]', 'Modality');
        await page.selectOption('#add-rule select[name=match]', 'prefix');
        await page.fill('#add-rule input[name=value]', 'CT');
        await page.click('#add-rule-submit');
        await page.locator('#rules tbody tr').nth(1).waitFor();
        const listed = () =>
          page.$$eval('#rules tbody tr', (rows) =>
            rows.map((r) =>
              ['kind', 'match', 'value', 'state']
                .map((c) => r.querySelector(`[data-col=${c}]`)?.textContent)
                .join('|'),
            ),
          );
        expect(await listed()).toEqual([
          'Called AE title|equals|CT_ROOM_7|enabled',
          'DICOM attribute Modality|prefix|CT|enabled',
        ]);
        // The rule the browser added is the one the indexer applies.
        expect((await decideRoute(gw.services, route, {})).projectId).toBe('lung-study');

        // Reorder: the attribute rule moves up, and the API stores that order.
        await page.click('#rules tbody tr:nth-child(2) button[data-action=up]');
        await page.locator('#rules tbody tr:first-child [data-col=value]', { hasText: /^CT$/ }).waitFor();
        const stored = await gw.services.db.query<{ value: string }>(
          `SELECT value FROM routing_rules WHERE project_id = 'lung-study' ORDER BY position, id`,
        );
        expect(stored.rows.map((r) => r.value)).toEqual(['CT', 'CT_ROOM_7']);

        // Test the rules against a sample: an MR at CT_ROOM_7 is claimed by rule 2, a CT there by rule 1 (both match).
        const testSample = async (attributes: string) => {
          await page.fill('#test-rules input[name=calledAet]', route.calledAet);
          await page.fill('#test-rules textarea[name=attributes]', attributes);
          const [res] = await Promise.all([
            page.waitForResponse((r) => r.url().endsWith('/routing/test')),
            page.click('#test-rules-submit'),
          ]);
          expect(res.status()).toBe(200);
          return page.locator('#test-result');
        };
        await expect((await testSample('Modality=MR')).textContent()).resolves.toMatch(
          /^Rule 2 claims this sample for lung-study\./,
        );
        expect(await page.getAttribute('#rules tbody tr:nth-child(1)', 'data-sample')).toBe('no-match');
        expect(await page.getAttribute('#rules tbody tr:nth-child(2)', 'data-sample')).toBe('matches');
        await testSample('Modality=CT');
        await page
          .locator('#test-result', {
            hasText: /^Rule 1 claims this sample for lung-study \(rules 1, 2 match/,
          })
          .waitFor();
        // The tester agrees with the indexer's own decision for that arrival.
        const ct = { '00080060': { vr: 'CS', Value: ['CT'] } };
        expect((await decideRoute(gw.services, route, ct)).projectId).toBe('lung-study');
        // Over the API: an unknown attribute is a 400 in words; a reader of another project finds no such project.
        const tryTest = async (user: string, body: unknown) =>
          fetch(`${gw.url}/api/projects/lung-study/routing/test`, {
            method: 'POST',
            headers: {
              Authorization: `Bearer ${await issuer.userToken(user)}`,
              'Content-Type': 'application/json',
            },
            body: JSON.stringify(body),
          });
        const bad = await tryTest('dave', { attributes: { NoSuchKeyword: 'x' } });
        expect(bad.status).toBe(400);
        expect(JSON.stringify(await bad.json())).toContain('NoSuchKeyword is not a DICOM attribute');
        expect((await tryTest('erin', { calledAet: 'CT_ROOM_7' })).status).toBe(404);

        // Disable the AE title rule: arrivals at CT_ROOM_7 are no longer claimed.
        await page.click('#rules tbody tr:nth-child(2) button[data-action=toggle]');
        await page.waitForSelector('#rules tbody tr:nth-child(2) [data-col=state]:text("disabled")');
        expect((await decideRoute(gw.services, route, {})).projectId).toBeNull();
        await testSample('');
        await page
          .locator('#test-result', { hasText: /^No rule of lung-study matches this sample\./ })
          .waitFor();

        // A bad rule is refused in words, and nothing is stored.
        await page.selectOption('#add-rule select[name=kind]', 'called_aet');
        await page.selectOption('#add-rule select[name=match]', 'regex');
        await page.fill('#add-rule input[name=value]', '([unclosed');
        await page.click('#add-rule-submit');
        await page.waitForSelector('.error');
        expect(await page.textContent('.error')).toMatch(/regular expression/);
        expect(await page.$$eval('#rules tbody tr', (rows) => rows.length)).toBe(2);
      } finally {
        await ctx.close();
      }
    },
    3 * 60_000,
  );

  it(
    'a global admin creates a project in the browser; a taken id is refused in words; others see no such link',
    async () => {
      const ctx = await browser.newContext({ viewport: { width: 1300, height: 850 } });
      try {
        const page = await ctx.newPage();
        await signIn(page, 'carol');
        await page.click('a[href="#/new-project"]');
        await page.fill('#new-project input[name=id]', 'trial-7');
        await page.fill('#new-project input[name=name]', 'Trial seven');
        await page.click('#create-project');
        await page.waitForSelector('#projects tr[data-project="trial-7"]');
        expect(await page.textContent('#projects tr[data-project="trial-7"]')).toContain('Trial seven');
        const row = await gw.services.db.query<{ name: string }>(
          `SELECT name FROM projects WHERE id = 'trial-7'`,
        );
        expect(row.rows).toEqual([{ name: 'Trial seven' }]);

        await page.click('a[href="#/new-project"]');
        await page.fill('#new-project input[name=id]', 'lung-study');
        await page.fill('#new-project input[name=name]', 'Again');
        await page.click('#create-project');
        await page.waitForSelector('.error');
        expect(await page.textContent('.error')).toMatch(/already exists/);
        expect(page.url()).toBe(`${gw.url}/#/new-project`);
      } finally {
        await ctx.close();
      }
      // dave administers a project but is no global admin: no link.
      const other = await browser.newContext();
      try {
        const page = await other.newPage();
        await signIn(page, 'dave');
        expect(await page.$('a[href="#/new-project"]')).toBeNull();
      } finally {
        await other.close();
      }
    },
    3 * 60_000,
  );

  it('a global admin reads the background job counts per queue', async () => {
    // A job held back for an hour: the page must show it as delayed in the thumbnail queue.
    const held = await getQueue(QueueName.thumbnails).add(
      'web-pages-probe',
      { seriesUid: '1.2.3.4' },
      { delay: 3_600_000 },
    );
    const ctx = await browser.newContext({ viewport: { width: 1300, height: 850 } });
    try {
      const page = await ctx.newPage();
      await signIn(page, 'carol');
      await page.click('a[href="#/jobs"]');
      await page.waitForSelector('#jobs tbody tr');
      const shown = await page.$$eval('#jobs tbody tr', (rows) =>
        rows.map((r) => ({
          queue: r.getAttribute('data-queue'),
          delayed: Number(r.querySelector('[data-col=delayed]')?.textContent),
          failed: Number(r.querySelector('[data-col=failed]')?.textContent),
        })),
      );
      const counts = await queueCounts();
      expect(shown).toEqual(
        Object.keys(counts).map((q) => ({ queue: q, delayed: counts[q].delayed, failed: counts[q].failed })),
      );
      expect(shown.find((r) => r.queue === 'thumbnails')?.delayed).toBeGreaterThanOrEqual(1);
    } finally {
      await ctx.close();
      await held.remove();
    }
  });
  it(
    'a thumbnail job that failed is shown with its reason, retried from the jobs page, and succeeds',
    async () => {
      // The job names a series the index does not hold yet: the worker gives up at once (UnrecoverableError).
      const bytes = readFileSync(join(SAMPLES, 'mr/MR_small.dcm'));
      const seriesUid = parsePart10(bytes).seriesInstanceUid;
      const worker = initThumbnailWorker({
        db: gw.services.db,
        pacs: gw.services.pacs,
        archive: gw.services.archive,
        config: gw.config,
      });
      const job = await getQueue(QueueName.thumbnails).add('series-thumbnail', { seriesUid });
      const ctx = await browser.newContext({ viewport: { width: 1500, height: 900 } });
      try {
        const deadline = Date.now() + 60_000;
        while ((await job.getState()) !== 'failed' && Date.now() < deadline)
          await new Promise((r) => setTimeout(r, 200));
        const page = await ctx.newPage();
        await signIn(page, 'carol');
        await page.click('a[href="#/jobs"]');
        await page.selectOption('#job-filters select[name=kind]', 'thumbnails');
        await page.selectOption('#job-filters select[name=state]', 'failed');
        const row = `#job-list tr[data-kind=thumbnails][data-job="${job.id}"]`;
        await page.waitForSelector(row);
        expect(await page.textContent(`${row} [data-col=failure]`)).toMatch(/not in the index/);
        expect(await page.textContent(`${row} [data-col=subject]`)).toBe(`series ${seriesUid}`);
        // A failed-state filter lists failed jobs only.
        const states = await page.$$eval('#job-list tbody tr', (rows) =>
          rows.map((r) => r.getAttribute('data-state')),
        );
        expect(new Set(states)).toEqual(new Set(['failed']));

        // The series arrives; the administrator retries the job from the page and watches it complete (polled).
        const stored = await ingestInstance(gw.services, bytes, ['lung-study'], 'stow');
        if (!stored.ok) throw new Error(`ingest failed: ${stored.message}`);
        // Retry from the failed list (a row that stays put), then widen the filter to watch it complete: clicking while
        // the list re-renders for a new filter could land on a row being replaced.
        await page.click(`${row} button[data-action=retry]`);
        await page.waitForSelector(`${row}`, { state: 'detached' });
        await page.selectOption('#job-filters select[name=state]', '');
        await page.waitForSelector(`${row}[data-state=completed]`, { timeout: 60_000 });
        expect(await page.textContent(`${row} [data-col=progress]`)).toContain('100%');
        expect(await page.textContent(`${row} [data-col=failure]`)).toBe('');
        expect(await page.textContent(`${row} td:nth-child(4)`)).toBe('lung-study');
        const thumb = await gw.services.db.query(
          `SELECT t.content_type FROM thumbnails t JOIN instances i USING (sop_instance_uid) WHERE i.series_uid = $1`,
          [seriesUid],
        );
        expect(thumb.rows).toEqual([{ content_type: 'image/jpeg' }]);
        // The retry is in the audit trail, by job id; no identifying value in its detail.
        // The trail is written in batches off the request path: poll for the row.
        let audit = { rows: [] as Array<{ outcome: number; detail: unknown }> };
        for (let i = 0; i < 50 && audit.rows.length === 0; i++) {
          audit = await gw.services.db.query<{ outcome: number; detail: unknown }>(
            `SELECT outcome, detail FROM audit_events WHERE action = 'job.retry' ORDER BY id DESC LIMIT 1`,
          );
          if (!audit.rows.length) await new Promise((r) => setTimeout(r, 100));
        }
        expect(audit.rows).toMatchObject([
          { outcome: 202, detail: { kind: 'thumbnails', job: String(job.id) } },
        ]);
        // Admins only: a project admin who is no global admin is refused by the API.
        const dave = await fetch(`${gw.url}/api/jobs/list`, {
          headers: { Authorization: `Bearer ${await issuer.userToken('dave')}` },
        });
        expect(dave.status).toBe(403);
      } finally {
        await ctx.close();
        await worker.close();
        await job.remove().catch(() => undefined);
      }
    },
    3 * 60_000,
  );
  it(
    'a curator builds a cohort in the wizard; the research project shows it with nothing identifying of the source',
    async () => {
      const worker = initCohortWorker({
        db: gw.services.db,
        pacs: gw.services.pacs,
        archive: gw.services.archive,
        deid: deidentifier,
        config: gw.config,
      });
      const source = (
        await gw.services.db.query<{ patient_name: string; patient_id: string }>(
          `SELECT patient_name, patient_id FROM project_studies WHERE project_id = 'lung-study' AND study_uid = $1`,
          [study],
        )
      ).rows[0];
      const identifying = [
        study,
        source.patient_id,
        ...source.patient_name.split('^').filter((w) => w.length > 2),
      ];
      const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
      try {
        const page = await ctx.newPage();
        await signIn(page, 'alice');
        await page.click('tr[data-project="lung-study"] a[data-action=cohorts]');
        await page.click('#new-cohort');
        // 1. studies: the CT, ticked from the QIDO list of the source project.
        await page.fill('#wizard-studies input[name=modality]', 'CT');
        await page.click('#wizard-search');
        await page.check(`#wizard-study-list tr[data-study="${study}"] input[type=checkbox]`);
        await page.click('#wizard-next-1');
        // 2. options, by their PS3.15 names.
        await page.check('#wizard-options input[name=retainPatientCharacteristics]');
        await page.click('#wizard-next-2');
        // 3. a new research project.
        await page.fill('#wizard-target input[name=new-id]', 'lung-research');
        await page.fill('#wizard-target input[name=new-name]', 'Lung research');
        await page.fill('#wizard-target input[name=cohort-name]', 'pilot');
        await page.click('#wizard-next-3');
        expect(await page.textContent('#review-options')).toBe('Retain patient characteristics');
        await page.click('#start-cohort');
        await page.waitForURL(/#\/cohorts\/[0-9a-f-]{36}$/);
        const cohortId = page.url().split('/').pop() as string;
        // Progress is polled until the worker has stored the instance.
        await page.waitForSelector('#cohort[data-state=done]', { timeout: 90_000 });
        expect(await page.textContent('#cohort-progress')).toContain('1 of 1 instances: 1 stored');
        const row = await gw.services.db.query<{ options: Record<string, boolean> }>(
          'SELECT options FROM cohorts WHERE id = $1',
          [cohortId],
        );
        expect(row.rows[0].options.retainPatientCharacteristics).toBe(true);

        // Downloads: the UID mapping names the source study; the ZIP is a ZIP.
        const [csv] = await Promise.all([page.waitForEvent('download'), page.click('#download-uid-mapping')]);
        const csvText = readFileSync(await csv.path(), 'utf8');
        expect(csvText.split('\n')[0]).toBe('id_old,id_new');
        expect(csvText).toContain(study);
        const [zip] = await Promise.all([page.waitForEvent('download'), page.click('#download-cohort')]);
        expect(
          readFileSync(await zip.path())
            .subarray(0, 2)
            .toString(),
        ).toBe('PK');

        // The research project lists the de-identified study, and no identifying value of the source.
        await page.click('#research-project');
        await page.waitForSelector('#studies tbody tr');
        expect(await page.$$eval('#studies tbody tr', (r) => r.length)).toBe(1);
        const cells = await page.$$eval('main td, main th, main h1, main a, main img', (els) =>
          els.map(
            (e) => `${e.textContent ?? ''} ${e.getAttribute('alt') ?? ''} ${e.getAttribute('href') ?? ''}`,
          ),
        );
        for (const v of identifying) expect(cells.filter((c) => c.includes(v))).toEqual([]);
        expect(cells.some((c) => /RP[0-9A-F]{12}/.test(c))).toBe(true);

        // Withdraw the subject: after confirming, nothing of it is left in the research project.
        await page.goto(`${gw.url}/#/cohorts/${cohortId}`);
        await page.click('#cohort-subjects button[data-action=withdraw]');
        await page.click('#cohort-subjects button[data-action=confirm-withdraw]');
        await page.waitForSelector('.notice:text("was withdrawn")');
        const left = await gw.services.db.query(
          `SELECT 1 FROM project_instances WHERE project_id = 'lung-research'`,
        );
        expect(left.rowCount).toBe(0);
      } finally {
        await ctx.close();
        await worker.close();
      }
    },
    4 * 60_000,
  );
});
