import { absoluteBulkDataUris, boundedFrameList, parseRange } from './wado-rs';

describe('WADO-RS helpers', () => {
  it('turns the index relative BulkDataURIs into absolute URLs, keys only', () => {
    const json =
      '{"00091001": {"vr": "LO", "Value": ["\\"BulkDataURI\\": \\"x"]}, "7FE00010": {"vr": "OW", "BulkDataURI": "7FE00010"}}';
    const out = JSON.parse(
      absoluteBulkDataUris(json, 'https://gw/dicom-web/studies/1/series/2/instances/3/bulk/'),
    );
    expect(out['7FE00010'].BulkDataURI).toBe(
      'https://gw/dicom-web/studies/1/series/2/instances/3/bulk/7FE00010',
    );
    expect(out['00091001'].Value).toEqual(['"BulkDataURI": "x']);
  });

  it('reads single byte ranges and ignores what it cannot serve', () => {
    expect(parseRange('bytes=0-99')).toEqual({ start: 0, end: 99 });
    expect(parseRange('bytes=100-')).toEqual({ start: 100, end: undefined });
    expect(parseRange('bytes=-10')).toEqual({ suffix: 10 });
    for (const h of ['', 'bytes=5-1', 'bytes=0-1,5-6', 'items=0-1', 'bytes=-'])
      expect(parseRange(h)).toBeUndefined();
  });
});

describe('frame lists', () => {
  it('answers each frame once, in the order first asked', () => {
    expect(boundedFrameList('3,1,3,2,1', 10)).toEqual([3, 1, 2]);
    expect(boundedFrameList(Array(10).fill('7').join(','), 10)).toEqual([7]);
  });

  it('refuses lists longer than the limit before deduplicating, and malformed ones', () => {
    expect(() => boundedFrameList(Array(5000).fill('1').join(','), 1000)).toThrow(
      /at most 1000 frame numbers/,
    );
    expect(() => boundedFrameList('0', 10)).toThrow(/malformed/);
    expect(() => boundedFrameList('1,,2', 10)).toThrow(/malformed/);
    expect(() => boundedFrameList('', 10)).toThrow(/malformed/);
  });
});
