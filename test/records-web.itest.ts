/**
 * The research records pages of the web application (issue 18), in Chromium against the real stack: a curator defines
 * a record type from its JSON Schema, imports a small sheet through the page (the dry run lists a refused row naming
 * its field, then the import is applied), opens a subject, edits a record (the gateway's error is shown beside the
 * field), uploads two files with progress and downloads one back byte-identical, and sees the Kaplan–Meier curve; a
 * reader of the same project sees the records with no write, import or upload control.
 */
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { CHROMIUM, launchChromium, signInThroughIssuer } from './helpers/browser';
import { unzip } from './helpers/zip';
import { builtWebApp } from './helpers/once';
import dcmjs from 'dcmjs';
import { ensureProject } from '../src/index-db/projects';
import { ingestInstance } from '../src/ingest/ingest';
import { generateInstances } from '../tools/synth';
import { type OidcIssuer, startOidcIssuer } from '../tools/oidc-issuer/issuer';
import { resetStack, startGateway, type TestGateway } from './helpers/gateway';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

const SCHEMA = {
  type: 'object',
  properties: {
    baseline_id: { type: 'string', maxLength: 32 },
    stage: { type: 'string', enum: ['T1', 'T2', 'T3', 'T4'] },
    months: { type: 'number', 'x-unit': 'month', minimum: 0 },
    died: { type: 'boolean' },
  },
  required: ['baseline_id', 'stage'],
  'x-time-to-event': { time: 'months', event: 'died' },
};

/** Six rows; row 4 of the sheet (the third data row) has a stage outside the code list. */
const SHEET =
  [
    'patient_id,baseline_id,stage,months,died',
    'WEB-001,B-001,T1,30,no',
    'WEB-002,B-002,T3,12,yes',
    'WEB-003,B-003,T9,8,yes',
    'WEB-004,B-004,T3,20,yes',
    'WEB-005,B-005,T1,40,no',
    'WEB-006,B-006,T2,5,yes',
  ].join('\r\n') + '\r\n';

describe('web application: research records (Chromium)', () => {
  let issuer: OidcIssuer;
  let gw: TestGateway;
  let browser: Browser;
  const filesDir = mkdtempSync(join(tmpdir(), 'aperture-records-web-'));

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM} (set CHROMIUM_PATH)`);
    const webDist = await builtWebApp();
    await resetStack();
    issuer = await startOidcIssuer({ tokenLifetimeS: 600 });
    gw = await startGateway({
      AUTH_ENABLED: 'true',
      OIDC_ISSUER: issuer.issuer,
      WEB_DIST_DIR: webDist,
      RECORDS_FILES_DIR: filesDir,
    });
    issuer.allowOrigin(gw.url);
    await ensureProject(gw.services.db, { id: 'lung-study', name: 'Lung study' });
    // erin (reader of demo in the realm) is made a reader of lung-study by its administrator, dave.
    const dave = await issuer.userToken('dave');
    const res = await fetch(`${gw.url}/api/projects/lung-study/members/erin`, {
      method: 'PUT',
      headers: { Authorization: `Bearer ${dave}`, 'Content-Type': 'application/json' },
      body: JSON.stringify({ role: 'reader', kind: 'username' }),
    });
    if (res.status !== 201) throw new Error(`could not make erin a reader: ${res.status}`);
    browser = await launchChromium();
  }, 15 * 60_000);

  afterAll(async () => {
    await browser?.close();
    await gw?.close();
    await issuer?.close();
    rmSync(filesDir, { recursive: true, force: true });
  });

  /** Logs in through the issuer's login form, as a person would. */
  async function signIn(page: Page, user: string): Promise<void> {
    await signInThroughIssuer(page, gw.url, issuer.url, user);
  }

  /** Whether the page's Kaplan–Meier image has loaded and drawn (an SVG the gateway made). */
  const kmDrawn = (page: Page) =>
    page.$eval('#km-curve', (img) => {
      const i = img as unknown as { complete: boolean; naturalWidth: number; src: string };
      return i.complete && i.naturalWidth > 0 && i.src.startsWith('blob:');
    });

  let subjectUrl = '';

  it('alice defines a type, imports a sheet (dry run names the refused field), edits a record, attaches and downloads files, sees the KM curve', async () => {
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
    const page = await ctx.newPage();
    const problems: string[] = [];
    page.on('pageerror', (e) => problems.push(e.message));
    const urls: string[] = [];
    page.on('request', (r) => urls.push(r.url()));
    try {
      await signIn(page, 'alice');
      await page.click('tr[data-project="lung-study"] a[data-action="records"]');
      await page.waitForSelector('#records-page');
      expect(await page.textContent('#record-types')).toContain('No record types are defined');

      // Define the type from its JSON Schema.
      await page.fill('#type-name', 'Baseline');
      await page.fill('#type-key', 'baseline_id');
      await page.fill('#type-schema', JSON.stringify(SCHEMA, null, 2));
      await page.click('#define-type-submit');
      await page.waitForSelector('#types-table tr[data-type="Baseline"]');
      expect(await page.textContent('#define-type')).toContain('Baseline version 1 defined.');

      // Import: the mapping is guessed from the CSV header; the dry run lists the refused row with its field.
      await page.setInputFiles('#import-file', {
        name: 'baseline.csv',
        mimeType: 'text/csv',
        buffer: Buffer.from(SHEET),
      });
      await page.waitForSelector('#import-mapping');
      expect(await page.inputValue('#import-mapping input[data-map="@subject"]')).toBe('patient_id');
      expect(await page.inputValue('#import-mapping input[data-map="months"]')).toBe('months');
      expect(await page.isDisabled('#import-apply')).toBe(true);
      await page.click('#import-dry-run');
      await page.waitForSelector('#import-summary');
      expect(await page.textContent('#import-summary')).toContain(
        'Dry run: 6 rows — 5 to create, 0 changed, 0 unchanged, 1 refused.',
      );
      const refused = await page.textContent('#import-rows tr[data-action="refuse"]');
      expect(refused).toContain('B-003');
      expect(refused).toMatch(/stage: /);
      // Nothing was written by the dry run.
      expect(await page.textContent('#subjects')).toContain('No subjects yet');

      await page.click('#import-apply');
      await page.waitForFunction(() =>
        (
          globalThis as unknown as { document: { querySelector(s: string): { textContent: string } | null } }
        ).document
          .querySelector('#import-summary')
          ?.textContent.startsWith('Imported:'),
      );
      expect(await page.textContent('#import-summary')).toContain(
        'Imported: 6 rows — 5 to create, 0 changed, 0 unchanged, 1 refused.',
      );
      // The subjects list refreshed: five subjects, none for the refused row.
      await page.waitForSelector('#subjects-table');
      const listed = await page.$$eval('#subjects-table tbody tr td:first-child', (tds) =>
        tds.map((td) => (td as unknown as { textContent: string }).textContent),
      );
      expect(listed).toEqual(['WEB-001', 'WEB-002', 'WEB-004', 'WEB-005', 'WEB-006']);

      // Export as CSV: the imported rows come back (streamed through a single-use link).
      const [csv] = await Promise.all([
        page.waitForEvent('download'),
        page.click('#types-table tr[data-type="Baseline"] button[data-action="export-csv"]'),
      ]);
      expect(csv.suggestedFilename()).toBe('Baseline.csv');
      const exported = readFileSync((await csv.path())!, 'utf8')
        .trim()
        .split(/\r?\n/);
      const head = exported[0].split(',');
      expect([...head].sort()).toEqual(
        ['subject', 'issuer', 'baseline_id', 'stage', 'months', 'died', 'revision', 'updated_at'].sort(),
      );
      // The fields in the order the schema was written in (jsonb's own would be died, stage, months, baseline_id).
      expect(head.filter((h) => h in SCHEMA.properties)).toEqual(Object.keys(SCHEMA.properties));
      const col = (l: string, name: string) => l.split(',')[head.indexOf(name)];
      expect(
        exported
          .slice(1)
          .map((l) => ['subject', 'issuer', 'baseline_id', 'stage'].map((c) => col(l, c)).join(',')),
      ).toEqual([
        'WEB-001,,B-001,T1',
        'WEB-002,,B-002,T3',
        'WEB-004,,B-004,T3',
        'WEB-005,,B-005,T1',
        'WEB-006,,B-006,T2',
      ]);

      // Find subjects: stage T3 gives the two imported T3 rows; adding "with a CT" gives none (no images here).
      const cond = '#search-form p[data-condition="0"]';
      await page.selectOption(`${cond} select[name="type"]`, 'Baseline');
      await page.selectOption(`${cond} select[name="field"]`, 'stage');
      await page.selectOption(`${cond} select[name="op"]`, 'eq');
      await page.selectOption(`${cond} select[name="value"]`, 'T3');
      await page.click('#search-submit');
      await page.waitForSelector('#search-results');
      expect(await page.textContent('#search-count')).toBe('2 subjects found');
      const hits = await page.$$eval('#search-results tbody td:first-child', (tds) =>
        tds.map((td) => (td as unknown as { textContent: string }).textContent),
      );
      expect(hits).toEqual(['WEB-002', 'WEB-004']);
      await page.fill('#search-modality', 'CT');
      await page.click('#search-submit');
      await page.waitForSelector('#search-count:text-is("0 subjects found")');

      // The summary: per-field counts and the Kaplan–Meier curve, then grouped by stage.
      await page.waitForSelector('#summary-count');
      expect(await page.textContent('#summary-count')).toBe('5 records');
      expect(await page.textContent('#summary-fields tr[data-field="stage"]')).toContain('T3: 2');
      await page.waitForSelector('#km-curve');
      expect(await kmDrawn(page)).toBe(true);
      const before = await page.getAttribute('#km-curve', 'src');
      await page.selectOption('#summary-group', 'stage');
      await page.waitForFunction(
        (old) =>
          (
            globalThis as unknown as { document: { querySelector(s: string): { src: string } | null } }
          ).document.querySelector('#km-curve')?.src !== old,
        before,
      );
      await page.waitForSelector('#km-curve');
      expect(await kmDrawn(page)).toBe(true);
      expect(await page.textContent('#summary figcaption')).toContain('by stage');

      // A subject's page: the hash holds its UUID, never the Patient ID.
      await page.click('#subjects-table a:text("WEB-002")');
      await page.waitForSelector('#subject-page tr[data-key="B-002"]');
      subjectUrl = page.url();
      expect(subjectUrl).toMatch(/#\/p\/lung-study\/records\/subjects\/[0-9a-f-]{36}$/);
      expect(await page.textContent('#subject-patient-id')).toBe('WEB-002');

      // Edit the record: a bad number comes back from the gateway with the field named beside it.
      await page.click('tr[data-key="B-002"] button[data-action="edit"]');
      await page.fill('.record-form input[name="months"]', 'soon');
      await page.click('.record-form button[type="submit"]');
      await page.waitForSelector('.record-form [data-field-error="months"]');
      expect(await page.textContent('.record-form [role="alert"]')).toContain('months');
      await page.fill('.record-form input[name="months"]', '14');
      await page.click('.record-form button[type="submit"]');
      await page.waitForSelector('.record-form', { state: 'detached' });
      await page.waitForSelector('tr[data-key="B-002"] td.num:text-is("2")'); // revision 2
      expect(await page.textContent('tr[data-key="B-002"]')).toContain('14');

      // A new record from the form generated from the schema: a code list is a select, a boolean a checkbox.
      await page.click('section[data-type="Baseline"] button[data-action="new-record"]');
      await page.fill('.record-form input[name="baseline_id"]', 'B-002-R');
      await page.selectOption('.record-form select[name="stage"]', 'T4');
      await page.fill('.record-form input[name="months"]', '3');
      await page.check('.record-form input[name="died"]');
      await page.click('.record-form button[type="submit"]');
      await page.waitForSelector('tr[data-key="B-002-R"]');
      const cells = await page.$$eval('tr[data-key="B-002-R"] td', (tds) =>
        tds.map((td) => (td as unknown as { textContent: string }).textContent),
      );
      expect(cells[0]).toBe('B-002-R'); // the key field first
      expect(cells.slice(0, 4).sort()).toEqual(['3', 'B-002-R', 'T4', 'yes'].sort());
      expect(cells[4]).toBe('1'); // revision

      // Two files at once, with progress; then one downloaded back byte-identical.
      const a = randomBytes(300 * 1024);
      const b = Buffer.from('dose,position\n1.8,iso\n2.0,iso\n');
      await page.setInputFiles('#files-input', [
        { name: 'calibration.bin', mimeType: 'application/octet-stream', buffer: a },
        { name: 'plan.csv', mimeType: 'text/csv', buffer: b },
      ]);
      await page.click('#upload-submit');
      await page.waitForSelector('#upload-done');
      expect(await page.textContent('#upload-done')).toBe('2 files stored.');
      await page.waitForSelector('#files-table tr[data-file="plan.csv"]');
      expect(await page.getAttribute('#files-table tr[data-file="calibration.bin"] code', 'title')).toBe(
        sha(a),
      );
      const [download] = await Promise.all([
        page.waitForEvent('download'),
        page.click('#files-table tr[data-file="calibration.bin"] button[data-action="download"]'),
      ]);
      expect(download.suggestedFilename()).toBe('calibration.bin');
      expect(sha(readFileSync((await download.path())!))).toBe(sha(a));
      expect(download.url()).toMatch(/\/download\/[A-Za-z0-9_-]{43}$/);
      // All of them as one ZIP, streamed through a single-use link as well.
      const [zip] = await Promise.all([page.waitForEvent('download'), page.click('#files-zip')]);
      const entries = await unzip(readFileSync((await zip.path())!));
      expect([...entries.keys()].sort()).toEqual(['calibration.bin', 'plan.csv']);
      expect(sha(entries.get('calibration.bin')!)).toBe(sha(a));
      expect(entries.get('plan.csv')!.equals(b)).toBe(true);

      // A curator hands a search to the cohort wizard: once WEB-004 has a CT, "T3 with a CT" finds it alone.
      const [ct] = [
        ...generateInstances({
          patients: 1,
          studiesPerPatient: 1,
          seriesPerStudy: 1,
          instancesPerSeries: 1,
          modalities: ['CT'],
          rows: 16,
          cols: 16,
          seed: 'rec-web-ct',
        }),
      ];
      const data = dcmjs.data.DicomMessage.readFile(
        ct.buffer.buffer.slice(ct.buffer.byteOffset, ct.buffer.byteOffset + ct.buffer.length) as ArrayBuffer,
      );
      data.dict['00100020'] = { vr: 'LO', Value: ['WEB-004'] };
      const stored = await ingestInstance(gw.services, Buffer.from(data.write()), ['lung-study'], 'stow');
      expect(stored.ok).toBe(true);
      await page.goto(`${gw.url}/#/p/lung-study/records`);
      await page.waitForSelector('#search-form');
      await page.selectOption(`${cond} select[name="type"]`, 'Baseline');
      await page.selectOption(`${cond} select[name="field"]`, 'stage');
      await page.selectOption(`${cond} select[name="value"]`, 'T3');
      await page.fill('#search-modality', 'CT');
      await page.click('#search-submit');
      await page.waitForSelector('#search-count:text-is("1 subject found")');
      await page.click('#search-to-cohort');
      await page.waitForSelector('#wizard-from-records');
      expect(await page.textContent('#wizard-from-records')).toContain('1 subject the Records search found');
      expect(await page.isChecked('#wizard-with-records')).toBe(true);
      await page.click('#wizard-next-1');
      await page.click('#wizard-next-2');
      await page.fill('#wizard-target input[name=new-id]', 'records-web-research');
      await page.fill('#wizard-target input[name=new-name]', 'Records web research');
      await page.fill('#wizard-target input[name=cohort-name]', 'T3 with a CT');
      await page.click('#wizard-next-3');
      await page.click('#start-cohort');
      await page.waitForURL(/#\/cohorts\/[0-9a-f-]{36}$/);
      const cohortId = page.url().split('/').pop() as string;
      const made = await gw.services.db.query<{ source_studies: string[]; records: boolean }>(
        `SELECT source_studies, EXISTS (SELECT 1 FROM cohort_records r WHERE r.cohort_id = c.id) AS records
           FROM cohorts c WHERE c.id = $1`,
        [cohortId],
      );
      expect(made.rows[0]).toEqual({ source_studies: [ct.studyInstanceUid], records: true });

      // No Patient ID in any URL the page asked for.
      expect(urls.filter((u) => /WEB-00\d/.test(u))).toEqual([]);
      expect(problems).toEqual([]);
    } finally {
      await ctx.close();
    }
  }, 180_000);

  it('erin, a reader, sees the records, files and curve with no import, upload or edit control', async () => {
    expect(subjectUrl).not.toBe('');
    const ctx = await browser.newContext({ viewport: { width: 1400, height: 900 } });
    const page = await ctx.newPage();
    try {
      await signIn(page, 'erin');
      await page.click('tr[data-project="lung-study"] a[data-action="records"]');
      await page.waitForSelector('#subjects-table');
      await page.waitForSelector('#km-curve');
      // The subjects alice imported, by Patient ID (a clean-clone run once listed 10 rows here, cause not found:
      // the row list is printed with the failure so that the next one explains itself).
      const listed = await page.$$eval('#subjects-table tbody tr', (trs) =>
        trs.map((tr) => (tr as unknown as { textContent: string }).textContent),
      );
      expect(listed.filter((t) => /WEB-00\d/.test(t)).map((t) => /WEB-00\d/.exec(t)![0])).toEqual([
        'WEB-001',
        'WEB-002',
        'WEB-004',
        'WEB-005',
        'WEB-006',
      ]);
      for (const sel of ['#import', '#define-type', '#add-subject', 'button[data-action="export-csv"]'])
        expect(await page.$(sel)).toBeNull();
      await page.goto(subjectUrl);
      await page.waitForSelector('#files-table tr[data-file="plan.csv"]');
      await page.waitForSelector('tr[data-key="B-002"]');
      for (const sel of [
        '#upload-files',
        '#files-input',
        'button[data-action="edit"]',
        'button[data-action="delete"]',
        'button[data-action="new-record"]',
      ])
        expect(await page.$(sel)).toBeNull();
      // Reading is allowed: the download button is there.
      expect(
        await page.$('#files-table tr[data-file="plan.csv"] button[data-action="download"]'),
      ).not.toBeNull();
    } finally {
      await ctx.close();
    }
  }, 120_000);
});
