import { FailureReason } from './parse';
import {
  buildStoreInstancesResponse,
  instanceRetrieveUrl,
  type StoredInstance,
  storeResponseStatus,
  WarningReason,
} from './store-response';

const ROOT = 'https://pacs.example.org/projects/lung-study/dicom-web';
const ct: StoredInstance = {
  sopClassUid: '1.2.840.10008.5.1.4.1.1.2',
  sopInstanceUid: '1.2.3.4.5.6',
  studyInstanceUid: '1.2.3',
  seriesInstanceUid: '1.2.3.4',
};

describe('Store Instances Response Module (PS3.18 Annex I)', () => {
  it('references each stored instance with a Retrieve URL at the root the request came through', () => {
    const ds = buildStoreInstancesResponse(ROOT, { stored: [ct], failed: [] }, '1.2.3');
    expect(ds).toEqual({
      '00081190': { vr: 'UR', Value: [`${ROOT}/studies/1.2.3`] },
      '00081199': {
        vr: 'SQ',
        Value: [
          {
            '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.2'] },
            '00081155': { vr: 'UI', Value: ['1.2.3.4.5.6'] },
            '00081190': { vr: 'UR', Value: [`${ROOT}/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.6`] },
          },
        ],
      },
    });
    expect(ds['00081198']).toBeUndefined();
  });

  it('lists failures with their reason, and the UIDs only when the object could be read', () => {
    const ds = buildStoreInstancesResponse(ROOT, {
      stored: [],
      failed: [
        { failureReason: FailureReason.CannotUnderstand },
        {
          sopClassUid: '1.2.840.10008.5.1.4.1.1.4',
          sopInstanceUid: '9.8.7',
          failureReason: FailureReason.StudyUidMismatch,
        },
      ],
    });
    expect(ds['00081198'].Value).toEqual([
      { '00081197': { vr: 'US', Value: [0xc000] } },
      {
        '00081150': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.4'] },
        '00081155': { vr: 'UI', Value: ['9.8.7'] },
        '00081197': { vr: 'US', Value: [0xa910] },
      },
    ]);
    expect(ds['00081199']).toBeUndefined();
    // Type 2: present but empty when no study was named and nothing was stored.
    expect(ds['00081190']).toEqual({ vr: 'UR' });
  });

  it('names the single study all stored instances belong to when the URL named none', () => {
    const ds = buildStoreInstancesResponse(ROOT, {
      stored: [ct, { ...ct, sopInstanceUid: '1.2.3.4.5.7' }],
      failed: [],
    });
    expect(ds['00081190'].Value).toEqual([`${ROOT}/studies/1.2.3`]);
    const two = buildStoreInstancesResponse(ROOT, {
      stored: [ct, { ...ct, studyInstanceUid: '5.6' }],
      failed: [],
    });
    expect(two['00081190']).toEqual({ vr: 'UR' });
  });

  it('carries a Warning Reason on an instance accepted with a warning', () => {
    const ds = buildStoreInstancesResponse(ROOT, {
      stored: [{ ...ct, warningReason: WarningReason.DataSetDoesNotMatchSopClass }],
      failed: [],
    });
    expect((ds['00081199'].Value as Array<Record<string, unknown>>)[0]['00081196']).toEqual({
      vr: 'US',
      Value: [0xb007],
    });
  });

  it('keeps UIDs in URLs as they are and escapes nothing else into them', () => {
    expect(instanceRetrieveUrl('http://h/dicom-web', ct)).toBe(
      'http://h/dicom-web/studies/1.2.3/series/1.2.3.4/instances/1.2.3.4.5.6',
    );
  });
});

describe('STOW-RS status codes (PS3.18 Table 10.5.3-1)', () => {
  const fail = (failureReason: number) => ({ failureReason });

  it('answers 200 when every instance was stored', () => {
    expect(storeResponseStatus({ stored: [ct, ct], failed: [] })).toBe(200);
  });

  it('answers 202 when some were stored and others failed or carry warnings', () => {
    expect(storeResponseStatus({ stored: [ct], failed: [fail(FailureReason.CannotUnderstand)] })).toBe(202);
    expect(storeResponseStatus({ stored: [{ ...ct, warningReason: 0xb000 }], failed: [] })).toBe(202);
  });

  it('answers 400 when nothing was stored because every part was unreadable, or there were no parts', () => {
    expect(storeResponseStatus({ stored: [], failed: [fail(0xc000), fail(0xc122)] })).toBe(400);
    expect(storeResponseStatus({ stored: [], failed: [] })).toBe(400);
  });

  it('answers 409 for a conflict or a mixture of reasons', () => {
    expect(storeResponseStatus({ stored: [], failed: [fail(FailureReason.StudyUidMismatch)] })).toBe(409);
    expect(storeResponseStatus({ stored: [], failed: [fail(FailureReason.DuplicateSopInstance)] })).toBe(409);
    expect(storeResponseStatus({ stored: [], failed: [fail(0xc000), fail(0xa900)] })).toBe(409);
  });

  it('answers 503 when only the server itself stopped every instance, so that clients retry', () => {
    expect(
      storeResponseStatus({ stored: [], failed: [fail(FailureReason.ProcessingFailure), fail(0xa700)] }),
    ).toBe(503);
  });
});
