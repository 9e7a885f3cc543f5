import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { el, nestedContent, part10, reasonOf, syntheticUids, text } from '../../test/helpers/dicom-fuzz';
import { FailureReason, parsePart10 } from './parse';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? join(__dirname, '../../../shared/dicom-samples');

describe('parsePart10 refuses what would crash or mislead the archive', () => {
  it('refuses a Secondary Capture whose Content Sequence nests 60 deep (Orthanc 1.10 segfaults on it)', () => {
    const bomb = part10(syntheticUids(1), [nestedContent(60)]);
    expect(bomb.length).toBeLessThan(3000);
    expect(reasonOf(() => parsePart10(bomb))).toBe(FailureReason.CannotUnderstand);
  });

  it('still reads an SR-like tree nested 8 deep', () => {
    const ok = parsePart10(part10(syntheticUids(2), [nestedContent(8)]));
    expect(ok.sopInstanceUid).toBe(syntheticUids(2).sopInstanceUid);
  });

  it('refuses depth 100,000 (3.6 MB) within milliseconds, without exhausting the stack', () => {
    const bomb = part10(syntheticUids(3), [nestedContent(100_000)]);
    const t0 = performance.now();
    expect(reasonOf(() => parsePart10(bomb))).toBe(FailureReason.CannotUnderstand);
    expect(performance.now() - t0).toBeLessThan(200);
  });

  it.each([
    ['a letter inside a component', '1.2.3n1.4'],
    ['a letter alone', '1.2.a.4'],
    ['an inner space', '1.2.3 1.4'],
    ['an empty component', '1.2..4'],
    ['a leading dot', '.1.2.4'],
    ['a trailing dot', '1.2.4.'],
    ['two values', '1.2.3\\1.2.4'],
    ['more than 64 characters', '1.' + '2'.repeat(64)],
  ])('refuses a SOP Instance UID with %s (0xA900), never repairing it', (_what, uid) => {
    const bytes = part10({ ...syntheticUids(4), sopInstanceUid: uid });
    expect(reasonOf(() => parsePart10(bytes))).toBe(FailureReason.DataSetDoesNotMatchSopClass);
  });

  it.each(['studyInstanceUid', 'seriesInstanceUid', 'sopClassUid'] as const)(
    'refuses an invalid %s the same way',
    (key) => {
      const bytes = part10({ ...syntheticUids(5), [key]: '1.2.3n1.4' });
      expect(reasonOf(() => parsePart10(bytes))).toBe(FailureReason.DataSetDoesNotMatchSopClass);
    },
  );

  it('keeps UIDs with leading zeros in a component, as real archives hold them, byte for byte', () => {
    const uids = { ...syntheticUids(6), sopInstanceUid: '1.2.840.0113619.2.55.3.01' };
    expect(parsePart10(part10(uids)).sopInstanceUid).toBe('1.2.840.0113619.2.55.3.01');
  });

  it('refuses an invalid Transfer Syntax UID', () => {
    const bytes = part10(syntheticUids(7), [], { transferSyntax: '1.2.840.10008.1.2.x' });
    expect(reasonOf(() => parsePart10(bytes))).not.toBe('accepted');
  });

  it('refuses MR_truncated and every other malformed sample that cannot be read whole (0xC000)', () => {
    for (const f of [
      'MR_truncated.dcm',
      'rtplan_truncated.dcm',
      'emri_small_jpeg_2k_lossless_too_short.dcm',
    ]) {
      const bytes = readFileSync(join(SAMPLES, 'malformed', f));
      expect({ f, reason: reasonOf(() => parsePart10(bytes)) }).toEqual({
        f,
        reason: FailureReason.CannotUnderstand,
      });
    }
  });

  it('refuses a fixed-size VR whose length does not fit (US of 3 bytes, FD of 4)', () => {
    const us = part10(syntheticUids(8), [
      el(0x00280010, 'US', Buffer.from([1, 0, 0, 0, 0, 0]).subarray(0, 4)),
    ]);
    expect(reasonOf(() => parsePart10(us))).toBe('accepted');
    const fd = part10(syntheticUids(8), [el(0x00181050, 'FD', Buffer.alloc(4))]);
    expect(reasonOf(() => parsePart10(fd))).toBe(FailureReason.CannotUnderstand);
    const ul = part10(syntheticUids(8), [el(0x00280101, 'UL', Buffer.alloc(6))]);
    expect(reasonOf(() => parsePart10(ul))).toBe(FailureReason.CannotUnderstand);
  });

  it('accepts a NUL inside a text value: the index keeps the value without it (PostgreSQL cannot hold U+0000)', () => {
    const bytes = part10(syntheticUids(11), [el(0x00081030, 'LO', Buffer.from('ab\0cde'.padEnd(8, ' ')))]);
    expect(reasonOf(() => parsePart10(bytes))).toBe('accepted');
    expect(parsePart10(bytes).json['00081030'].Value).toEqual(['abcde']);
  });

  it('refuses an odd value length', () => {
    const bytes = part10(syntheticUids(9), [el(0x00081030, 'LO', Buffer.from('odd'))]);
    expect(reasonOf(() => parsePart10(bytes))).toBe(FailureReason.CannotUnderstand);
  });
});

describe('parsePart10 prints nothing (dcmjs would print raw bytes)', () => {
  const captured: string[] = [];
  let restore: () => void;
  beforeEach(() => {
    captured.length = 0;
    const out = process.stdout.write.bind(process.stdout);
    const err = process.stderr.write.bind(process.stderr);
    const saved = { log: console.log, warn: console.warn, error: console.error, info: console.info };
    const grab = (chunk: unknown) => {
      captured.push(String(chunk));
      return true;
    };
    process.stdout.write = grab as typeof process.stdout.write;
    process.stderr.write = grab as typeof process.stderr.write;
    // jest's console does not go through process.stdout: watch it too.
    for (const k of ['log', 'warn', 'error', 'info'] as const)
      console[k] = (...a: unknown[]) => grab(a.join(' '));
    restore = () => {
      process.stdout.write = out;
      process.stderr.write = err;
      Object.assign(console, saved);
    };
  });
  afterEach(() => restore());

  it('for every malformed and fragment sample, and for objects with invalid VRs', () => {
    const files = ['malformed', 'fragments'].flatMap((d) =>
      readdirSync(join(SAMPLES, d)).map((f) => join(SAMPLES, d, f)),
    );
    for (const f of files) reasonOf(() => parsePart10(readFileSync(f)));
    // An invalid VR makes dcmjs log "Invalid vr type" with the bytes it found.
    const ct = Buffer.from(readFileSync(join(SAMPLES, 'ct/CT_small.dcm')));
    const at = ct.indexOf(Buffer.from([0x08, 0x00, 0x20, 0x00, 0x44, 0x41]));
    ct.write('ZZ', at + 4, 'latin1');
    reasonOf(() => parsePart10(ct));
    reasonOf(() => parsePart10(part10(syntheticUids(10), [el(0x00091010, 'UN', text('private'))])));
    restore();
    expect(captured).toEqual([]);
  });
});
