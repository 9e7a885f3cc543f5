import { parseRange } from './cohorts';

describe('Range header of the cohort archive', () => {
  it.each<[string, number, ReturnType<typeof parseRange>]>([
    ['bytes=0-99', 1000, [0, 99]],
    ['bytes=500-', 1000, [500, 999]],
    ['bytes=-100', 1000, [900, 999]],
    ['bytes=900-5000', 1000, [900, 999]],
    ['bytes=1000-', 1000, 'unsatisfiable'],
    ['bytes=-0', 1000, 'unsatisfiable'],
    ['bytes=5-2', 1000, undefined],
    ['bytes=0-1,5-6', 1000, undefined],
    ['items=0-1', 1000, undefined],
    ['', 1000, undefined],
  ])('%j of %d bytes → %j', (header, size, expected) => {
    expect(parseRange(header, size)).toEqual(expected);
  });
});
