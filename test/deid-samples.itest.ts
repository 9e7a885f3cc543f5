/**
 * Every real sample the project has (../shared/dicom-samples and the test files of Debian's python3-pydicom)
 * through the de-identifier: each output still parses (the gateway's parser, dcmjs, DCMTK's dcmdump), dciodvfy
 * reports no error its source did not already have, the leak check finds nothing, the same input gives the same
 * bytes, and what is withheld is withheld for a reason the source shows. No server is needed; the DICOM tools
 * are installed by scripts/test.sh.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { BASIC_PROFILE, type DeidOptions, deidentify, leakCheck } from '../src/dicom/deid';
import { parsePart10 } from '../src/dicom/parse';

const SAMPLES = join(__dirname, '../../shared/dicom-samples');
const PYDICOM = '/usr/lib/python3/dist-packages/pydicom/data/test_files';

function files(root: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const f of readdirSync(d).sort()) {
      const p = join(d, f);
      if (statSync(p).isDirectory()) walk(p);
      else if (!/\.(md|tsv|txt|py|json|dump|gz|bz2|xz|zip)$|README/i.test(f)) out.push(p);
    }
  };
  walk(root);
  return out;
}

/** dciodvfy's errors, with values and item indices removed so that a source's error and its output's compare equal. */
function iodErrors(path: string): Set<string> {
  const r = spawnSync('dciodvfy', ['-new', path], { encoding: 'latin1' });
  const lines = `${r.stdout}\n${r.stderr}`.split('\n').filter((l) => l.startsWith('Error'));
  return new Set(lines.map((l) => l.replace(/ = <.*$/, '').replace(/\[\d+\]/g, '')));
}

const keys = {
  uidSecret: Buffer.from('samples-project-secret'),
  patientName: 'PSEUDO^0001',
  patientId: 'PSEUDO0001',
  dateOffsetDays: -213,
};
const MOST_OPTIONS: DeidOptions = {
  ...BASIC_PROFILE,
  retainSafePrivate: true,
  retainPatientCharacteristics: true,
  retainLongitudinalModifiedDates: true,
  cleanDescriptors: true,
  cleanStructuredContent: true,
  cleanGraphics: true,
};
const BURNED_IN_MODALITIES = /^(US|SC|XA|ES)$/;

describe('de-identifying every sample', () => {
  if (!existsSync(PYDICOM)) {
    // Never skipped: scripts/test.sh installs the package; a machine without it fails here, loudly.
    it('has the test files of python3-pydicom', () => {
      throw new Error(`${PYDICOM} is missing: apt-get install python3-pydicom (scripts/test.sh does it)`);
    });
    return;
  }
  const all = [...files(SAMPLES), ...files(PYDICOM)];
  const work = mkdtempSync(join(tmpdir(), 'deid-samples-'));
  // dciodvfy of each source, once for both option sets.
  const sourceErrors = new Map<string, Set<string>>();
  afterAll(() => rmSync(work, { recursive: true, force: true }));

  it('finds the samples', () => {
    expect(files(SAMPLES).length).toBeGreaterThanOrEqual(93);
    expect(files(PYDICOM).length).toBeGreaterThan(40);
  });

  it.each([
    ['the Basic Profile', BASIC_PROFILE],
    ['Basic with Modified Dates, Patient Characteristics, Safe Private and the Clean options', MOST_OPTIONS],
  ])(
    'under %s: outputs parse, validate as well as their sources, leak nothing and repeat byte for byte',
    (_n, options) => {
      let written = 0;
      const problems: string[] = [];
      for (const path of all) {
        const name = path.startsWith(PYDICOM)
          ? `pydicom/${relative(PYDICOM, path)}`
          : relative(SAMPLES, path);
        const source = readFileSync(path);
        const r = deidentify(source, options, keys);
        if ('withheld' in r) {
          // Withheld only for a reason the source shows.
          let parsed: ReturnType<typeof parsePart10> | undefined;
          try {
            parsed = parsePart10(source);
          } catch {
            parsed = undefined;
          }
          if (r.withheld === 'unreadable' && parsed)
            problems.push(`${name}: withheld as unreadable but parses`);
          if (r.withheld.startsWith('burned-in')) {
            // Read by DCMTK, independently of the de-identifier's reader and of the gateway's stricter parser.
            const dump = spawnSync(
              'dcmdump',
              ['-Un', '+P', '0008,0060', '+P', '0028,0301', '+P', '0008,0016', path],
              {
                encoding: 'latin1',
              },
            ).stdout;
            const value = (tag: string) =>
              new RegExp(`\\(${tag}\\) \\w\\w \\[([^\\]]*)\\]`).exec(dump)?.[1]?.trim() ?? '';
            const flag = value('0028,0301');
            const sc = value('0008,0016').startsWith('1.2.840.10008.5.1.4.1.1.7');
            if (!(flag === 'YES' || (flag !== 'NO' && (BURNED_IN_MODALITIES.test(value('0008,0060')) || sc))))
              problems.push(`${name}: withheld as ${r.withheld} without a reason`);
          }
          if (r.withheld === 'missing-uids' && parsed) problems.push(`${name}: withheld for UIDs it has`);
          continue;
        }
        written++;
        const out = join(work, `${written}.dcm`);
        writeFileSync(out, r.bytes);
        try {
          const p = parsePart10(r.bytes);
          if (p.sopInstanceUid !== r.outputUids.sop) problems.push(`${name}: SOP Instance UID differs`);
        } catch (err) {
          problems.push(`${name}: output does not parse (${(err as Error).message})`);
        }
        if (spawnSync('dcmdump', ['+E', out], { encoding: 'latin1' }).status !== 0)
          problems.push(`${name}: dcmdump fails`);
        let before = sourceErrors.get(path);
        if (!before) sourceErrors.set(path, (before = iodErrors(path)));
        for (const e of iodErrors(out))
          if (!before.has(e)) problems.push(`${name}: new dciodvfy error: ${e}`);
        const hits = leakCheck(r.bytes, r.identifying).hits;
        if (hits.length) problems.push(`${name}: leak check hits ${JSON.stringify(hits)}`);
        const again = deidentify(Buffer.from(source), options, keys);
        if (!('bytes' in again) || !again.bytes.equals(r.bytes)) problems.push(`${name}: not deterministic`);
      }
      expect(problems).toEqual([]);
      expect(written).toBeGreaterThan(80);
    },
    // ~130 objects, each through dciodvfy and dcmdump, on a shared 2-core machine.
    600_000,
  );
});
