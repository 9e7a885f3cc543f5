import { el, part10, requiredUids, sq } from '../../../test/helpers/deid-synthetic';
import { type Dataset, type Element, findElement, rawString, readPart10 } from './codec';
import { deidentify, type DeidResult } from './deidentify';
import { leakCheck } from './identifying';
import {
  BASIC_PROFILE,
  type DeidOptions,
  OPTION_NAMES,
  TABLE_E3_4_1,
  actionFor,
  contentItemRow,
} from './profile';

const keys = {
  uidSecret: Buffer.from('sr-secret'),
  patientName: 'SUBJ^1',
  patientId: 'SUBJ1',
  dateOffsetDays: -30,
};
const PATIENT = 'Quokkafam^Wombatgiven';

/** One SR content item: relationship, value type, concept name (code, scheme, meaning), then its value. */
function item(valueType: string, code: string, scheme: string, ...value: Element[]): Dataset {
  return [
    el(0x0040a010, 'CS', 'CONTAINS'),
    el(0x0040a040, 'CS', valueType),
    sq(0x0040a043, [[el(0x00080100, 'SH', code), el(0x00080102, 'SH', scheme), el(0x00080104, 'LO', 'x')]]),
    ...value,
  ];
}
const text = (v: string) => el(0x0040a160, 'UT', v);

function sr(): Buffer {
  return part10([
    ...requiredUids(),
    el(0x00100010, 'PN', PATIENT),
    el(0x00100020, 'LO', 'MRN-77123'),
    el(0x00080050, 'SH', 'ACC-55190'),
    el(0x00080020, 'DA', '20240315'),
    sq(0x0040a730, [
      item('TEXT', '121022', 'DCM', text('ACC-55190')), // Accession Number: X
      item('PNAME', '121008', 'DCM', el(0x0040a123, 'PN', 'Observer^Olga')), // Person Observer Name: D
      item('TEXT', '121071', 'DCM', text('nodule, seen by Dr Olga')), // Finding: X/D → D, C under Clean Desc.
      item('TEXT', '121106', 'DCM', text(`Comment on wombatgiven quokkafam: stable`)), // Comment: X, C under Clean Desc.
      item('DATE', '111060', 'DCM', el(0x0040a121, 'DA', '20240315')), // Study Date: X/D, K full, C modified
      item('UIDREF', '121012', 'DCM', el(0x0040a124, 'UI', '1.2.826.0.1.3680043.10.543.42')), // Device Observer UID
      item('TEXT', 'L-1', '99LOCAL', text(`Local note on ${PATIENT}: size 4 mm`)), // not listed: cleaned
      [
        el(0x0040a010, 'CS', 'CONTAINS'),
        el(0x0040a040, 'CS', 'CONTAINER'),
        sq(0x0040a043, [
          [el(0x00080100, 'SH', '111028'), el(0x00080102, 'SH', 'DCM'), el(0x00080104, 'LO', 'x')],
        ]),
        sq(0x0040a730, [item('TEXT', '121030', 'DCM', text('MRN-77123'))]), // Subject ID (nested): X/D → D
      ],
    ]),
  ]);
}

function ok(r: ReturnType<typeof deidentify>): DeidResult {
  if ('withheld' in r) throw new Error(r.withheld);
  return r;
}

/** Content items of the output's top Content Sequence, by concept code. */
function itemsOf(r: DeidResult): Map<string, Dataset> {
  const ds = readPart10(r.bytes).dataset;
  const items = findElement(ds, 0x0040a730)?.items ?? [];
  return new Map(
    items.map((it) => [rawString(findElement(findElement(it, 0x0040a043)!.items![0], 0x00080100)!), it]),
  );
}
const value = (it: Dataset | undefined, tag: number) => (it ? rawString(findElement(it, tag)!) : undefined);

describe('Clean Structured Content: PS3.15 Table E.3.4-1 per content item', () => {
  it('vendors all 211 rows, each resolving to one action under the Basic Profile and under every option', () => {
    expect(TABLE_E3_4_1).toHaveLength(211);
    for (const row of TABLE_E3_4_1) {
      expect(contentItemRow(row.codeValue, row.codingScheme, row.valueType)).toBe(row);
      expect(['X', 'D']).toContain(actionFor(row, BASIC_PROFILE));
      for (const n of OPTION_NAMES)
        expect(['X', 'D', 'K', 'C']).toContain(actionFor(row, { ...BASIC_PROFILE, [n]: true }));
      if (row.rtnUIDsOpt === 'K') expect(actionFor(row, { ...BASIC_PROFILE, retainUIDs: true })).toBe('K');
    }
    // Same code, another value type: another row.
    expect(contentItemRow('371524004', 'SCT', 'COMPOSITE')!.rtnUIDsOpt).toBe('K');
    expect(contentItemRow('371524004', 'SCT', 'TEXT')!.cleanDescOpt).toBe('C');
  });

  it('removes (X), dummies (D) and cleans items by concept name and value type, at every depth; leaks nothing', () => {
    const r = ok(deidentify(sr(), { ...BASIC_PROFILE, cleanStructuredContent: true }, keys));
    const items = itemsOf(r);
    expect(items.has('121022')).toBe(false); // Accession Number: X
    expect(items.has('121106')).toBe(false); // Comment: X without Clean Descriptors
    expect(value(items.get('121008'), 0x0040a123)).toBe('ANONYMIZED'); // Person Observer Name: D
    expect(value(items.get('121071'), 0x0040a160)).toBe('ANONYMIZED'); // Finding: X/D → D
    expect(value(items.get('111060'), 0x0040a121)).toBe('19000101'); // Study Date: X/D → D
    expect(value(items.get('121012'), 0x0040a124)).toMatch(/^2\.25\./); // Device Observer UID: X/D → D (mapped)
    expect(value(items.get('L-1'), 0x0040a160)).toBe('Local note on *: size 4 mm'); // unlisted: cleaned
    const nested = findElement(items.get('111028')!, 0x0040a730)!.items!;
    expect(nested.map((it) => value(it, 0x0040a160))).toEqual(['ANONYMIZED']); // Subject ID: X/D → D
    const bytes = r.bytes.toString('latin1').toUpperCase();
    for (const v of ['QUOKKAFAM', 'WOMBATGIVEN', 'OLGA', 'ACC-55190', 'MRN-77123', '20240315'])
      expect(bytes).not.toContain(v);
    expect(leakCheck(r.bytes, r.identifying).hits).toEqual([]);
  });

  it('keeps (K) and cleans (C) what the options say: Clean Descriptors, Retain UIDs, Modified Dates', () => {
    const options: DeidOptions = {
      ...BASIC_PROFILE,
      cleanStructuredContent: true,
      cleanDescriptors: true,
      retainUIDs: true,
      retainLongitudinalModifiedDates: true,
    };
    const items = itemsOf(ok(deidentify(sr(), options, keys)));
    expect(items.has('121022')).toBe(false); // Accession Number: X whatever the options
    expect(value(items.get('121106'), 0x0040a160)).toBe('Comment on *: stable'); // Comment: C
    expect(value(items.get('121071'), 0x0040a160)).toBe('nodule, seen by Dr Olga'); // Finding: C, nothing of the patient
    expect(value(items.get('111060'), 0x0040a121)).toBe('20240214'); // Study Date: C = shifted by -30 days
    expect(value(items.get('121012'), 0x0040a124)).toBe('1.2.826.0.1.3680043.10.543.42'); // Device Observer UID: K
    expect(value(items.get('121008'), 0x0040a123)).toBe('ANONYMIZED'); // Person Observer Name: D in every column
  });

  it('leaves SR content to Table E.1-1 alone without the option (Content Sequence dummied as a whole)', () => {
    const items = itemsOf(ok(deidentify(sr(), BASIC_PROFILE, keys)));
    expect(items.has('121022')).toBe(true); // not removed: the Basic Profile dummies the whole tree
    expect(value(items.get('121022'), 0x0040a160)).toBe('ANONYMIZED');
  });
});
