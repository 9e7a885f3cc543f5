import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import dcmjs from 'dcmjs';
import { el, part10, requiredUids, sq, str } from '../../../test/helpers/deid-synthetic';
import { isValidUid } from '../structure';
import { type Dataset, type Element, findElement, rawString, readPart10 } from './codec';
import { deidentify, mapUid, shiftDa, shiftDt, type DeidResult } from './deidentify';
import { leakCheck } from './identifying';
import { BASIC_PROFILE, type DeidOptions, TABLE_E1_1, profileDescription } from './profile';
import { testTag, testVr } from '../../../test/helpers/deid-synthetic';

const SAMPLES = '/work/shared/dicom-samples';
const keys = {
  uidSecret: Buffer.from('unit-secret-1'),
  patientName: 'SUBJECT^0001',
  patientId: 'SUBJ0001',
  dateOffsetDays: -100,
};

function ok(r: ReturnType<typeof deidentify>): DeidResult {
  if ('withheld' in r) throw new Error(`withheld: ${r.withheld}`);
  return r;
}

/** Implicit VR Little Endian bytes of one item holding one element: a UN-encoded sequence's value. */
function implicitItem(tag: number, value: Buffer): Buffer {
  const elHdr = Buffer.alloc(8);
  elHdr.writeUInt16LE(tag >>> 16, 0);
  elHdr.writeUInt16LE(tag & 0xffff, 2);
  elHdr.writeUInt32LE(value.length, 4);
  const item = Buffer.alloc(8);
  item.writeUInt32LE(0xe000fffe, 0);
  item.writeUInt32LE(8 + value.length, 4);
  return Buffer.concat([item, elHdr, value]);
}

const TEXT_VRS = new Set(['LO', 'SH', 'ST', 'LT', 'UT', 'UC', 'PN', 'AE']);

/** Every text-bearing place a marker can hide: table rows, private tags (plain, SQ, UN), SR content, overlays, graphics. */
function plantEverywhere(marker: string, textFor: (vr: string) => string = () => marker): Dataset {
  const rows: Element[] = [];
  for (const row of TABLE_E1_1) {
    const tag = testTag(row);
    const vr = testVr(tag);
    if (!TEXT_VRS.has(vr) || tag >>> 16 === 0x0002 || tag === 0x00091001) continue;
    rows.push(el(tag, vr, textFor(vr)));
  }
  const srText = (v: string): Dataset => [
    el(0x0040a010, 'CS', 'CONTAINS'),
    el(0x0040a040, 'CS', 'TEXT'),
    sq(0x0040a043, [
      [el(0x00080100, 'SH', '121071'), el(0x00080102, 'SH', 'DCM'), el(0x00080104, 'LO', 'Finding')],
    ]),
    el(0x0040a160, 'UT', v),
  ];
  return [
    ...requiredUids(),
    ...rows.filter((e) => ![0x00080018, 0x0020000d, 0x0020000e].includes(e.tag)),
    el(0x00080070, 'LO', 'ACME'),
    // Private: a plain text, a private sequence, and a UN-encoded private sequence (Implicit VR LE inside).
    el(0x00090010, 'LO', 'CANARY CO'),
    el(0x00091001, 'LO', textFor('LO')),
    sq(0x00091002, [[el(0x00100010, 'PN', textFor('PN')), el(0x00091003, 'LO', textFor('LO'))]]),
    { tag: 0x00091004, vr: 'UN', value: implicitItem(0x00081030, str(textFor('LO'))) },
    // A public attribute written by a system that did not know it: UN, explicit VR.
    { tag: 0x00101000, vr: 'UN', value: str(textFor('LO')) },
    // SR content tree, three levels deep, with a person name item.
    sq(0x0040a730, [
      srText(textFor('UT')),
      [
        el(0x0040a010, 'CS', 'CONTAINS'),
        el(0x0040a040, 'CS', 'CONTAINER'),
        sq(0x0040a730, [
          srText(textFor('UT')),
          [el(0x0040a040, 'CS', 'PNAME'), el(0x0040a123, 'PN', textFor('PN'))],
        ]),
      ],
    ]),
    // Overlay plane and its descriptions.
    el(0x60000010, 'US', Buffer.from([8, 0])),
    el(0x60000011, 'US', Buffer.from([8, 0])),
    el(0x60000022, 'LO', textFor('LO')),
    el(0x60001500, 'LO', textFor('LO')),
    el(0x60004000, 'LT', textFor('LT')),
    el(0x60003000, 'OW', Buffer.alloc(8)),
    // Presentation graphics with free text.
    sq(0x00700001, [
      [el(0x00700002, 'CS', 'LAYER1'), sq(0x00700008, [[el(0x00700006, 'ST', textFor('ST'))]])],
    ]),
  ];
}

describe('deidentify: canaries', () => {
  it('leaves no trace of a marker planted in every text-bearing attribute (Basic Profile)', () => {
    const marker = 'QZXCANARYQZX';
    const source = part10(plantEverywhere(marker));
    expect(source.includes(marker)).toBe(true);
    const r = ok(deidentify(source, BASIC_PROFILE, keys));
    expect(r.bytes.includes(Buffer.from(marker, 'latin1'))).toBe(false);
    expect(r.bytes.toString('latin1').toUpperCase()).not.toContain(marker);
    // Still a readable object for a general-purpose parser.
    const parsed = dcmjs.data.DicomMessage.readFile(
      r.bytes.buffer.slice(r.bytes.byteOffset, r.bytes.byteOffset + r.bytes.length) as ArrayBuffer,
    );
    expect(parsed.dict['00120062'].Value).toEqual(['YES']);
    // Attributes the standard keeps are kept.
    expect(rawString(findElement(readPart10(r.bytes).dataset, 0x00080070)!)).toBe('ACME');
  });

  it('cleans the patient’s name out of descriptors, SR text and graphics under the Clean options, in any order and case', () => {
    const name = 'Quokkafam^Wombatgiven';
    const forms = ['WOMBATGIVEN QUOKKAFAM', 'quokkafam, wombatgiven', 'Quokkafam^Wombatgiven'];
    let i = 0;
    const ds = plantEverywhere('x', (vr) =>
      vr === 'PN' ? name : `CT chest ${forms[i % forms.length]} follow-up ${i++}`,
    );
    const patient = findElement(ds, 0x00100010)!;
    patient.value = str(name, 'PN');
    const options: DeidOptions = {
      ...BASIC_PROFILE,
      cleanDescriptors: true,
      cleanStructuredContent: true,
      cleanGraphics: true,
    };
    const r = ok(deidentify(part10(ds), options, keys));
    const text = r.bytes.toString('latin1').toUpperCase();
    expect(text).not.toContain('QUOKKAFAM');
    expect(text).not.toContain('WOMBATGIVEN');
    // Cleaning keeps the rest of a descriptor.
    expect(rawString(findElement(readPart10(r.bytes).dataset, 0x00081030)!)).toMatch(
      /^CT chest \* follow-up \d+$/,
    );
    expect(leakCheck(r.bytes, r.identifying).hits).toEqual([]);
  });
});

describe('deidentify: keys, UIDs and dates', () => {
  const ct = readFileSync(join(SAMPLES, 'ct/CT_small.dcm'));

  it('is deterministic: the same input, options and keys give identical bytes', () => {
    const a = ok(deidentify(ct, BASIC_PROFILE, keys));
    const b = ok(deidentify(Buffer.from(ct), BASIC_PROFILE, keys));
    expect(a.bytes.equals(b.bytes)).toBe(true);
    expect(a.uidMap).toEqual(b.uidMap);
  });

  it('shares no UID between two research projects’ secrets', () => {
    const a = ok(deidentify(ct, BASIC_PROFILE, keys));
    const b = ok(deidentify(ct, BASIC_PROFILE, { ...keys, uidSecret: Buffer.from('unit-secret-2') }));
    const uids = (bytes: Buffer) => {
      const out = new Set<string>();
      const walk = (ds: Dataset) => {
        for (const e of ds) {
          if (e.items) e.items.forEach(walk);
          else if (e.vr === 'UI')
            for (const u of rawString(e).split('\\')) if (!u.startsWith('1.2.840.10008.')) out.add(u);
        }
      };
      const p = readPart10(bytes);
      walk(p.meta);
      walk(p.dataset);
      return out;
    };
    const ua = uids(a.bytes);
    const ub = uids(b.bytes);
    expect(ua.size).toBeGreaterThan(3);
    for (const u of ua)
      if (u !== '2.25.167494215930116620349587216593713640173') expect(ub.has(u)).toBe(false);
    expect(a.outputUids.study).not.toBe(b.outputUids.study);
    // File Meta names the new SOP Instance UID.
    expect(rawString(findElement(readPart10(a.bytes).meta, 0x00020003)!)).toBe(a.outputUids.sop);
    expect(a.sourceUids.sop).toBe('1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322');
  });

  it('maps UIDs with HMAC-SHA256 to valid 2.25 UIDs of at most 64 characters', () => {
    const u = mapUid('1.2.3.4', Buffer.from('s'));
    expect(u).toMatch(/^2\.25\.[1-9][0-9]*$/);
    expect(u.length).toBeLessThanOrEqual(64);
    expect(isValidUid(u)).toBe(true);
    expect(mapUid('1.2.3.4', Buffer.from('s'))).toBe(u);
    expect(mapUid('1.2.3.4', Buffer.from('t'))).not.toBe(u);
    expect(mapUid('1.2.3.5', Buffer.from('s'))).not.toBe(u);
  });

  it('shifts DA and DT by whole days, partial DT values at their precision, and keeps times of day', () => {
    expect(shiftDa('20040229', 1)).toBe('20040301');
    expect(shiftDa('20050101', -1)).toBe('20041231');
    expect(shiftDa('2001.02.03', 40)).toBe('20010315');
    expect(shiftDt('20010203040506.123456+0100', 40)).toBe('20010315040506.123456+0100');
    expect(shiftDt('200102', 40)).toBe('200103');
    expect(shiftDt('2001', -40)).toBe('2000');
    expect(shiftDt('2001020304', 1)).toBe('2001020404');
    const ds: Dataset = [
      ...requiredUids(),
      el(0x00080020, 'DA', '20010203'),
      el(0x00080030, 'TM', '101112'),
      el(0x0008002a, 'DT', '20010203101112'),
    ];
    const r = ok(deidentify(part10(ds), { ...BASIC_PROFILE, retainLongitudinalModifiedDates: true }, keys));
    const out = readPart10(r.bytes).dataset;
    expect(rawString(findElement(out, 0x00080020)!)).toBe('20001026');
    expect(rawString(findElement(out, 0x00080030)!)).toBe('101112');
    expect(rawString(findElement(out, 0x0008002a)!)).toBe('20001026101112');
    expect(rawString(findElement(out, 0x00280303)!)).toBe('MODIFIED');
    expect(leakCheck(r.bytes, r.identifying).hits).toEqual([]);
    expect(() => deidentify(part10(ds), BASIC_PROFILE, { ...keys, dateOffsetDays: 1.5 })).toThrow(RangeError);
  });

  it('records Patient Identity Removed, the method, CID 7050 codes of the options used and the temporal status', () => {
    const options = { ...BASIC_PROFILE, retainUIDs: true, cleanDescriptors: true };
    const r = ok(deidentify(ct, options, keys));
    const out = readPart10(r.bytes).dataset;
    expect(rawString(findElement(out, 0x00120062)!)).toBe('YES');
    expect(rawString(findElement(out, 0x00120063)!)).toMatch(/^Aperture/);
    const codes = findElement(out, 0x00120064)!.items!.map((it) => rawString(findElement(it, 0x00080100)!));
    expect(codes).toEqual(['113100', '113110', '113105']);
    expect(rawString(findElement(out, 0x00280303)!)).toBe('REMOVED');
    expect(r.outputUids).toEqual(r.sourceUids);
    expect(profileDescription(options).options).toEqual(['Retain UIDs Option', 'Clean Descriptors Option']);
  });
});

describe('deidentify: burned-in annotation and unreadable input', () => {
  const base = (extra: Element[]): Buffer =>
    part10([...requiredUids(), ...extra, el(0x7fe00010, 'OW', Buffer.alloc(16))]);

  it('withholds objects flagged YES and kinds known to carry burned-in text unless flagged NO', () => {
    expect(deidentify(base([el(0x00280301, 'CS', 'YES')]), BASIC_PROFILE, keys)).toEqual({
      withheld: 'burned-in-annotation',
    });
    expect(deidentify(base([el(0x00080060, 'CS', 'US')]), BASIC_PROFILE, keys)).toEqual({
      withheld: 'burned-in-annotation-likely',
    });
    const flaggedNo = deidentify(
      base([el(0x00080060, 'CS', 'US'), el(0x00280301, 'CS', 'NO')]),
      BASIC_PROFILE,
      keys,
    );
    expect('bytes' in flaggedNo).toBe(true);
    expect('bytes' in deidentify(base([el(0x00080060, 'CS', 'CT')]), BASIC_PROFILE, keys)).toBe(true);
  });

  it('withholds what it cannot read instead of throwing', () => {
    expect(deidentify(Buffer.from('not dicom'), BASIC_PROFILE, keys)).toEqual({ withheld: 'unreadable' });
    const truncated = readFileSync(join(SAMPLES, 'malformed/MR_truncated.dcm'));
    expect(deidentify(truncated, BASIC_PROFILE, keys)).toEqual({ withheld: 'unreadable' });
  });
});

describe('leakCheck', () => {
  it('finds a name in another component order and case, and a date in a text form, where the profile kept them', () => {
    const ds: Dataset = [
      ...requiredUids(),
      el(0x00100010, 'PN', 'Doe^John'),
      el(0x00100030, 'DA', '19700203'),
      el(0x00080070, 'LO', 'made for john DOE'),
      el(0x00081090, 'LO', 'born 03/02/1970'),
    ];
    const r = ok(deidentify(part10(ds), BASIC_PROFILE, keys));
    const hits = leakCheck(r.bytes, r.identifying).hits;
    expect(hits).toEqual(
      expect.arrayContaining([
        { tagPath: '(0008,0070)', kind: 'name' },
        { tagPath: '(0008,1090)', kind: 'date' },
      ]),
    );
    expect(JSON.stringify(hits)).not.toMatch(/john|doe|1970/i);
  });

  it('decodes the object’s character set: a Latin-1 name is found in a kept attribute and cleaned from descriptors', () => {
    const latin1 = (s: string) => {
      const b = Buffer.from(s, 'latin1');
      return b.length & 1 ? Buffer.concat([b, Buffer.from(' ')]) : b;
    };
    const ds: Dataset = [
      el(0x00080005, 'CS', 'ISO_IR 100'),
      ...requiredUids(),
      el(0x00100010, 'PN', latin1('Müller^Jürgen')),
      el(0x00081030, 'LO', latin1('IRM cérébrale Jürgen Müller')),
      el(0x00080070, 'LO', latin1('JÜRGEN MÜLLER')),
    ];
    const r = ok(deidentify(part10(ds), { ...BASIC_PROFILE, cleanDescriptors: true }, keys));
    const out = readPart10(r.bytes).dataset;
    expect(findElement(out, 0x00081030)!.value!.toString('latin1').trim()).toBe('IRM cérébrale *');
    expect(leakCheck(r.bytes, r.identifying).hits).toEqual([{ tagPath: '(0008,0070)', kind: 'name' }]);
  });
});
