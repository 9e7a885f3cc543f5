import fc from 'fast-check';
import { toDicomJson } from './json';
import { jsonbSafe, stripPadding } from './text';

/** What PostgreSQL's jsonb refuses: the NUL escape, and UTF-16 surrogates that do not pair up. */
const JSONB_REFUSES = /\\u0000|[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/;

describe('DICOM JSON from dcmjs dictionaries', () => {
  it('strips trailing NUL padding like trailing spaces, in every string VR and in UIDs', () => {
    const json = toDicomJson({
      '00080070': { vr: 'LO', Value: ['Philips\0'] },
      '00080060': { vr: 'CS', Value: ['CT\0\0'] },
      '00080008': { vr: 'CS', Value: ['ORIGINAL', 'PRIMARY', 'AXIAL\0'] },
      '00080030': { vr: 'TM', Value: ['1200\0 '] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JOHN\0', Ideographic: '\0' }] },
      '00204000': { vr: 'LT', Value: ['  leading spaces kept \0'] },
      '00080018': { vr: 'UI', Value: ['1.2.3.4\0'] },
      '0020000E': { vr: 'UI', Value: ['1.2.3.5 \0'] },
      '00200013': { vr: 'IS', Value: ['7\0'] },
      '00180050': { vr: 'DS', Value: ['1.5\0'] },
    });
    expect(json).toEqual({
      '00080008': { vr: 'CS', Value: ['ORIGINAL', 'PRIMARY', 'AXIAL'] },
      '00080018': { vr: 'UI', Value: ['1.2.3.4'] },
      '00080030': { vr: 'TM', Value: ['1200'] },
      '00080060': { vr: 'CS', Value: ['CT'] },
      '00080070': { vr: 'LO', Value: ['Philips'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'DOE^JOHN' }] },
      '00180050': { vr: 'DS', Value: [1.5] },
      '0020000E': { vr: 'UI', Value: ['1.2.3.5'] },
      '00200013': { vr: 'IS', Value: [7] },
      '00204000': { vr: 'LT', Value: ['  leading spaces kept'] },
    });
  });

  it('drops embedded NULs, and a value of nothing but padding becomes empty', () => {
    const json = toDicomJson({
      '00080070': { vr: 'LO', Value: ['Phi\0lips'] },
      '00181030': { vr: 'LO', Value: ['\0\0\0\0'] },
      '00100010': { vr: 'PN', Value: ['EMB\0EDDED^NUL'] },
      '00081030': { vr: 'LO', Value: ['A\0B', '\0'] },
    });
    expect(json).toEqual({
      '00080070': { vr: 'LO', Value: ['Philips'] },
      '00081030': { vr: 'LO', Value: ['AB', null] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'EMBEDDED^NUL' }] },
      '00181030': { vr: 'LO' },
    });
  });

  it('cleans nested sequence items and tolerates values of unexpected types', () => {
    const json = toDicomJson({
      '00081032': {
        vr: 'SQ',
        Value: [{ '00080100': { vr: 'SH', Value: ['CODE\0'] } }, null as unknown as Record<string, never>],
      },
      '00091011': { vr: 'UT', Value: [12 as unknown as string] },
      '00091012': { vr: 'SV', Value: [BigInt(5) as unknown as number] },
    });
    expect(json['00081032'].Value).toEqual([{ '00080100': { vr: 'SH', Value: ['CODE'] } }, {}]);
    expect(json['00091011']).toEqual({ vr: 'UT', Value: ['12'] });
    expect(() => JSON.stringify(json)).not.toThrow();
  });

  it('never lets a value through that PostgreSQL jsonb would refuse (property)', () => {
    const vrs = ['LO', 'SH', 'CS', 'PN', 'UT', 'LT', 'ST', 'UC', 'UR', 'AE', 'UI', 'DA', 'TM', 'DT', 'AS'];
    fc.assert(
      fc.property(
        fc.constantFrom(...vrs),
        fc.array(fc.string({ unit: 'binary' }), { maxLength: 4 }),
        (vr, values) => {
          const json = toDicomJson({ '00091010': { vr, Value: values } });
          const text = JSON.stringify(json);
          expect(JSONB_REFUSES.test(text)).toBe(false);
        },
      ),
      { seed: 8, numRuns: 500 },
    );
  });
});

describe('text for PostgreSQL', () => {
  it('strips trailing NULs and spaces only', () => {
    expect(stripPadding('  a b \0 \0')).toBe('  a b');
    expect(stripPadding('\0')).toBe('');
  });
  it('removes NULs anywhere and replaces unpaired surrogates', () => {
    expect(jsonbSafe('a\0b')).toBe('ab');
    expect(jsonbSafe('x\ud800y')).toBe('x\ufffdy');
    expect(jsonbSafe('\udc00')).toBe('\ufffd');
    expect(jsonbSafe('ok \ud83d\ude00')).toBe('ok \ud83d\ude00');
  });
});
