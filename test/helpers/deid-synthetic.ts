/**
 * Synthetic objects for the de-identifier's tests: one element per row of Table E.1-1 with a value of its VR,
 * written with the de-identifier's own writer (it is itself checked by dcmdump/dciodvfy in test/deid-samples).
 */
import { type Dataset, type Element, dictionaryVr, writePart10 } from '../../src/dicom/deid/codec';
import { type ProfileRow, rowTag } from '../../src/dicom/deid/profile';

export const SOP_CLASS_CT = '1.2.840.10008.5.1.4.1.1.2';

/** A string value of even length, padded as its VR wants. */
export function str(s: string, vr = 'LO'): Buffer {
  const b = Buffer.from(s, 'latin1');
  return b.length & 1 ? Buffer.concat([b, Buffer.from([vr === 'UI' ? 0 : 0x20])]) : b;
}

export function el(tag: number, vr: string, value: string | Buffer): Element {
  return { tag, vr, value: typeof value === 'string' ? str(value, vr) : value };
}

export function sq(tag: number, items: Dataset[]): Element {
  return { tag, vr: 'SQ', items };
}

/** The tag a row is tested on: its own, the first group of a repeating one, a private element for the private row. */
export function testTag(row: ProfileRow): number {
  if (/GGGG IS ODD/i.test(row.tag)) return 0x00091001;
  const t = rowTag(row);
  if (t === undefined) throw new Error(`row without a tag: ${row.tag}`);
  if (row.tag === '(50XX,XXXX)') return 0x50003000;
  return t;
}

/** The VR written for a row's synthetic element. */
export function testVr(tag: number): string {
  if (tag === 0x00091001) return 'LO';
  const vr = dictionaryVr(tag);
  switch (vr) {
    case undefined:
    case 'na':
      return 'LO';
    case 'xs':
      return 'US';
    case 'ox':
    case 'lt':
      return 'OW';
    case 'up':
      return 'UL';
    default:
      return vr;
  }
}

/** A value of the VR, unique to the row (n) where the VR allows text. */
export function testValue(vr: string, n: number): Buffer | Dataset[] {
  switch (vr) {
    case 'SQ':
      return [[el(0x00080100, 'SH', `SYNC${n}`), el(0x00080102, 'SH', 'DCM')]];
    case 'DA':
      return str('20010203', vr);
    case 'DT':
      return str('20010203040506', vr);
    case 'TM':
      return str('040506', vr);
    case 'DS':
      return str('1.5', vr);
    case 'IS':
      return str(String(n), vr);
    case 'AS':
      return str('045Y', vr);
    case 'CS':
      return str(`SYNCS${n}`, vr);
    case 'AE':
      return str(`SYNAE${n}`, vr);
    case 'UI':
      return str(`1.2.826.0.1.3680043.10.543.${n}`, vr);
    case 'UR':
      return str(`http://example.org/${n}`, vr);
    case 'PN':
      return str(`Synthfamily${n}^Synthgiven${n}`, vr);
    case 'LO':
    case 'SH':
    case 'ST':
    case 'LT':
    case 'UT':
    case 'UC':
      return str(`SYN${n}`, vr);
    case 'US':
    case 'SS':
      return Buffer.from([7, 0]);
    case 'UL':
    case 'SL':
    case 'FL':
    case 'AT':
      return Buffer.from([7, 0, 0, 0]);
    case 'FD':
    case 'SV':
    case 'UV':
      return Buffer.from([7, 0, 0, 0, 0, 0, 0, 0]);
    default:
      return Buffer.from([1, 2, 3, 4]);
  }
}

export function rowElement(row: ProfileRow, n: number): Element {
  const tag = testTag(row);
  const vr = testVr(tag);
  const v = testValue(vr, n);
  return Array.isArray(v) ? sq(tag, v) : { tag, vr, value: v };
}

/** A Part-10 object from a data set (sorted here), with a minimal File Meta. */
export function part10(ds: Dataset, sopInstanceUid = '1.2.826.0.1.3680043.10.543.999999'): Buffer {
  const meta: Dataset = [
    el(0x00020001, 'OB', Buffer.from([0, 1])),
    el(0x00020002, 'UI', SOP_CLASS_CT),
    el(0x00020003, 'UI', sopInstanceUid),
    el(0x00020010, 'UI', '1.2.840.10008.1.2.1'),
    el(0x00020012, 'UI', '1.2.826.0.1.3680043.10.543'),
  ];
  return writePart10(meta, sortDeep(ds));
}

export function sortDeep(ds: Dataset): Dataset {
  return [...ds]
    .sort((a, b) => a.tag - b.tag)
    .map((e) => (e.items ? { ...e, items: e.items.map(sortDeep) } : e));
}

/** Identifying UIDs every test object needs (the de-identifier withholds objects without them). */
export function requiredUids(): Element[] {
  return [
    el(0x00080016, 'UI', SOP_CLASS_CT),
    el(0x00080018, 'UI', '1.2.826.0.1.3680043.10.543.999999'),
    el(0x0020000d, 'UI', '1.2.826.0.1.3680043.10.543.999998'),
    el(0x0020000e, 'UI', '1.2.826.0.1.3680043.10.543.999997'),
  ];
}
