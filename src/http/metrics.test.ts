import { upstreamPathTemplate } from './metrics';

describe('upstreamPathTemplate (labels of the archive latency histogram)', () => {
  it('replaces Orthanc ids, numbers and UIDs, and drops the query string', () => {
    expect(upstreamPathTemplate('/instances/6e2c0ec2-5d99b2c4-4a2a4f4c-7b2f1e1a-0c6f7a3e/frames/3/raw')).toBe(
      '/instances/:id/frames/:n/raw',
    );
    expect(upstreamPathTemplate('/changes?since=120&limit=100')).toBe('/changes');
    expect(upstreamPathTemplate('/dicom-web/studies/1.2.840.113619.2.55.3/series')).toBe(
      '/dicom-web/studies/:uid/series',
    );
    expect(upstreamPathTemplate(`/tools/${'x'.repeat(64)}`)).toBe('/tools/:x');
    expect(upstreamPathTemplate('/system')).toBe('/system');
  });
});
