import { Readable } from 'node:stream';
import {
  absoluteBulkDataUris,
  absoluteBulkDataUrisInText,
  FrameExtractionError,
  extractNativeFrames,
  nativeFrameBytes,
  nativeFrameSpan,
  parseBulkDataPath,
  parseFrameList,
  sliceStream,
} from './bulk';

/** One Explicit VR Little Endian element; `len` overrides the length field (0xffffffff = undefined). */
function el(group: number, element: number, vr: string, value: Uint8Array, len?: number): Buffer {
  const tag = Buffer.alloc(4);
  tag.writeUInt16LE(group, 0);
  tag.writeUInt16LE(element, 2);
  const long = ['OB', 'OW', 'SQ', 'UN', 'UT'].includes(vr);
  const head = Buffer.alloc(long ? 8 : 4);
  head.write(vr, 0, 'latin1');
  if (long) head.writeUInt32LE(len ?? value.length, 4);
  else head.writeUInt16LE(value.length, 2);
  return Buffer.concat([tag, head, value]);
}
/** An item, sequence or item delimiter (FFFE,xxxx) with a 4-byte length. */
function fffe(element: number, len: number, body: Uint8Array = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(0xfffe, 0);
  b.writeUInt16LE(element, 2);
  b.writeUInt32LE(len, 4);
  return Buffer.concat([b, body]);
}
/** An Implicit VR LE element (inside VR UN of undefined length). */
function implicit(group: number, element: number, value: Uint8Array): Buffer {
  const b = Buffer.alloc(8);
  b.writeUInt16LE(group, 0);
  b.writeUInt16LE(element, 2);
  b.writeUInt32LE(value.length, 4);
  return Buffer.concat([b, value]);
}
const U = 0xffffffff;

/** A Part-10 object in ELE with the structures a transcoded file can hold before its Pixel Data. */
function part10(frames: Buffer[]): Buffer {
  const meta = el(0x0002, 0x0010, 'UI', Buffer.from('1.2.840.10008.1.2.1\0', 'latin1'));
  const text = el(0x0040, 0xa160, 'UT', Buffer.from('text'));
  const dataset = Buffer.concat([
    el(0x0008, 0x0016, 'UI', Buffer.from('1.2.3\0', 'latin1')),
    // SQ of undefined length with an item of undefined length.
    el(0x0040, 0xa730, 'SQ', Buffer.alloc(0), U),
    fffe(0xe000, U, text),
    fffe(0xe00d, 0),
    fffe(0xe0dd, 0),
    // Icon Image Sequence: a nested Pixel Data that must not be mistaken for the image's.
    el(0x0088, 0x0200, 'SQ', Buffer.alloc(0), U),
    fffe(0xe000, U, el(0x7fe0, 0x0010, 'OB', Buffer.from([9, 9, 9, 9]))),
    fffe(0xe00d, 0),
    fffe(0xe0dd, 0),
    // UN of undefined length: its items are Implicit VR LE.
    el(0x0009, 0x1010, 'UN', Buffer.alloc(0), U),
    fffe(0xe000, U, implicit(0x0009, 0x1011, Buffer.from('abcd'))),
    fffe(0xe00d, 0),
    fffe(0xe0dd, 0),
    el(0x7fe0, 0x0010, 'OW', Buffer.concat(frames)),
  ]);
  return Buffer.concat([Buffer.alloc(128), Buffer.from('DICM'), meta, dataset]);
}

/** A stream that hands the buffer out in small pieces, so that every element straddles chunks. */
function chunked(b: Buffer, size = 3): Readable {
  const pieces: Buffer[] = [];
  for (let i = 0; i < b.length; i += size) pieces.push(b.subarray(i, i + size));
  return Readable.from(pieces);
}

async function collect<T>(it: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = [];
  for await (const x of it) out.push(x);
  return out;
}

describe('extracting native frames from a transcoded Part-10 stream', () => {
  const frames = [Buffer.alloc(6, 1), Buffer.alloc(6, 2), Buffer.alloc(6, 3), Buffer.alloc(6, 4)];

  it('finds the top-level Pixel Data past sequences, nested Pixel Data and VR UN, and returns the wanted frames', async () => {
    const got = await collect(extractNativeFrames(chunked(part10(frames)), 6, [2, 4]));
    expect(got).toEqual([
      { frame: 2, data: frames[1] },
      { frame: 4, data: frames[3] },
    ]);
  });

  it('stops reading and destroys the source once the last wanted frame is out', async () => {
    const source = chunked(part10(frames), 1024);
    await collect(extractNativeFrames(source, 6, [1]));
    expect(source.destroyed).toBe(true);
  });

  it('refuses frames beyond the Pixel Data and lists that are not ascending', async () => {
    await expect(collect(extractNativeFrames(chunked(part10(frames)), 6, [5]))).rejects.toBeInstanceOf(
      FrameExtractionError,
    );
    await expect(collect(extractNativeFrames(chunked(part10(frames)), 6, [3, 1]))).rejects.toBeInstanceOf(
      FrameExtractionError,
    );
  });
});

describe('bulk data paths, frame lists and ranges', () => {
  it('maps a relative BulkDataURI to the DICOM JSON path', () => {
    expect(parseBulkDataPath('00540016/0/00181078')).toEqual({
      relative: '00540016/0/00181078',
      jsonPath: ['00540016', 'Value', '0', '00181078'],
      isPixelData: false,
    });
    expect(parseBulkDataPath('7fe00010')).toMatchObject({ relative: '7FE00010', isPixelData: true });
  });

  it('refuses paths the gateway never writes', () => {
    for (const p of ['', '7FE0001', '00540016/0', '00540016/x/00181078', '../etc/passwd', '7FE00010/']) {
      expect(parseBulkDataPath(p)).toBeUndefined();
    }
  });

  it('parses frame lists in the order asked and refuses malformed ones', () => {
    expect(parseFrameList('1,3,5')).toEqual([1, 3, 5]);
    expect(parseFrameList('5,1')).toEqual([5, 1]);
    for (const s of ['', '0', '1,,2', '-1', '1;2', 'a', '1,2,']) expect(parseFrameList(s)).toBeUndefined();
  });

  it('computes native frame sizes, refusing bit-packed frames that do not end on a byte', () => {
    const g = (rows: number, columns: number, samplesPerPixel: number, bitsAllocated: number) => ({
      rows,
      columns,
      samplesPerPixel,
      bitsAllocated,
    });
    expect(nativeFrameBytes(g(240, 320, 3, 8))).toBe(230400);
    expect(nativeFrameBytes(g(256, 256, 1, 1))).toBe(8192);
    expect(nativeFrameBytes(g(3, 3, 1, 1))).toBeUndefined();
    expect(nativeFrameSpan(g(3, 3, 1, 1))).toBe(2);
    expect(nativeFrameSpan(g(240, 320, 3, 8))).toBe(230400);
  });

  it('slices a byte range out of a stream and stops reading after it', async () => {
    const source = chunked(Buffer.from('0123456789abcdef'), 4);
    const got = Buffer.concat(await collect(sliceStream(source, 3, 9)));
    expect(got.toString()).toBe('3456789');
    expect(source.destroyed).toBe(true);
  });

  it('turns the index relative BulkDataURIs into absolute URLs, keys only', () => {
    const json =
      '{"00091001": {"vr": "LO", "Value": ["\\"BulkDataURI\\": \\"x"]}, "7FE00010": {"vr": "OW", "BulkDataURI": "7FE00010"}}';
    const out = JSON.parse(
      absoluteBulkDataUrisInText(json, 'https://gw/dicom-web/studies/1/series/2/instances/3/bulk/'),
    );
    expect(out['7FE00010'].BulkDataURI).toBe(
      'https://gw/dicom-web/studies/1/series/2/instances/3/bulk/7FE00010',
    );
    expect(out['00091001'].Value).toEqual(['"BulkDataURI": "x']);
  });

  it('makes BulkDataURIs absolute in a parsed data set as in the index text, nested items included', () => {
    const prefix = 'https://gw/dicom-web/studies/1/series/2/instances/3/bulk/';
    const json =
      '{"7FE00010": {"vr": "OW", "BulkDataURI": "7FE00010"}, "00400275": {"vr": "SQ", "Value": [{"00420011": {"vr": "OB", "BulkDataURI": "00400275/0/00420011"}}]}}';
    const ds = JSON.parse(json);
    const item = ds['00400275'].Value[0];
    absoluteBulkDataUris(ds, prefix);
    expect(ds).toEqual(JSON.parse(absoluteBulkDataUrisInText(json, prefix)));
    expect(ds['00400275'].Value[0]['00420011'].BulkDataURI).toBe(`${prefix}00400275/0/00420011`);
    expect(item['00420011'].BulkDataURI).toBe('00400275/0/00420011');
    const absolute = { '7FE00010': { vr: 'OW', BulkDataURI: 'https://elsewhere/x' } };
    absoluteBulkDataUris(absolute, prefix);
    expect(absolute['7FE00010'].BulkDataURI).toBe('https://elsewhere/x');
  });
});
