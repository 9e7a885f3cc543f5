import { BadRequestError } from '../errors';
import {
  fuzzyWordRegex,
  isPrivateTag,
  isUid,
  lookupAttribute,
  type Matcher,
  parseQidoQuery,
  wildcardToLike,
} from './matching';

const limits = { defaultLimit: 100, maxLimit: 1000 };
const parse = (qs: string) => parseQidoQuery(new URLSearchParams(qs), limits);
const matcherOf = (qs: string): Matcher => parse(qs).keys[0].matcher;

/** The message of the BadRequestError a query raises (fails the test if it raises none). */
function rejection(qs: string): string {
  try {
    parse(qs);
  } catch (err) {
    expect(err).toBeInstanceOf(BadRequestError);
    return (err as Error).message;
  }
  throw new Error(`query was accepted: ${qs}`);
}

describe('attribute keys', () => {
  it('names attributes by keyword or by tag, either case for the hex digits', () => {
    expect(lookupAttribute('PatientName')).toEqual({ tag: '00100010', keyword: 'PatientName', vr: 'PN' });
    expect(lookupAttribute('0020000d')).toMatchObject({ keyword: 'StudyInstanceUID', vr: 'UI' });
    expect(lookupAttribute('NoSuchKeyword')).toBeUndefined();
  });

  it('accepts a sequence path to an item attribute', () => {
    const q = parse('00400275.00401001=RP1');
    expect(q.keys[0].path.map((a) => a.keyword)).toEqual([
      'RequestAttributesSequence',
      'RequestedProcedureID',
    ]);
    expect(q.keys[0].matcher).toEqual({ type: 'single', value: 'RP1' });
  });

  it('refuses paths through attributes that are not sequences, naming the parameter', () => {
    expect(rejection('PatientName.PatientID=x')).toContain('PatientName.PatientID');
  });

  it('ignores unknown keywords and tags, as return and matching keys, naming them in a warning', () => {
    const q = parse('PatientNam=x&includefield=NoSuchThing,StudyDescription&0008FFFF=1&00090010.Foo=2');
    expect(q.keys).toEqual([]);
    expect(q.includeFields.map((a) => a.keyword)).toEqual(['StudyDescription']);
    expect(q.warnings).toHaveLength(1);
    for (const name of ['PatientNam', 'NoSuchThing', '0008FFFF', '00090010.Foo'])
      expect(q.warnings[0]).toContain(name);
  });

  it('accepts private tags as return keys and as text matching keys', () => {
    const q = parse('includefield=00091001&00191018=S*&00091002=CT01\\CT02');
    expect(q.warnings).toEqual([]);
    expect(q.includeFields).toEqual([{ tag: '00091001', keyword: '00091001', vr: 'UN' }]);
    expect(q.keys.map((k) => k.matcher)).toEqual([
      { type: 'wildcard', pattern: 'S*' },
      { type: 'list', values: ['CT01', 'CT02'] },
    ]);
  });

  it('does not take group lengths, odd groups below 0009 or element numbers below 0010 for private tags', () => {
    expect(isPrivateTag('00091001')).toBe(true);
    expect(isPrivateTag('00090010')).toBe(true);
    expect(isPrivateTag('00090000')).toBe(false);
    expect(isPrivateTag('00090005')).toBe(false);
    expect(isPrivateTag('00071001')).toBe(false);
    expect(isPrivateTag('FFFF1001')).toBe(false);
    expect(isPrivateTag('00101010')).toBe(false);
  });

  it('refuses a key given twice', () => {
    expect(rejection('PatientID=1&00100020=2')).toContain('more than once');
  });
});

describe('matching types (PS3.4 C.2.2.2)', () => {
  it('treats an empty value or a lone * as universal matching', () => {
    expect(matcherOf('PatientID=')).toEqual({ type: 'universal' });
    expect(matcherOf('StudyDescription=*')).toEqual({ type: 'universal' });
  });

  it('matches single values, trimming insignificant spaces', () => {
    expect(matcherOf('PatientID=%2012345%20')).toEqual({ type: 'single', value: '12345' });
  });

  it('folds person names so they match case- and accent-insensitively', () => {
    expect(matcherOf('PatientName=m%C3%BCller^j%C3%BCrgen')).toEqual({
      type: 'single',
      value: 'MULLER^JURGEN',
    });
    expect(matcherOf('PatientName=doe*')).toEqual({ type: 'wildcard', pattern: 'DOE*' });
  });

  it('reads UID lists separated by backslash or comma (PS3.18 §8.3.4)', () => {
    expect(matcherOf('StudyInstanceUID=1.2.3%5C1.2.4')).toEqual({ type: 'list', values: ['1.2.3', '1.2.4'] });
    expect(matcherOf('StudyInstanceUID=1.2.3,1.2.4')).toEqual({ type: 'list', values: ['1.2.3', '1.2.4'] });
  });

  it('refuses malformed UIDs and wildcards in UIDs', () => {
    expect(rejection('SeriesInstanceUID=1.2.x')).toContain('SeriesInstanceUID');
    expect(rejection('SOPInstanceUID=1.2.*')).toContain('malformed UID');
    expect(rejection(`StudyInstanceUID=1.${'2'.repeat(70)}`)).toContain('StudyInstanceUID');
  });

  it('reads lists of code strings such as ModalitiesInStudy=CT\\MR', () => {
    expect(matcherOf('ModalitiesInStudy=CT%5CMR')).toEqual({ type: 'list', values: ['CT', 'MR'] });
    expect(matcherOf('ModalitiesInStudy=CT,MR')).toEqual({ type: 'list', values: ['CT', 'MR'] });
    expect(matcherOf('StudyDescription=CT, HEAD')).toEqual({ type: 'single', value: 'CT, HEAD' });
  });

  it('keeps * and ? as wildcards', () => {
    expect(matcherOf('StudyDescription=*HEAD?')).toEqual({ type: 'wildcard', pattern: '*HEAD?' });
  });

  it('reads numbers for IS/DS keys and refuses text there', () => {
    expect(matcherOf('SeriesNumber=003')).toEqual({ type: 'single', value: '3' });
    expect(rejection('InstanceNumber=abc')).toContain('InstanceNumber');
  });
});

describe('date and time ranges', () => {
  it('matches a single date exactly and reads the three range forms', () => {
    expect(matcherOf('StudyDate=20240131')).toEqual({ type: 'single', value: '20240131' });
    expect(matcherOf('StudyDate=20240101-20240131')).toEqual({
      type: 'range',
      from: '20240101',
      to: '20240131',
    });
    expect(matcherOf('StudyDate=20240101-')).toEqual({ type: 'range', from: '20240101', to: undefined });
    expect(matcherOf('StudyDate=-20240131')).toEqual({ type: 'range', from: undefined, to: '20240131' });
  });

  it('refuses malformed, impossible and reversed dates, naming the parameter', () => {
    expect(rejection('StudyDate=2024-01-01')).toContain('StudyDate');
    expect(rejection('PatientBirthDate=20230230')).toContain('PatientBirthDate');
    expect(rejection('StudyDate=20240201-20240101')).toContain('starts after it ends');
    expect(rejection('StudyDate=-')).toContain('StudyDate');
  });

  it('lets a time of lower precision cover its whole span', () => {
    expect(matcherOf('StudyTime=1730')).toEqual({
      type: 'range',
      from: '173000.000000',
      to: '173099.999999',
    });
    expect(matcherOf('StudyTime=08-17:30')).toEqual({
      type: 'range',
      from: '080000.000000',
      to: '173099.999999',
    });
    expect(rejection('StudyTime=2500')).toContain('StudyTime');
  });

  it('reads datetimes, ignoring a UTC offset rather than mistaking it for a range', () => {
    expect(matcherOf('AcquisitionDateTime=20240101120000-0500')).toEqual({
      type: 'range',
      from: '20240101120000.000000',
      to: '20240101120000.999999',
    });
    expect(matcherOf('AcquisitionDateTime=2023-2024')).toEqual({
      type: 'range',
      from: '20230000000000.000000',
      to: '20249999999999.999999',
    });
  });

  it('combines StudyDate and StudyTime into one datetime range', () => {
    const q = parse('StudyDate=20240101-20240102&StudyTime=2200-0600');
    const date = q.keys.find((k) => k.attr.keyword === 'StudyDate');
    const time = q.keys.find((k) => k.attr.keyword === 'StudyTime');
    expect(date?.matcher).toMatchObject({
      type: 'datetime',
      from: ['20240101', '220000.000000'],
      to: ['20240102', '060099.999999'],
    });
    expect(time?.matcher).toEqual({ type: 'universal' });
  });

  it('combines a single date with a time range, and leaves open date bounds open', () => {
    expect(matcherOf('StudyDate=20240101&StudyTime=0800-1000')).toMatchObject({
      type: 'datetime',
      from: ['20240101', '080000.000000'],
      to: ['20240101', '100099.999999'],
    });
    expect(matcherOf('StudyDate=20240101-&StudyTime=0800')).toMatchObject({
      type: 'datetime',
      from: ['20240101', '080000.000000'],
      to: undefined,
    });
  });

  it('refuses a reversed time range that no date range makes meaningful', () => {
    expect(rejection('StudyTime=2200-0600')).toContain('StudyTime');
  });
});

describe('fuzzy matching', () => {
  it('splits a fuzzy person name into folded words', () => {
    expect(matcherOf('PatientName=j%C3%BCr%20doe*&fuzzymatching=true')).toEqual({
      type: 'fuzzy',
      words: ['JUR', 'DOE'],
    });
  });

  it('turns each word into a regex anchored at the start of a name component', () => {
    const re = new RegExp(fuzzyWordRegex('PET'));
    expect(re.test('DOE^PETER')).toBe(true);
    expect(re.test('PETERSON^ANNA')).toBe(true);
    expect(re.test('DOE^CARPET')).toBe(false);
    expect(new RegExp(fuzzyWordRegex('A.B')).test('AXB')).toBe(false);
  });

  it('leaves non-name keys literal and refuses a bad fuzzymatching value', () => {
    expect(matcherOf('PatientID=ab&fuzzymatching=true')).toEqual({ type: 'single', value: 'ab' });
    expect(rejection('fuzzymatching=yes')).toContain('fuzzymatching');
  });
});

describe('includefield, limit and offset', () => {
  it('reads includefield as comma lists, repeats, keywords, tags and all', () => {
    const q = parse('includefield=00081030,PatientAge&includeField=StudyDescription&includefield=all');
    expect(q.includeAll).toBe(true);
    expect(q.includeFields.map((a) => a.keyword)).toEqual(['StudyDescription', 'PatientAge']);
    expect(parse('includefield=Nonsense').warnings[0]).toContain('Nonsense');
  });

  it('defaults the limit, clamps it to the maximum with a warning, and reads the offset', () => {
    expect(parse('').limit).toBe(100);
    const q = parse('limit=5000&offset=20');
    expect(q.limit).toBe(1000);
    expect(q.offset).toBe(20);
    expect(q.warnings[0]).toContain('maximum of 1000');
  });

  it('refuses non-numeric, zero and negative paging values', () => {
    expect(rejection('limit=ten')).toContain('limit');
    expect(rejection('limit=0')).toContain('limit');
    expect(rejection('offset=-1')).toContain('offset');
  });
});

describe('NUL characters', () => {
  it('refuses a NUL in any value or name with 400 naming the parameter, whatever the key or its VR', () => {
    const keys = [
      'PatientName',
      'PatientID',
      'StudyDate',
      'StudyTime',
      'StudyInstanceUID',
      'ModalitiesInStudy',
      'SeriesNumber',
      'AccessionNumber',
      '00100020',
      'ReferencedStudySequence.ReferencedSOPInstanceUID',
      'includefield',
      'limit',
      'offset',
      'fuzzymatching',
      'accept',
      'charset',
    ];
    for (const key of keys) {
      for (const v of ['%00', 'a%00', '%00*', '1%00', '20010101-%00']) {
        expect([key, v, rejection(`${key}=${v}`)]).toEqual([key, v, expect.stringContaining(key)]);
      }
    }
    expect(rejection('Patient%00Name=x')).toContain('Patient%00Name');
  });
});

describe('helpers', () => {
  it('escapes LIKE metacharacters before translating wildcards', () => {
    expect(wildcardToLike('50%_a*b?')).toBe('50\\%\\_a%b_');
  });

  it('recognises UIDs', () => {
    expect(isUid('1.2.840.10008.1.2.1')).toBe(true);
    expect(isUid('1..2')).toBe(false);
    expect(isUid('')).toBe(false);
  });
});
