/**
 * The Runs page of the web application (issue 19) in Chromium against the real stack: a contributor logs in at the
 * issuer, picks the threshold pipeline, a series and a threshold in the form generated from its descriptor, starts
 * the run, watches it pass through running to succeeded, opens its log on the page and downloads its JSON output.
 * The run really executes: the BullMQ worker runs the tool in bubblewrap and stores its masks back by STOW-RS.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Worker } from 'bullmq';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, signInThroughIssuer } from './helpers/browser';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { initPipelineRunWorker } from '../src/jobs/pipeline-run';
import { generateInstances } from '../tools/synth';
import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { bearer } from './helpers/auth';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';
import { builtWebApp } from './helpers/once';

const ROOT = join(__dirname, '..');

describe('web application: the Runs page (Chromium)', () => {
  let issuer: OidcIssuer;
  let gw: TestGateway;
  let browser: Browser;
  let worker: Worker | undefined;
  let scratch: string;
  const series = { study: '', uid: '', count: 4 };

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
    const webDist = await builtWebApp();
    await resetStack();
    scratch = mkdtempSync(join(tmpdir(), 'web-runs-'));
    issuer = await startOidcIssuer({ tokenLifetimeS: 600 });
    gw = await startGateway({
      AUTH_ENABLED: 'true',
      OIDC_ISSUER: issuer.issuer,
      WEB_DIST_DIR: webDist,
      PIPELINE_RUN_TOKEN_SECRET: 'web-runs-test-secret-0123456789abcdef',
      PIPELINE_WORK_DIR: join(scratch, 'runs'),
      RECORDS_FILES_DIR: join(scratch, 'files'),
    });
    issuer.allowOrigin(gw.url);
    const { db } = gw.services;
    await ensureProject(db, { id: 'demo', name: 'Demo' });
    const instances = [
      ...generateInstances({
        patients: 1,
        studiesPerPatient: 1,
        seriesPerStudy: 1,
        instancesPerSeries: series.count,
        modalities: ['MR'],
        seed: 'web-runs',
      }),
    ];
    for (const i of instances)
      expect((await ingestInstance(gw.services, i.buffer, ['demo'], 'stow')).ok).toBe(true);
    series.study = instances[0].studyInstanceUid;
    series.uid = instances[0].seriesInstanceUid;
    // The registry is a global admin's (carol); the page is a contributor's (bob).
    const register = await fetch(`${gw.url}/api/pipelines`, {
      method: 'POST',
      headers: bearer(await issuer.userToken('carol'), { 'content-type': 'application/json' }),
      body: readFileSync(join(ROOT, 'pipelines/descriptors/threshold.json')),
    });
    expect(register.status).toBe(201);
    worker = initPipelineRunWorker({
      db,
      logger: gw.services.logger,
      config: { ...gw.config, PIPELINE_GATEWAY_URL: gw.url },
    });
    browser = await launchChromium();
  }, 15 * 60_000);

  afterAll(async () => {
    await browser?.close();
    await worker?.close();
    await gw?.close();
    await issuer?.close();
    if (scratch) rmSync(scratch, { recursive: true, force: true });
  });

  async function signIn(page: Page, user: string): Promise<void> {
    await signInThroughIssuer(page, gw.url, issuer.url, user);
  }

  it(
    'bob starts the threshold tool on a series, watches it run and finish, opens its log, downloads its output',
    async () => {
      const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
      const problems: string[] = [];
      try {
        const page = await ctx.newPage();
        page.setDefaultTimeout(30_000);
        page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
        const step = (s: string) => process.env.DEBUG_WEB && console.log(new Date().toISOString(), s);
        step('start');
        await signIn(page, 'bob');
        step('signed in');
        await page.goto(`${gw.url}/#/p/demo/runs`);
        step('runs page');
        await page.waitForSelector('#pipeline option[value="threshold"]', { state: 'attached' });
        step('pipelines listed');
        await page.selectOption('#pipeline', 'threshold');
        step('chosen');
        // The form is the descriptor's: its two parameters, the required one marked.
        await page.getByLabel(/^Threshold \*/).fill('1');
        step('threshold');
        await page.getByLabel(/^Start delay/).fill('3'); // long enough to see it running
        step('delay');
        await page
          .locator('.series-choice', { hasText: `${series.count} instances` })
          .locator('input')
          .check();
        step('series checked');
        await page.click('#start-run');
        step('clicked');
        // The new run appears in the list (the project has no other).
        const runId = (await page.locator('tr[data-run]').first().getAttribute('data-run'))!;
        expect(runId).toMatch(/^[0-9a-f-]{36}$/);
        step(`run ${runId}`);
        const row = page.locator(`tr[data-run="${runId}"]`);

        // The list refreshes itself while the run goes: running with its phase and progress, then succeeded.
        // (phases: starting, materialising, running — the tool's 3 s delay holds it there — collecting, storing)
        await row.locator('.run-state', { hasText: /^running \(running\)/ }).waitFor({ timeout: 60_000 });
        const progressWhileRunning = Number(await row.locator('progress').getAttribute('value'));
        expect(progressWhileRunning).toBeGreaterThan(0);
        expect(progressWhileRunning).toBeLessThan(100);
        await row.locator('.run-state', { hasText: /^succeeded$/ }).waitFor({ timeout: 90_000 });
        expect(Number(await row.locator('progress').getAttribute('value'))).toBe(100);

        step('succeeded');
        // Its log, opened on the page.
        await row.getByRole('button', { name: 'Details' }).click();
        const stdout = page.locator('.run-artefacts [data-artefact="stdout.txt"]');
        await stdout.locator('.show-log').click();
        await expect(page.locator('#run-log').textContent({ timeout: 10_000 })).resolves.toBe(
          `wrote ${series.count} mask images\n`,
        );

        // Its JSON output, downloaded with the user's token; the masks went back into the project.
        const download = page.waitForEvent('download');
        await page.locator('.run-artefacts [data-artefact="summary.json"] .download').click();
        const file = await download;
        expect(file.suggestedFilename()).toBe('summary.json');
        const summary = JSON.parse(readFileSync((await file.path())!, 'utf8')) as {
          threshold: number;
          images: number;
          pixels_in_mask: number[];
        };
        expect([summary.threshold, summary.images, summary.pixels_in_mask.length]).toEqual([
          1,
          series.count,
          series.count,
        ]);
        await expect(page.locator('.run-files').textContent()).resolves.toContain(
          `runs/${runId}/summary.json`,
        );
        const link = page.locator('.run-detail a', { hasText: /^series / });
        await expect(link.getAttribute('href')).resolves.toBe(`#/p/demo/studies/${series.study}`);
        const run = (await (
          await fetch(`${gw.url}/api/projects/demo/runs/${runId}`, {
            headers: bearer(await issuer.userToken('bob')),
          })
        ).json()) as { outputSeries: string[] };
        expect(await link.textContent()).toBe(`series ${run.outputSeries[0]}`);
        expect(problems).toEqual([]);
      } catch (err) {
        if (process.env.DEBUG_WEB)
          await ctx.pages()[0]?.screenshot({ path: '/tmp/aperture-web-runs.png', fullPage: true });
        throw err;
      } finally {
        await ctx.close();
      }
    },
    5 * 60_000,
  );
});
