import { answerInstanceCount, answerToDicomJson, findKeys } from './query';

describe('C-FIND keys and answers', () => {
  it('adds the return keys of the level and checks the keys asked', () => {
    const keys = findKeys('study', { PatientID: '123', '00080020': '20240101-' });
    expect(keys).toMatchObject({
      PatientID: '123',
      StudyDate: '20240101-',
      StudyInstanceUID: '',
      ModalitiesInStudy: '',
    });
    expect(() => findKeys('study', { NotAKeyword: 'x' })).toThrow(/not a DICOM attribute/);
    expect(() => findKeys('study', { PatientID: 'a\\b' })).toThrow(/single text value/);
    expect(() => findKeys('study', { ReferencedSeriesSequence: '' })).toThrow(/sequence/);
    expect(() => findKeys('series', { Modality: 'CT' })).toThrow(/needs StudyInstanceUID/);
  });

  it('turns an answer into DICOM JSON with VRs, person names and numbers', () => {
    const json = answerToDicomJson({
      '00100010': 'Doe^Jane',
      '00201208': '12',
      '00080061': 'CT\\PT',
      '00080050': '',
      '0020000D': '1.2.3',
    });
    expect(json).toEqual({
      '00080050': { vr: 'SH' },
      '00080061': { vr: 'CS', Value: ['CT', 'PT'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane' }] },
      '0020000D': { vr: 'UI', Value: ['1.2.3'] },
      '00201208': { vr: 'IS', Value: [12] },
    });
    expect(answerInstanceCount({ '00201208': '12' })).toBe(12);
    expect(answerInstanceCount({ '00201208': '' })).toBeUndefined();
  });
});
