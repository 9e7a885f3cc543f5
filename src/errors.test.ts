import { loggablePath, warning299 } from './errors';

describe('errors and logs', () => {
  it('keeps share tokens out of logged paths', () => {
    expect(loggablePath('/share/apsh_secret123/dicom-web/studies')).toBe('/share/-/dicom-web/studies');
    expect(loggablePath('/projects/demo/dicom-web/studies')).toBe('/projects/demo/dicom-web/studies');
  });
  it('quotes Warning: 299 texts safely', () => {
    expect(warning299('bad "limit" value')).toBe(`299 aperture "bad 'limit' value"`);
  });
});
