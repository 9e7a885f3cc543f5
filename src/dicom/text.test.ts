import { foldName, normaliseDate, normaliseTime } from './text';

describe('DICOM text normalisation', () => {
  it('pads times of every precision to HHMMSS.FFFFFF', () => {
    expect(normaliseTime('07')).toBe('070000.000000');
    expect(normaliseTime('0730')).toBe('073000.000000');
    expect(normaliseTime('073015.5')).toBe('073015.500000');
    expect(normaliseTime('07:30:15')).toBe('073015.000000');
    expect(normaliseTime('7h')).toBeUndefined();
  });
  it('accepts YYYYMMDD and the retired YYYY.MM.DD dates', () => {
    expect(normaliseDate('20240131')).toBe('20240131');
    expect(normaliseDate('2024.01.31')).toBe('20240131');
    expect(normaliseDate('2024')).toBeUndefined();
  });
  it('folds accents and case in person names', () => {
    expect(foldName('Müller^Jürgen')).toBe('MULLER^JURGEN');
    expect(foldName('Buc^Jérôme')).toBe('BUC^JEROME');
  });
});
