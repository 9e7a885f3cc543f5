import { readFileSync } from 'node:fs';
import { Readable } from 'node:stream';
import { dataSetMd5, digestArchived, locateDataSet } from './identity';

const SAMPLES = process.env.APERTURE_SAMPLES_DIR ?? `${__dirname}/../../../shared/dicom-samples`;

describe('data-set identity', () => {
  const ct = readFileSync(`${SAMPLES}/ct/CT_small.dcm`);

  it('finds the data set after the File Meta group and names its transfer syntax', () => {
    const at = locateDataSet(ct);
    expect(at).toMatchObject({ transferSyntaxUid: '1.2.840.10008.1.2.1' });
    if (typeof at === 'string') throw new Error('not located');
    expect(ct.readUInt16LE(at.offset)).not.toBe(0x0002);
  });

  it('gives the same hash to one data set in two File Meta wrappings, and another to a changed data set', () => {
    // Another Implementation Version Name of the same length, as another writer (DCMTK) would put there.
    const wrapped = Buffer.from(ct);
    const at = wrapped.indexOf(Buffer.from('DCTOOL100', 'latin1'));
    expect(at).toBeGreaterThan(132);
    wrapped.write('OFFIS_DCM', at, 'latin1');
    expect(wrapped.equals(ct)).toBe(false);
    expect(dataSetMd5(wrapped)).toBe(dataSetMd5(ct));
    const changed = Buffer.from(ct);
    // One pixel byte (the file ends in Data Set Trailing Padding, which carries no content and does not count).
    changed[changed.indexOf(Buffer.from([0xe0, 0x7f, 0x10, 0x00])) + 20] ^= 0xff;
    expect(dataSetMd5(changed)).not.toBe(dataSetMd5(ct));
  });

  it('tells the same attributes in another transfer syntax apart', () => {
    const a = readFileSync(`${SAMPLES}/mr/MR_small.dcm`);
    const b = readFileSync(`${SAMPLES}/mr/MR_small_implicit.dcm`);
    expect(dataSetMd5(a)).not.toBe(dataSetMd5(b));
  });

  it('hashes content, not layout: sequence length encoding, group lengths and trailing padding do not count', () => {
    const at = locateDataSet(ct);
    if (typeof at === 'string') throw new Error('not located');
    const head = ct.subarray(0, at.offset);
    const el = (g: number, e: number, vr: string, value: Buffer) => {
      const b = Buffer.alloc(8);
      b.writeUInt16LE(g, 0);
      b.writeUInt16LE(e, 2);
      b.write(vr, 4, 'latin1');
      b.writeUInt16LE(value.length, 6);
      return Buffer.concat([b, value]);
    };
    const tag = (g: number, e: number, len: number) => {
      const b = Buffer.alloc(8);
      b.writeUInt16LE(g, 0);
      b.writeUInt16LE(e, 2);
      b.writeUInt32LE(len >>> 0, 4);
      return b;
    };
    const sq = (len: number) => {
      const b = Buffer.alloc(12);
      b.writeUInt16LE(0x0008, 0);
      b.writeUInt16LE(0x1115, 2);
      b.write('SQ', 4, 'latin1');
      b.writeUInt32LE(len >>> 0, 8);
      return b;
    };
    const inner = el(0x0008, 0x1150, 'UI', Buffer.from('1.2\0', 'latin1'));
    const uid = el(0x0008, 0x0018, 'UI', Buffer.from('1.2.3.4\0', 'latin1'));
    const undefinedLengths = Buffer.concat([
      head,
      uid,
      sq(0xffffffff),
      tag(0xfffe, 0xe000, 0xffffffff),
      inner,
      tag(0xfffe, 0xe00d, 0),
      tag(0xfffe, 0xe0dd, 0),
    ]);
    const groupLength = el(0x0008, 0x0000, 'UL', Buffer.from([1, 2, 3, 4]));
    const padding = Buffer.concat([
      Buffer.from([0xfc, 0xff, 0xfc, 0xff, 0x4f, 0x42, 0, 0, 4, 0, 0, 0]),
      Buffer.alloc(4),
    ]);
    const explicitLengths = Buffer.concat([
      head,
      groupLength,
      uid,
      sq(8 + inner.length),
      tag(0xfffe, 0xe000, inner.length),
      inner,
      padding,
    ]);
    expect(dataSetMd5(undefinedLengths)).toBeDefined();
    expect(dataSetMd5(explicitLengths)).toBe(dataSetMd5(undefinedLengths));
    const otherValue = Buffer.from(explicitLengths);
    otherValue[otherValue.indexOf(Buffer.from('1.2\0', 'latin1'), head.length + 20) + 2] = 0x33;
    expect(dataSetMd5(otherValue)).not.toBe(dataSetMd5(undefinedLengths));
  });

  it('digests an archived file read back within a bound, and refuses what is not Part 10', async () => {
    const chunks: Buffer[] = [];
    for (let i = 0; i < ct.length; i += 7) chunks.push(ct.subarray(i, i + 7));
    const d = await digestArchived(Readable.from(chunks), ct.length);
    expect(d).toMatchObject({ datasetMd5: dataSetMd5(ct), size: ct.length });
    expect(await digestArchived(Readable.from(chunks), ct.length - 1)).toBe('too-large');
    const notPart10 = await digestArchived(Readable.from([Buffer.alloc(300)]), 1000);
    expect(notPart10).not.toBe('too-large');
    if (notPart10 !== 'too-large') expect(notPart10.datasetMd5).toBeUndefined();
    expect(dataSetMd5(Buffer.alloc(100))).toBeUndefined();
  });
});
