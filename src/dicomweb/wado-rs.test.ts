import { boundedFrameList, parseRange } from './wado-rs';

describe('WADO-RS helpers', () => {
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
