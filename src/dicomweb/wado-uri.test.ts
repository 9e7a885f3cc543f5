import { selectUriMediaType } from './wado-uri';

const IMAGE = ['image/jpeg', 'image/png', 'image/gif', 'application/dicom'] as const;
const OBJECT = ['application/dicom'] as const;

describe('selectUriMediaType (PS3.18 §9.3 contentType / Accept)', () => {
  it('takes the default of the object when nothing or only a wildcard is asked', () => {
    expect(selectUriMediaType(undefined, IMAGE, 'image/jpeg')).toBe('image/jpeg');
    expect(selectUriMediaType('*/*', IMAGE, 'image/jpeg')).toBe('image/jpeg');
    expect(selectUriMediaType('*/*', OBJECT, 'application/dicom')).toBe('application/dicom');
    expect(selectUriMediaType('image/*', IMAGE, 'image/jpeg')).toBe('image/jpeg');
    expect(selectUriMediaType('application/*', IMAGE, 'image/jpeg')).toBe('application/dicom');
  });

  it('orders by q-value, ties to the earlier range, and skips q=0 and what is not available', () => {
    expect(selectUriMediaType('image/jpeg;q=0.5,image/png', IMAGE, 'image/jpeg')).toBe('image/png');
    expect(selectUriMediaType('image/gif,image/png', IMAGE, 'image/jpeg')).toBe('image/gif');
    expect(selectUriMediaType('image/png;q=0,application/dicom;q=0.1', IMAGE, 'image/jpeg')).toBe(
      'application/dicom',
    );
    expect(selectUriMediaType('text/html,image/jpeg;q=0.2', IMAGE, 'image/jpeg')).toBe('image/jpeg');
    expect(selectUriMediaType('IMAGE/PNG', IMAGE, 'image/jpeg')).toBe('image/png');
  });

  it('finds nothing for an image asked of an object that has none', () => {
    expect(selectUriMediaType('image/jpeg', OBJECT, 'application/dicom')).toBeUndefined();
    expect(selectUriMediaType('image/*,text/html', OBJECT, 'application/dicom')).toBeUndefined();
    expect(selectUriMediaType('image/jpeg;q=0', IMAGE, 'image/jpeg')).toBeUndefined();
  });
});
