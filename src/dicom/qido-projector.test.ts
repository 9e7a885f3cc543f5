import type { DicomJson } from './json';
import { projectQidoResults, type QidoFound, type QidoRow } from './qido-projector';

const ROOT = 'https://gw/dicom-web';
const none = (): QidoFound['wanted'] => ({
  all: false,
  study: new Set(),
  series: new Set(),
  instance: new Set(),
});

const studyJson: DicomJson = {
  '00080005': { vr: 'CS', Value: ['ISO_IR 100'] },
  '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Peter' }] },
  '00081030': { vr: 'LO', Value: ['Head'] },
  // An attribute that is not a study return attribute, and bulk data of the instance the study JSON came from.
  '00181030': { vr: 'LO', Value: ['protocol'] },
  '00291010': { vr: 'OB', BulkDataURI: '00291010' },
};

describe('QIDO-RS result projector (PS3.18 §10.6.3.3)', () => {
  it('answers a study with its return attributes, the computed ones and its RetrieveURL, tags in order', () => {
    const row: QidoRow = {
      study_uid: '1.2.3',
      study_json: studyJson,
      agg_modalities: ['MR', 'CT'],
      agg_num_series: 2,
      agg_num_instances: 5,
    };
    const [r] = projectQidoResults(
      { level: 'study', root: ROOT },
      { rows: [row], wanted: none(), withStudy: true, withSeries: false },
    );
    expect(r['0020000D']).toEqual({ vr: 'UI', Value: ['1.2.3'] });
    expect(r['00081190']).toEqual({ vr: 'UR', Value: [`${ROOT}/studies/1.2.3`] });
    expect(r['00080061']).toEqual({ vr: 'CS', Value: ['CT', 'MR'] });
    expect(r['00201206']).toEqual({ vr: 'IS', Value: [2] });
    expect(r['00201208']).toEqual({ vr: 'IS', Value: [5] });
    expect(r['00080056']).toEqual({ vr: 'CS', Value: ['ONLINE'] });
    expect(r['00081030'].Value).toEqual(['Head']);
    // DICOM JSON is UTF-8 whatever the stored object used (PS3.18 F.2).
    expect(r['00080005']).toEqual({ vr: 'CS', Value: ['ISO_IR 192'] });
    // Type 2 attributes are present even when empty; attributes nobody asked for are not.
    expect(r['00080050']).toEqual({ vr: 'SH' });
    expect(r['00181030']).toBeUndefined();
    expect(r['00291010']).toBeUndefined();
    expect(Object.keys(r)).toEqual([...Object.keys(r)].sort());
  });

  it('returns asked-for attributes of higher levels but never bulk data that belongs to another instance', () => {
    const wanted = none();
    wanted.study.add('00181030');
    const [r] = projectQidoResults(
      { level: 'study', root: ROOT },
      { rows: [{ study_uid: '1.2.3', study_json: studyJson }], wanted, withStudy: true, withSeries: false },
    );
    expect(r['00181030'].Value).toEqual(['protocol']);
    wanted.all = true;
    const [all] = projectQidoResults(
      { level: 'study', root: ROOT },
      { rows: [{ study_uid: '1.2.3', study_json: studyJson }], wanted, withStudy: true, withSeries: false },
    );
    expect(all['00181030']).toBeDefined();
    expect(all['00291010']).toBeUndefined();
  });

  it('answers an instance under its series with absolute BulkDataURIs, nested ones included', () => {
    const row: QidoRow = {
      study_uid: '1.2',
      series_uid: '1.2.3',
      sop_instance_uid: '1.2.3.4',
      series_json: { '00080060': { vr: 'CS', Value: ['US'] } },
      agg_series_instances: 7,
      instance_json: {
        '00080018': { vr: 'UI', Value: ['1.2.3.4'] },
        '7FE00010': { vr: 'OB', BulkDataURI: '7FE00010' },
        '00400275': { vr: 'SQ', Value: [{ '00420011': { vr: 'OB', BulkDataURI: '00400275/0/00420011' } }] },
      },
    };
    const wanted = none();
    wanted.all = true;
    const [r] = projectQidoResults(
      { level: 'instance', root: ROOT, studyUid: '1.2' },
      { rows: [row], wanted, withStudy: false, withSeries: true },
    );
    const url = `${ROOT}/studies/1.2/series/1.2.3/instances/1.2.3.4`;
    expect(r['00081190'].Value).toEqual([url]);
    expect(r['7FE00010'].BulkDataURI).toBe(`${url}/bulk/7FE00010`);
    const item = (r['00400275'].Value as DicomJson[])[0];
    expect(item['00420011'].BulkDataURI).toBe(`${url}/bulk/00400275/0/00420011`);
    expect(r['00080060'].Value).toEqual(['US']);
    expect(r['00201209']).toEqual({ vr: 'IS', Value: [7] });
    expect(r['0020000E']).toEqual({ vr: 'UI', Value: ['1.2.3'] });
    // The stored rows are left as they were: the projector copies what it rewrites.
    expect(row.instance_json?.['7FE00010'].BulkDataURI).toBe('7FE00010');
  });

  it('answers a series without InstanceAvailability, and nothing for no rows', () => {
    const found = (rows: QidoRow[]): QidoFound => ({
      rows,
      wanted: none(),
      withStudy: false,
      withSeries: true,
    });
    const [r] = projectQidoResults(
      { level: 'series', root: ROOT, studyUid: '1.2' },
      found([{ study_uid: '1.2', series_uid: '1.2.3', series_json: {} }]),
    );
    expect(r['00080056']).toBeUndefined();
    expect(r['00080060']).toEqual({ vr: 'CS' });
    expect(r['00201209']).toEqual({ vr: 'IS', Value: [0] });
    expect(projectQidoResults({ level: 'series', root: ROOT }, found([]))).toEqual([]);
  });
});
