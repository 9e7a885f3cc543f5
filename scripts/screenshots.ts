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
  const gw = await startGateway({
    AUTH_ENABLED: 'true',
    OIDC_ISSUER: issuer.issuer,
    VIEWER_DIST_DIR: ensureOhifDist(),
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
    await admin.close();
  } finally {
    await browser.close();
    await gw.close();
    await issuer.close();
    restoreEnv();
    await stack.destroy();
    rmSync(upload, { recursive: true, force: true });
  }
}

main().catch((err: unknown) => {
  console.error(err instanceof Error ? err.message : err);
  process.exit(1);
});
