/**
 * `npm run screenshots`: a PNG of every page of the web application in docs/screenshots/, taken in Debian's Chromium
 * against a throw-away stack (its own PostgreSQL, Redis and Orthanc on free ports) with the sample studies, logged in
 * through the local issuer's login page exactly as a person would.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type Page } from 'playwright-core';
import { deidentifier } from '../src/cohorts/deidentifier';
import { ensureProject } from '../src/index-db/projects';
import { quarantineInstance } from '../src/index-db/routing';
import { ingestInstance } from '../src/ingest/ingest';
import { initCohortWorker } from '../src/jobs/cohort';
import { initPipelineRunWorker } from '../src/jobs/pipeline-run';
import { generateInstances } from '../tools/synth';
import { startPrivateStack } from '../test/helpers/private-stack';
import { startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { ensureOhifDist } from './viewer';

const ROOT = join(__dirname, '..');
const OUT = join(ROOT, 'docs/screenshots');
const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(ROOT, '../shared/dicom-samples');
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

function filesUnder(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = join(dir, n);
    return statSync(p).isDirectory() ? filesUnder(p) : [p];
  });
}

async function main(): Promise<void> {
  execFileSync(
    join(ROOT, 'node_modules/.bin/vite'),
    ['build', '--config', 'web/vite.config.mts', '--logLevel', 'error'],
    {
      cwd: ROOT,
      stdio: 'inherit',
    },
  );
  mkdirSync(OUT, { recursive: true });
  const stack = await startPrivateStack('aperture-shots-');
  const restoreEnv = stack.useInProcessEnv();
  process.env.LOG_LEVEL = 'silent';
  // Loaded after the environment points at the private stack: the helper reads it.
  const { startGateway } = await import('../test/helpers/gateway');
  const issuer = await startOidcIssuer();
  const scratch = mkdtempSync(join(tmpdir(), 'aperture-shots-runs-'));
  const gw = await startGateway({
    AUTH_ENABLED: 'true',
    OIDC_ISSUER: issuer.issuer,
    VIEWER_DIST_DIR: ensureOhifDist(),
    // A pipeline run for the Runs page (its files are kept beside the records).
    PIPELINE_RUN_TOKEN_SECRET: 'screenshots-run-token-secret-0123456789',
    PIPELINE_WORK_DIR: join(scratch, 'runs'),
    RECORDS_FILES_DIR: join(scratch, 'files'),
  });
  issuer.allowOrigin(gw.url);
  const browser = await chromium.launch({
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
  const upload = mkdtempSync(join(tmpdir(), 'aperture-shots-upload-'));
  try {
    await ensureProject(gw.services.db, { id: 'demo', name: 'Demo project' });
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung study' });
    for (const f of filesUnder(join(SAMPLES, 'hierarchy')))
      await ingestInstance(gw.services, readFileSync(f), ['demo'], 'stow');
    const ct = await ingestInstance(
      gw.services,
      readFileSync(join(SAMPLES, 'ct/CT_small.dcm')),
      ['lung-study'],
      'stow',
    );
    if (!ct.ok) throw new Error(`ingest failed: ${ct.message}`);

    const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const page = await ctx.newPage();
    const shot = async (name: string, p: Page = page) => {
      await p.waitForLoadState('networkidle');
      await p.screenshot({ path: join(OUT, `${name}.png`), fullPage: true });
      console.log(`docs/screenshots/${name}.png`);
    };
    await page.goto(`${gw.url}/`);
    await page.waitForSelector('#sign-in');
    await shot('01-sign-in');
    await page.click('#sign-in');
    await page.waitForSelector('#username');
    await page.fill('#username', 'alice');
    await shot('02-issuer-login');
    await page.fill('#password', 'alice-demo');
    await page.click('#kc-login');
    await page.waitForSelector('#projects');
    await shot('03-projects');
    await page.click('a[href="#/p/demo/studies"]');
    await page.waitForSelector('#studies tbody tr');
    await shot('04-studies');
    await page.fill('input[name=name]', 'peter');
    await page.fill('input[name=from]', '2003-01-01');
    await page.fill('input[name=to]', '2003-12-31');
    await page.click('#search');
    await shot('05-studies-filtered');
    await page.goto(`${gw.url}/#/p/lung-study/studies/${ct.parsed.studyInstanceUid}`);
    await page.waitForSelector('#series tbody tr');
    await shot('06-study');
    await page.goto(`${gw.url}/#/p/lung-study/studies/1.2.3.4.5.6.7`);
    await page.waitForSelector('[role=alert]');
    await shot('07-not-found');
    // Upload: a small folder with a malformed file and a text file, to show every outcome.
    mkdirSync(join(upload, 'exam'));
    writeFileSync(join(upload, 'exam', 'ct.dcm'), readFileSync(join(SAMPLES, 'ct/CT_small.dcm')));
    writeFileSync(join(upload, 'exam', 'mr.dcm'), readFileSync(join(SAMPLES, 'mr/MR_small.dcm')));
    writeFileSync(
      join(upload, 'exam', 'broken.dcm'),
      readFileSync(join(SAMPLES, 'malformed/rtplan_truncated.dcm')),
    );
    writeFileSync(join(upload, 'README.txt'), 'not DICOM\n');
    await page.goto(`${gw.url}/#/p/lung-study/upload`);
    await page.waitForSelector('#pick-folder', { state: 'attached' });
    await shot('08-upload');
    await page.setInputFiles('#pick-folder', upload);
    await page.waitForSelector('#upload-summary');
    await shot('09-upload-result');
    await page.goto(`${gw.url}/#/p/lung-study/shares/${ct.parsed.studyInstanceUid}`);
    await page.waitForSelector('#create-share');
    await page.click('#create-share');
    await page.waitForSelector('#share-created');
    await page.waitForSelector('#shares tbody tr');
    await shot('10-shares');
    const shareUrl = await page.inputValue('#share-url');
    const privateWindow = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const shared = await privateWindow.newPage();
    await shared.goto(shareUrl);
    await shared.waitForSelector('#studies tbody tr');
    await shot('11-shared-view', shared);
    await privateWindow.close();

    // alice curates lung-study: the cohort wizard, run to the end by a cohort worker in this process.
    const worker = initCohortWorker({
      db: gw.services.db,
      pacs: gw.services.pacs,
      archive: gw.services.archive,
      deid: deidentifier,
      config: gw.config,
    });
    try {
      await page.goto(`${gw.url}/#/p/lung-study/cohorts`);
      await page.click('#new-cohort');
      await page.fill('#wizard-studies input[name=modality]', 'CT');
      await page.click('#wizard-search');
      await page.check(
        `#wizard-study-list tr[data-study="${ct.parsed.studyInstanceUid}"] input[type=checkbox]`,
      );
      await shot('18-cohort-wizard');
      await page.click('#wizard-next-1');
      await page.check('#wizard-options input[name=retainPatientCharacteristics]');
      await page.click('#wizard-next-2');
      await page.fill('#wizard-target input[name=new-id]', 'lung-research');
      await page.fill('#wizard-target input[name=new-name]', 'Lung research');
      await page.fill('#wizard-target input[name=cohort-name]', 'pilot');
      await page.click('#wizard-next-3');
      await shot('19-cohort-review');
      await page.click('#start-cohort');
      await page.waitForSelector('#cohort[data-state=done]', { timeout: 120_000 });
      await shot('20-cohort');
      await page.goto(`${gw.url}/#/p/lung-study/cohorts`);
      await page.waitForSelector('#cohorts tbody tr');
      await shot('21-cohorts');
    } finally {
      await worker.close();
    }
    await ctx.close();
    // The global administrator's audit trail of everything above.
    const admin = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const adminPage = await admin.newPage();
    await adminPage.goto(`${gw.url}/`);
    await adminPage.click('#sign-in');
    await adminPage.fill('#username', 'carol');
    await adminPage.fill('#password', 'carol-demo');
    await adminPage.click('#kc-login');
    await adminPage.waitForSelector('#projects');
    const arrival = await ingestInstance(
      gw.services,
      readFileSync(join(SAMPLES, 'ct/CT2_JLSN_jpegls-near.dcm')),
      [],
      'stow',
    );
    if (arrival.ok) {
      await quarantineInstance(gw.services.db, {
        sopInstanceUid: arrival.parsed.sopInstanceUid,
        studyUid: arrival.parsed.studyInstanceUid,
        seriesUid: arrival.parsed.seriesInstanceUid,
        route: { calledAet: 'APERTURE', callingAet: 'MODALITY1', remoteIp: '127.0.0.1' },
        reason: 'no routing rule matched',
      });
    }
    await adminPage.goto(`${gw.url}/#/quarantine`);
    await adminPage.waitForSelector('#quarantine tbody tr');
    await shot('13-quarantine', adminPage);
    await adminPage.goto(`${gw.url}/#/audit`);
    await adminPage.waitForSelector('#audit tbody tr');
    await shot('12-audit', adminPage);
    await adminPage.goto(`${gw.url}/#/p/lung-study/routing`);
    await adminPage.waitForSelector('#add-rule');
    await adminPage.fill('#add-rule input[name=value]', 'CT_ROOM_7');
    await adminPage.click('#add-rule-submit');
    await adminPage.selectOption('#add-rule select[name=kind]', 'attribute');
    await adminPage.fill('#add-rule input[name=attribute]', 'InstitutionName');
    await adminPage.selectOption('#add-rule select[name=match]', 'prefix');
    await adminPage.fill('#add-rule input[name=value]', 'Lung');
    await adminPage.click('#add-rule-submit');
    await adminPage.locator('#rules tbody tr').nth(1).waitFor();
    await shot('14-routing', adminPage);
    await adminPage.goto(`${gw.url}/#/new-project`);
    await adminPage.fill('#new-project input[name=id]', 'trial-7');
    await adminPage.fill('#new-project input[name=name]', 'Trial seven');
    await shot('15-new-project', adminPage);
    await adminPage.goto(`${gw.url}/#/jobs`);
    await adminPage.waitForSelector('#jobs tbody tr');
    await shot('17-jobs', adminPage);
    await adminPage.goto(`${gw.url}/#/p/lung-study/studies/${ct.parsed.studyInstanceUid}`);
    await adminPage.click('#open-viewer');
    await adminPage.waitForSelector('canvas');
    // OHIF keeps fetching (thumbnails, prefetch): give it time to draw rather than waiting for an idle network.
    await adminPage.waitForTimeout(8000);
    await adminPage.screenshot({ path: join(OUT, '16-viewer.png') });
    console.log('docs/screenshots/16-viewer.png');

    // Studies sorted by the gateway (orderby), across every page of the union of carol's projects.
    await adminPage.goto(`${gw.url}/#/studies`);
    await adminPage.waitForSelector('#studies tbody tr');
    await adminPage.click('#studies th button[data-sort=name]');
    await adminPage.waitForSelector('#studies th[aria-sort=ascending]');
    await shot('22-studies-sorted', adminPage);

    // Research records: a record type, a subject (the CT's patient) with one record, its page.
    const carolToken = await issuer.userToken('carol');
    const api = async (method: string, path: string, body: unknown) => {
      const res = await fetch(`${gw.url}${path}`, {
        method,
        headers: { authorization: `Bearer ${carolToken}`, 'content-type': 'application/json' },
        body: JSON.stringify(body),
      });
      if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${await res.text()}`);
      return (await res.json()) as Record<string, unknown>;
    };
    await api('PUT', '/api/projects/lung-study/record-types/Baseline', {
      schema: {
        type: 'object',
        properties: {
          stage: { type: 'string', enum: ['T1', 'T2', 'T3', 'T4'] },
          months: { type: 'number', 'x-unit': 'month', minimum: 0 },
          died: { type: 'boolean' },
        },
        required: ['stage'],
      },
    });
    const subject = await api('POST', '/api/projects/lung-study/subjects', {
      patient_id: String(ct.parsed.json['00100020']?.Value?.[0] ?? 'LUNG-1'),
    });
    await api('POST', `/api/projects/lung-study/subjects/${String(subject.id)}/records/Baseline`, {
      data: { stage: 'T2', months: 14, died: false },
    });
    await adminPage.goto(`${gw.url}/#/p/lung-study/records`);
    await adminPage.waitForSelector('#record-types');
    await shot('23-records', adminPage);
    await adminPage.goto(`${gw.url}/#/p/lung-study/records/subjects/${String(subject.id)}`);
    await adminPage.waitForLoadState('networkidle');
    await shot('24-subject', adminPage);

    // A pipeline run on a synthetic MR series, run to the end by a pipeline worker in this process.
    const mr = [
      ...generateInstances({
        patients: 1,
        seriesPerStudy: 1,
        instancesPerSeries: 9,
        modalities: ['MR'],
        seed: 'shots',
      }),
    ];
    for (const i of mr) await ingestInstance(gw.services, i.buffer, ['demo'], 'stow');
    await api(
      'POST',
      '/api/pipelines',
      JSON.parse(readFileSync(join(ROOT, 'pipelines/descriptors/threshold.json'), 'utf8')),
    );
    const runWorker = initPipelineRunWorker({
      db: gw.services.db,
      logger: gw.services.logger,
      config: { ...gw.config, PIPELINE_GATEWAY_URL: gw.url },
    });
    try {
      await adminPage.goto(`${gw.url}/#/p/demo/runs`);
      await adminPage.waitForSelector('#pipeline option[value="threshold"]', { state: 'attached' });
      await adminPage.selectOption('#pipeline', 'threshold');
      await adminPage.getByLabel(/^Threshold \*/).fill('1');
      await adminPage.locator('.series-choice', { hasText: '(9 instances)' }).locator('input').check();
      await adminPage.click('#start-run');
      const run = adminPage.locator('tr[data-run]').first();
      await run.locator('.run-state', { hasText: /^succeeded$/ }).waitFor({ timeout: 120_000 });
      await run.getByRole('button', { name: 'Details' }).click();
      await shot('25-runs', adminPage);
    } finally {
      await runWorker.close();
    }

    // A share link revoked while its study page is open: Download says so in words, on the page.
    await adminPage.goto(`${gw.url}/#/p/lung-study/shares/${ct.parsed.studyInstanceUid}`);
    await adminPage.click('#create-share');
    await adminPage.waitForSelector('#share-created');
    const revokedUrl = await adminPage.inputValue('#share-url');
    const stranger = await browser.newContext({ viewport: { width: 1280, height: 800 } });
    const strangerPage = await stranger.newPage();
    await strangerPage.goto(`${revokedUrl}/studies/${ct.parsed.studyInstanceUid}`);
    await strangerPage.waitForSelector('#series tbody tr');
    // Every active link of the study (the one made for 10-shares too), so the stranger's is surely among them.
    const active = adminPage.locator('#shares tbody tr[data-status=active] button[data-action=revoke]');
    while ((await active.count()) > 0) {
      const before = await active.count();
      await active.first().click();
      await adminPage.waitForFunction(
        (n: number) =>
          // eslint-disable-next-line @typescript-eslint/no-explicit-any
          (globalThis as any).document.querySelectorAll('#shares tbody tr[data-status=active]').length < n,
        before,
      );
    }
    await strangerPage.click('#download-zip', { force: true });
    await strangerPage.waitForSelector('#share-gone');
    await shot('26-share-revoked', strangerPage);
    await stranger.close();
    await admin.close();
  } finally {
    await browser.close();
    await gw.close();
    await issuer.close();
    restoreEnv();
    await stack.destroy();
    rmSync(upload, { recursive: true, force: true });
    rmSync(scratch, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
