import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { api } from 'dicomweb-client';
import type { ReadScope } from '../src/auth/access';
import { parseQidoQuery } from '../src/dicom/matching';
import { ensureProject } from '../src/index-db/projects';
import { projectQidoResults } from '../src/dicom/qido-projector';
import { type QidoLevel, searchQido } from '../src/index-db/qido';
import { ingestInstance } from '../src/ingest/ingest';
import { resetStack, SAMPLES, startGateway, type TestGateway } from './helpers/gateway';

// dicomweb-client speaks XMLHttpRequest, which Node lacks; xhr2 provides it.
// eslint-disable-next-line @typescript-eslint/no-require-imports
(globalThis as unknown as { XMLHttpRequest: unknown }).XMLHttpRequest = require('xhr2');

jest.setTimeout(300_000);

type DicomJson = Record<string, { vr: string; Value?: unknown[]; BulkDataURI?: string }>;

/*
 * The hierarchy samples: 2 patients, 6 studies, 13 series, 31 instances. Project "alpha" holds all of them but
 * one series of the Brain study; project "beta" holds Archibald's two studies and that one Brain series. So the
 * union root sees the CR study twice (one result) and the Brain study split over two projects.
 */
const P = '1.3.6.1.4.1.5962.1.1.0.0.0.';
const S_CR = `${P}1196527414.5534.0.1`; // Doe^Archibald 20010101 000000, 3 CR series of 1
const S_CT_HEAD = `${P}1196530851.28319.0.1`; // Doe^Archibald 19950903 173032, 1 CT series of 4
const S_CT_PETER = `${P}1194734704.16302.0.1`; // Doe^Peter 20010101 000000, CT series of 2 + 5
const S_MRA = `${P}1196533885.18148.0.1`; // Doe^Peter 20030505 045357, MR series of 1, 3, 7
const S_BRAIN = `${P}1196533885.18148.0.133`; // Doe^Peter 20030505 025109, MR series of 1 (alpha), 3 (beta)
const S_CAROTIDS = `${P}1196533885.18148.0.427`; // Doe^Peter 20030505 050743, MR series of 1 + 1
const SE_MRA_ANGIO = `${P}1196533885.18148.0.118`; // SeriesNumber 700, 7 instances
const SE_BRAIN_BETA = `${P}1196533885.18148.0.136`;
const SE_CR1 = `${P}1196527414.5534.0.10`;
/** Newest first, then by UID: the order every study list comes in. */
const ALL_STUDIES = [S_CAROTIDS, S_MRA, S_BRAIN, S_CT_PETER, S_CR, S_CT_HEAD];

const T = {
  StudyInstanceUID: '0020000D',
  SeriesInstanceUID: '0020000E',
  SOPInstanceUID: '00080018',
  InstanceNumber: '00200013',
  SeriesNumber: '00200011',
  PatientName: '00100010',
  PatientAge: '00101010',
  StudyDescription: '00081030',
  ModalitiesInStudy: '00080061',
  SOPClassesInStudy: '00080062',
  NumberOfStudyRelatedSeries: '00201206',
  NumberOfStudyRelatedInstances: '00201208',
  NumberOfSeriesRelatedInstances: '00201209',
  RetrieveURL: '00081190',
  Modality: '00080060',
  Rows: '00280010',
  PixelData: '7FE00010',
};

let gw: TestGateway;

interface Answer {
  status: number;
  body: DicomJson[] & { errors?: Array<{ message: string }> };
  warning: string;
  contentType: string;
}

async function get(path: string, headers: Record<string, string> = {}): Promise<Answer> {
  const r = await fetch(gw.url + path, { headers });
  const text = await r.text();
  return {
    status: r.status,
    body: text ? JSON.parse(text) : undefined,
    warning: r.headers.get('warning') ?? '',
    contentType: r.headers.get('content-type') ?? '',
  };
}

/** The first value of an attribute in each result. */
function col(results: DicomJson[], tag: string): unknown[] {
  return results.map((r) => r[tag]?.Value?.[0]);
}

/** The UIDs a search answers, checking it succeeded without warnings. */
async function found(path: string, tag: string): Promise<unknown[]> {
  const a = await get(path);
  expect({ path, status: a.status, warning: a.warning }).toEqual({ path, status: 200, warning: '' });
  return col(a.body, tag);
}
const studies = (q: string, root = '/dicom-web') =>
  found(`${root}/studies${q ? `?${q}` : ''}`, T.StudyInstanceUID);

function files(dir: string): string[] {
  return readdirSync(dir)
    .sort()
    .flatMap((f) => (statSync(join(dir, f)).isDirectory() ? files(join(dir, f)) : [join(dir, f)]));
}

beforeAll(async () => {
  await resetStack();
  gw = await startGateway({ QIDO_DEFAULT_LIMIT: '10', QIDO_MAX_LIMIT: '20' });
  await ensureProject(gw.services.db, { id: 'alpha', name: 'Alpha' });
  await ensureProject(gw.services.db, { id: 'beta', name: 'Beta' });
  for (const f of files(`${SAMPLES}/hierarchy`)) {
    const bytes = readFileSync(f);
    const archibald = f.includes('/77654033/');
    const brainBeta = f.includes('/98892003/MR2/49') || f.includes('/98892003/MR2/50');
    const projects = [...(brainBeta ? [] : ['alpha']), ...(archibald || brainBeta ? ['beta'] : [])];
    const out = await ingestInstance(gw.services, bytes, projects, 'stow');
    if (!out.ok) throw new Error(`could not load ${f}: ${out.message}`);
  }
});
afterAll(async () => gw?.close());

describe('QIDO-RS study search (PS3.18 §10.6)', () => {
  it('lists every visible study once, newest first, with the required attributes', async () => {
    const a = await get('/dicom-web/studies');
    expect(a.status).toBe(200);
    expect(a.contentType).toContain('application/dicom+json');
    expect(col(a.body, T.StudyInstanceUID)).toEqual(ALL_STUDIES);
    const mra = a.body[1];
    for (const tag of ['00080020', '00080030', '00080050', '00080056', '00080090', '00100020', '00100030']) {
      expect(mra[tag]).toBeDefined();
    }
    expect(mra[T.PatientName].Value).toEqual([{ Alphabetic: 'Doe^Peter' }]);
    expect(mra[T.ModalitiesInStudy].Value).toEqual(['MR']);
    expect(mra[T.NumberOfStudyRelatedSeries].Value).toEqual([3]);
    expect(mra[T.NumberOfStudyRelatedInstances].Value).toEqual([11]);
    expect(mra[T.RetrieveURL].Value).toEqual([`${gw.url}/dicom-web/studies/${S_MRA}`]);
  });

  it('matches single values, case-insensitively for person names', async () => {
    expect(await studies('PatientID=77654033')).toEqual([S_CR, S_CT_HEAD]);
    expect(await studies('00100020=77654033')).toEqual([S_CR, S_CT_HEAD]);
    expect(await studies('PatientName=doe^archibald')).toEqual([S_CR, S_CT_HEAD]);
    expect(await studies('AccessionNumber=428')).toEqual([S_CAROTIDS]);
    expect(await studies('StudyDescription=Brain')).toEqual([S_BRAIN]);
    expect(await studies('PatientID=nobody')).toEqual([]);
  });

  it('matches lists of UIDs separated by comma or backslash', async () => {
    expect(await studies(`StudyInstanceUID=${S_CR},${S_MRA}`)).toEqual([S_MRA, S_CR]);
    expect(await studies(`StudyInstanceUID=${S_CR}%5C${S_CT_HEAD}`)).toEqual([S_CR, S_CT_HEAD]);
  });

  it('matches * and ? wildcards; only names ignore case', async () => {
    expect(await studies('PatientName=Doe*')).toEqual(ALL_STUDIES);
    expect(await studies('PatientName=*arch*')).toEqual([S_CR, S_CT_HEAD]);
    expect(await studies('PatientName=D?e^Pe?er')).toEqual([S_CAROTIDS, S_MRA, S_BRAIN, S_CT_PETER]);
    expect(await studies('StudyDescription=Brain*')).toEqual([S_MRA, S_BRAIN]);
    expect(await studies('StudyDescription=brain*')).toEqual([]);
    expect(await studies('StudyDescription=*HEAD*')).toEqual([S_CT_HEAD]);
  });

  it('matches date ranges in all three forms', async () => {
    expect(await studies('StudyDate=20010101')).toEqual([S_CT_PETER, S_CR]);
    expect(await studies('StudyDate=19950101-20011231')).toEqual([S_CT_PETER, S_CR, S_CT_HEAD]);
    expect(await studies('StudyDate=20020101-')).toEqual([S_CAROTIDS, S_MRA, S_BRAIN]);
    expect(await studies('StudyDate=-19991231')).toEqual([S_CT_HEAD]);
  });

  it('matches time ranges, and StudyDate with StudyTime as one datetime range', async () => {
    expect(await studies('StudyTime=0400-0600')).toEqual([S_CAROTIDS, S_MRA]);
    // 1995-09-03 18:00 to 2003-05-05 03:00: not the 17:30 CT, not the MR studies after 03:00.
    expect(await studies('StudyDate=19950903-20030505&StudyTime=1800-0300')).toEqual([
      S_BRAIN,
      S_CT_PETER,
      S_CR,
    ]);
    expect(await studies('StudyDate=20030505&StudyTime=0500-')).toEqual([S_CAROTIDS]);
  });

  it('matches person names fuzzily: any case and accents, prefixes of name components', async () => {
    expect(await studies('PatientName=pet&fuzzymatching=true')).toEqual([
      S_CAROTIDS,
      S_MRA,
      S_BRAIN,
      S_CT_PETER,
    ]);
    expect(await studies('PatientName=ARCHI%20do&fuzzymatching=true')).toEqual([S_CR, S_CT_HEAD]);
    expect(await studies('PatientName=D%C3%B6e^%C3%A1rch&fuzzymatching=true')).toEqual([S_CR, S_CT_HEAD]);
    // "eter" is inside "Peter" but starts no component.
    expect(await studies('PatientName=eter&fuzzymatching=true')).toEqual([]);
  });

  it('matches computed attributes: ModalitiesInStudy (also as a list) and SOPClassesInStudy', async () => {
    expect(await studies('ModalitiesInStudy=CT')).toEqual([S_CT_PETER, S_CT_HEAD]);
    expect(await studies('ModalitiesInStudy=CT%5CCR')).toEqual([S_CT_PETER, S_CR, S_CT_HEAD]);
    expect(await studies('SOPClassesInStudy=1.2.840.10008.5.1.4.1.1.1')).toEqual([S_CR]);
  });

  it('matches attributes the index keeps only in the study JSON', async () => {
    expect(await studies('PatientAge=047Y')).toEqual([S_CR]);
    expect(await studies('PatientAge=04?Y&StudyDate=20010101')).toEqual([S_CT_PETER, S_CR]);
    expect(await studies('PatientWeight=81.6327')).toEqual([S_CAROTIDS, S_MRA, S_BRAIN]);
  });

  it('returns matching keys and includefield attributes, by keyword, tag, repeat and all', async () => {
    const a = await get(
      `/dicom-web/studies?StudyInstanceUID=${S_CR}&includefield=PatientAge,00080062&PatientSex=`,
    );
    expect(a.body[0][T.PatientAge].Value).toEqual(['047Y']);
    expect(a.body[0][T.SOPClassesInStudy].Value).toEqual(['1.2.840.10008.5.1.4.1.1.1']);
    expect(a.body[0]['00100040']).toEqual({ vr: 'CS' });
    const plain = await get(`/dicom-web/studies?StudyInstanceUID=${S_CR}`);
    expect(plain.body[0][T.PatientAge]).toBeUndefined();
    const all = await get(`/dicom-web/studies?StudyInstanceUID=${S_MRA}&includefield=all`);
    expect(all.body[0]['00120063']).toBeDefined(); // DeidentificationMethod, a study-level attribute
    expect(all.body[0][T.SOPClassesInStudy].Value).toEqual(['1.2.840.10008.5.1.4.1.1.4']);
  });

  it('pages with limit and offset in a stable order, warning when more results remain', async () => {
    const first = await get('/dicom-web/studies?limit=4');
    expect(col(first.body, T.StudyInstanceUID)).toEqual(ALL_STUDIES.slice(0, 4));
    expect(first.warning).toMatch(/^299 aperture ".*exceeded the limit of 4.*offset=4"$/);
    const second = await get('/dicom-web/studies?limit=4&offset=4');
    expect(col(second.body, T.StudyInstanceUID)).toEqual(ALL_STUDIES.slice(4));
    expect(second.warning).toBe('');
    expect((await get('/dicom-web/studies?offset=6')).body).toEqual([]);
  });
});

describe('QIDO-RS series search', () => {
  it('lists the series of a study by SeriesNumber, with their instance counts', async () => {
    const a = await get(`/dicom-web/studies/${S_MRA}/series`);
    expect(a.status).toBe(200);
    expect(col(a.body, T.SeriesNumber)).toEqual([1, 2, 700]);
    expect(col(a.body, T.NumberOfSeriesRelatedInstances)).toEqual([1, 3, 7]);
    expect(col(a.body, T.RetrieveURL)[2]).toBe(`${gw.url}/dicom-web/studies/${S_MRA}/series/${SE_MRA_ANGIO}`);
    // Study attributes are left out when the study is in the path.
    expect(a.body[0][T.PatientName]).toBeUndefined();
  });

  it('searches all series by series and study attributes, and returns study attributes with them', async () => {
    const cr = await get('/dicom-web/series?Modality=CR');
    expect(col(cr.body, T.SeriesNumber)).toEqual([1, 2, 3]);
    expect(col(cr.body, T.PatientName)).toEqual(Array(3).fill({ Alphabetic: 'Doe^Archibald' }));
    expect(col(cr.body, T.NumberOfStudyRelatedSeries)).toEqual([3, 3, 3]);
    expect(
      await found('/dicom-web/series?SeriesDescription=FAST*&PatientID=98890234', T.SeriesNumber),
    ).toEqual([1, 1, 1, 2]);
    expect(await found('/dicom-web/series?StudyDate=19950903', T.Modality)).toEqual(['CT']);
    expect(await found('/dicom-web/series?BodyPartExamined=CSPINE', T.SeriesNumber)).toEqual([1, 2, 3]);
    expect(await found(`/dicom-web/series?SeriesInstanceUID=${SE_CR1}`, T.SeriesNumber)).toEqual([1]);
  });

  it('matches series attributes held only in the series JSON', async () => {
    expect(await found('/dicom-web/series?Manufacturer=GE*', T.Modality)).toEqual(['CT', 'CT', 'CT']);
  });

  it('pages series with limit and offset', async () => {
    const all = await found('/dicom-web/series?Modality=MR&limit=20', T.SeriesInstanceUID);
    expect(all).toHaveLength(7);
    const page = await get('/dicom-web/series?Modality=MR&limit=3&offset=3');
    expect(col(page.body, T.SeriesInstanceUID)).toEqual(all.slice(3, 6));
    expect(page.warning).toContain('exceeded the limit of 3');
  });
});

describe('QIDO-RS instance search', () => {
  it('lists the instances of a series by InstanceNumber and pages through them', async () => {
    const root = `/dicom-web/studies/${S_MRA}/series/${SE_MRA_ANGIO}/instances`;
    expect(await found(root, T.InstanceNumber)).toEqual([1, 2, 3, 4, 5, 6, 7]);
    const page = await get(`${root}?limit=3&offset=3`);
    expect(col(page.body, T.InstanceNumber)).toEqual([4, 5, 6]);
    expect(page.warning).toContain('exceeded the limit of 3');
    const r = page.body[0];
    expect(r[T.Rows].Value).toEqual([16]);
    expect(r[T.RetrieveURL].Value).toEqual([
      `${gw.url}${root.replace('/instances', '')}/instances/${col([r], T.SOPInstanceUID)[0]}`,
    ]);
  });

  it('lists the instances of a study, series by series, with their series attributes', async () => {
    const a = await get(`/dicom-web/studies/${S_CT_PETER}/instances`);
    expect(col(a.body, T.InstanceNumber)).toEqual([1, 2, 6, 7, 8, 9, 10]);
    expect(col(a.body, T.SeriesNumber)).toEqual([4, 4, 5, 5, 5, 5, 5]);
  });

  it('searches all instances by instance, series and study attributes', async () => {
    expect(await found('/dicom-web/instances?InstanceNumber=180', T.InstanceNumber)).toEqual([180]);
    expect(await found('/dicom-web/instances?SOPClassUID=1.2.840.10008.5.1.4.1.1.1', T.Modality)).toEqual([
      'CR',
      'CR',
      'CR',
    ]);
    expect(await found('/dicom-web/instances?Modality=CT&PatientID=98890234', T.InstanceNumber)).toEqual([
      1, 2, 6, 7, 8, 9, 10,
    ]);
    expect(await found('/dicom-web/instances?ImageType=LOCALIZER&limit=20', T.InstanceNumber)).toEqual([
      1, 2,
    ]);
    expect(await found('/dicom-web/instances?SliceThickness=2.5', T.InstanceNumber)).toEqual([
      6, 7, 8, 9, 10,
    ]);
    expect(await found('/dicom-web/instances?ContentTime=0027-0028', T.InstanceNumber)).toEqual([
      6, 7, 8, 9, 10,
    ]);
    // ContentDate with ContentTime is one datetime range too: 17:40:00 to 17:41:59 on 1995-09-03.
    expect(
      await found('/dicom-web/instances?ContentDate=19950903&ContentTime=1740-1741', T.InstanceNumber),
    ).toEqual([180, 181, 182]);
  });

  it('applies the default limit when none is asked for', async () => {
    const a = await get('/dicom-web/instances');
    expect(a.body).toHaveLength(10);
    expect(a.warning).toContain('exceeded the limit of 10');
  });

  it('returns every attribute with includefield=all, bulk data as absolute BulkDataURIs', async () => {
    const a = await get(`/dicom-web/instances?SeriesInstanceUID=${SE_CR1}&includefield=all`);
    const r = a.body[0];
    expect(r['00080008'].Value).toEqual(['DERIVED', 'PRIMARY']);
    expect(r[T.PixelData].BulkDataURI).toBe(
      `${gw.url}/dicom-web/studies/${S_CR}/series/${SE_CR1}/instances/${col([r], T.SOPInstanceUID)[0]}/bulk/7FE00010`,
    );
  });
});

describe('both roots and read scopes', () => {
  it('answers a project root with that project only, and RetrieveURLs under it', async () => {
    expect(await studies('', '/projects/beta/dicom-web')).toEqual([S_BRAIN, S_CR, S_CT_HEAD]);
    const a = await get(`/projects/alpha/dicom-web/studies?StudyInstanceUID=${S_CR}`);
    expect(col(a.body, T.RetrieveURL)).toEqual([`${gw.url}/projects/alpha/dicom-web/studies/${S_CR}`]);
  });

  it('computes study attributes over what the caller can see', async () => {
    const counts = async (root: string) => {
      const a = await get(`${root}/studies?StudyInstanceUID=${S_BRAIN}`);
      return [
        a.body[0][T.NumberOfStudyRelatedSeries].Value,
        a.body[0][T.NumberOfStudyRelatedInstances].Value,
      ];
    };
    expect(await counts('/projects/alpha/dicom-web')).toEqual([[1], [1]]);
    expect(await counts('/projects/beta/dicom-web')).toEqual([[1], [3]]);
    expect(await counts('/dicom-web')).toEqual([[2], [4]]);
    // The CR study is in both projects: counted once.
    const cr = await get(`/dicom-web/studies?StudyInstanceUID=${S_CR}`);
    expect(cr.body[0][T.NumberOfStudyRelatedInstances].Value).toEqual([3]);
    expect(await found(`/dicom-web/studies/${S_BRAIN}/series`, T.NumberOfSeriesRelatedInstances)).toEqual([
      1, 3,
    ]);
    expect(await found(`/projects/beta/dicom-web/studies/${S_BRAIN}/series`, T.SeriesInstanceUID)).toEqual([
      SE_BRAIN_BETA,
    ]);
  });

  it('lists an instance seen through two projects once', async () => {
    expect(await found(`/dicom-web/studies/${S_CR}/instances`, T.SeriesNumber)).toEqual([1, 2, 3]);
    expect(await found(`/dicom-web/series?StudyInstanceUID=${S_CR}`, T.SeriesNumber)).toEqual([1, 2, 3]);
  });

  it('answers 404 below a study or series the caller cannot see, and for an unknown project', async () => {
    expect((await get(`/projects/beta/dicom-web/studies/${S_MRA}/series`)).status).toBe(404);
    expect(
      (await get(`/projects/beta/dicom-web/studies/${S_MRA}/series/${SE_MRA_ANGIO}/instances`)).status,
    ).toBe(404);
    expect((await get('/projects/nope/dicom-web/studies')).status).toBe(404);
    // A search that matches nothing inside a visible study is just empty.
    expect((await get(`/dicom-web/studies/${S_MRA}/series?Modality=CT`)).body).toEqual([]);
  });
});

describe('share-link scopes, applied inside SQL', () => {
  const search = async (
    level: QidoLevel,
    qs: string,
    scopes: ReadScope[],
    path: { studyUid?: string } = {},
  ) => {
    const query = parseQidoQuery(new URLSearchParams(qs), { defaultLimit: 100, maxLimit: 100 });
    const found = await searchQido(gw.services.db, { level, query, scopes, ...path });
    return projectQidoResults({ level, root: 'https://x/dicom-web', ...path }, found);
  };
  const oneSeries: ReadScope[] = [{ projectId: 'alpha', studyUid: S_MRA, seriesUid: SE_MRA_ANGIO }];

  it('shows a study-scoped link that study only', async () => {
    const r = await search('study', '', [{ projectId: 'alpha', studyUid: S_MRA }]);
    expect(col(r, T.StudyInstanceUID)).toEqual([S_MRA]);
    expect(col(r, T.NumberOfStudyRelatedInstances)).toEqual([11]);
  });

  it('shows a series-scoped link its series, and its study computed over that series alone', async () => {
    const r = await search('study', 'includefield=SOPClassesInStudy', oneSeries);
    expect(col(r, T.StudyInstanceUID)).toEqual([S_MRA]);
    expect(col(r, T.NumberOfStudyRelatedSeries)).toEqual([1]);
    expect(col(r, T.NumberOfStudyRelatedInstances)).toEqual([7]);
    expect(await search('series', '', oneSeries, { studyUid: S_MRA })).toHaveLength(1);
    expect(await search('instance', '', oneSeries)).toHaveLength(7);
    expect(await search('study', 'ModalitiesInStudy=MR', oneSeries)).toHaveLength(1);
    expect(await search('study', 'ModalitiesInStudy=CT', oneSeries)).toHaveLength(0);
  });

  it('unites several link scopes, paging over the union', async () => {
    const scopes: ReadScope[] = [...oneSeries, { projectId: 'beta', studyUid: S_CR }];
    expect(col(await search('study', '', scopes), T.StudyInstanceUID)).toEqual([S_MRA, S_CR]);
    expect(col(await search('study', 'limit=1&offset=1', scopes), T.StudyInstanceUID)).toEqual([S_CR]);
    expect(await search('instance', '', scopes)).toHaveLength(10);
    expect(await search('instance', 'Modality=CR', scopes)).toHaveLength(3);
  });
});

describe('bad queries, warnings and media types', () => {
  it.each([
    ['limit=ten', 'limit'],
    ['offset=-2', 'offset'],
    ['StudyDate=2001-01-01', 'StudyDate'],
    ['StudyDate=20011301', 'StudyDate'],
    ['StudyTime=25', 'StudyTime'],
    ['StudyInstanceUID=1.2.abc', 'StudyInstanceUID'],
    ['fuzzymatching=maybe', 'fuzzymatching'],
    ['PatientName.PatientID=Doe', 'PatientName.PatientID'],
    ['SeriesNumber=two', 'SeriesNumber'],
  ])('answers 400 for %s, naming the parameter', async (q, name) => {
    const a = await get(`/dicom-web/studies?${q}`);
    expect(a.status).toBe(400);
    expect((a.body as unknown as { errors: Array<{ message: string }> }).errors[0].message).toContain(name);
    expect(a.warning).toContain(name);
  });

  it.each([
    ['PatientNam=Doe', 'PatientNam'],
    ['includefield=NoSuchThing', 'NoSuchThing'],
  ])('ignores %s (no known attribute), answering as without it with Warning: 299', async (q, name) => {
    // PS3.18 §8.3.4: what the origin server does not support is ignored and reported (issue 12, deviation 7).
    const a = await get(`/dicom-web/studies?${q}`);
    expect(a.status).toBe(200);
    expect(col(a.body, T.StudyInstanceUID)).toEqual(ALL_STUDIES);
    expect(a.warning).toMatch(new RegExp(`^299 aperture ".*${name}`));
  });

  describe('a NUL byte in any query parameter (PostgreSQL cannot take one)', () => {
    const KEYS = [
      'PatientName',
      'PatientID',
      'PatientBirthDate',
      'PatientSex',
      'StudyDate',
      'StudyTime',
      'AccessionNumber',
      'StudyID',
      'StudyDescription',
      'ReferringPhysicianName',
      'ModalitiesInStudy',
      'SOPClassesInStudy',
      'StudyInstanceUID',
      'SeriesInstanceUID',
      'SOPInstanceUID',
      'SOPClassUID',
      'Modality',
      'SeriesNumber',
      'SeriesDescription',
      'InstanceNumber',
      'PerformedProcedureStepStartDate',
      '00100010',
      'ReferencedStudySequence.ReferencedSOPInstanceUID',
      'includefield',
      'limit',
      'offset',
      'fuzzymatching',
    ];
    const LEVELS = [
      '/studies',
      '/series',
      '/instances',
      `/studies/${S_CR}/series`,
      `/studies/${S_CR}/instances`,
      `/studies/${S_CR}/series/${SE_CR1}/instances`,
    ];
    const ROOTS = ['/dicom-web', '/projects/alpha/dicom-web'];

    it.each(ROOTS.flatMap((root) => LEVELS.map((level) => [root + level])))(
      'answers 400 naming the parameter at %s, for every matching key and reserved parameter',
      async (resource) => {
        for (const key of KEYS) {
          for (const value of ['%00', 'Doe%00', '%00*', '1%00']) {
            const a = await get(`${resource}?${key}=${value}`);
            expect([key, value, a.status]).toEqual([key, value, 400]);
            expect([key, a.body.errors?.[0]?.message]).toEqual([key, expect.stringContaining(key)]);
          }
        }
        // In a parameter's name too, and however it is combined with valid parameters.
        const named = await get(`${resource}?Patient%00Name=Doe`);
        expect(named.status).toBe(400);
        expect((await get(`${resource}?limit=5&PatientID=ok&StudyDescription=a%00b`)).status).toBe(400);
      },
    );
  });

  it('answers 400 for a malformed UID in the path', async () => {
    expect((await get('/dicom-web/studies/not-a-uid/series')).status).toBe(400);
  });

  it('clamps a limit above the maximum, with a warning', async () => {
    const a = await get('/dicom-web/instances?limit=50');
    expect(a.body).toHaveLength(20);
    expect(a.warning).toContain('maximum of 20');
    expect(a.warning).toContain('exceeded the limit of 20');
  });

  it('ignores keys it cannot match, naming them in a warning', async () => {
    const a = await get('/dicom-web/studies?Modality=CT&Rows=16');
    expect(col(a.body, T.StudyInstanceUID)).toEqual(ALL_STUDIES);
    expect(a.warning).toContain('not supported as matching keys');
    expect(a.warning).toContain('Modality, Rows');
    const inc = await get(`/dicom-web/studies/${S_CR}/series?includefield=Rows`);
    expect(inc.warning).toContain('not available at series level: Rows');
  });

  it('answers DICOM JSON for application/json too, and 406 for what it cannot produce', async () => {
    const json = await get('/dicom-web/studies', { accept: 'application/json' });
    expect(json.status).toBe(200);
    expect(json.contentType).toContain('application/json');
    const viaQuery = await get('/dicom-web/studies?accept=application/dicom%2Bjson', { accept: 'image/png' });
    expect(viaQuery.status).toBe(200);
    const png = await get('/dicom-web/studies', { accept: 'image/png' });
    expect(png.status).toBe(406);
    expect(png.warning).toContain('application/dicom+json');
  });

  it('answers one Native DICOM Model document per result as multipart/related XML when asked', async () => {
    for (const accept of ['multipart/related; type="application/dicom+xml"', 'application/dicom+xml']) {
      const res = await fetch(`${gw.url}/dicom-web/studies?PatientID=77654033`, { headers: { accept } });
      expect(res.status).toBe(200);
      const type = res.headers.get('content-type') ?? '';
      expect(type).toMatch(/^multipart\/related;.*type="application\/dicom\+xml"/);
      const boundary = /boundary=([^;]+)/.exec(type)?.[1];
      const body = await res.text();
      const parts = body.split(`--${boundary}`).filter((p) => p.includes('<NativeDicomModel'));
      expect(parts).toHaveLength(2);
      expect(parts[0]).toContain('Content-Type: application/dicom+xml');
      expect(parts[0]).toContain(`<Value number="1">${S_CR}</Value>`);
      expect(parts[0]).toContain('<FamilyName>Doe</FamilyName>');
    }
    const empty = await fetch(`${gw.url}/dicom-web/studies?PatientID=nobody`, {
      headers: { accept: 'application/dicom+xml' },
    });
    expect(empty.status).toBe(200);
    expect(await empty.text()).not.toContain('<NativeDicomModel');
  });
});

describe('through dicomweb-client', () => {
  const client = () => new api.DICOMwebClient({ url: `${gw.url}/dicom-web`, singlepart: false });

  it('searches studies, series and instances with query parameters', async () => {
    const peter = (await client().searchForStudies({
      queryParams: { PatientName: 'doe^peter', StudyDate: '20030101-' },
    })) as DicomJson[];
    expect(col(peter, T.StudyInstanceUID)).toEqual([S_CAROTIDS, S_MRA, S_BRAIN]);

    const series = (await client().searchForSeries({
      studyInstanceUID: S_MRA,
      queryParams: { SeriesNumber: '700' },
    })) as DicomJson[];
    expect(col(series, T.SeriesInstanceUID)).toEqual([SE_MRA_ANGIO]);

    const instances = (await client().searchForInstances({
      studyInstanceUID: S_MRA,
      seriesInstanceUID: SE_MRA_ANGIO,
      queryParams: { limit: '2', offset: '5', includefield: 'ImageType' },
    })) as DicomJson[];
    expect(col(instances, T.InstanceNumber)).toEqual([6, 7]);
    expect(instances[0]['00080008'].Value).toEqual(['DERIVED', 'SECONDARY', 'PROJECTION IMAGE']);

    const none = (await client().searchForStudies({ queryParams: { PatientID: 'nobody' } })) as DicomJson[];
    expect(none).toEqual([]);
  });
});

describe('sequence matching through the DICOM JSON', () => {
  // An RT Plan, whose beams are described in sequences; loaded last so the matrix above keeps its six studies.
  beforeAll(async () => {
    await ensureProject(gw.services.db, { id: 'gamma', name: 'Gamma' });
    const out = await ingestInstance(
      gw.services,
      readFileSync(`${SAMPLES}/rt-sr-seg/rtplan.dcm`),
      ['gamma'],
      'stow',
    );
    expect(out.ok).toBe(true);
  });

  it('matches an attribute of a sequence item, also nested, and returns the sequence', async () => {
    const root = '/projects/gamma/dicom-web/instances';
    const a = await get(`${root}?BeamSequence.TreatmentMachineName=unit001`);
    expect(a.body).toHaveLength(1);
    expect(a.body[0]['300A00B0'].vr).toBe('SQ');
    expect((await get(`${root}?BeamSequence.TreatmentMachineName=unit002`)).body).toEqual([]);
    expect((await get(`${root}?300A00B0.300A00B6.300A00B8=Y`)).body).toHaveLength(1);
    expect((await get(`${root}?300A00B0.300A00B6.300A00BC=1`)).body).toHaveLength(1);
    expect((await get(`${root}?300A00B0.300A00B6.300A00BC=2`)).body).toEqual([]);
  });

  it('reports sequence keys it cannot match (wildcards) instead of ignoring them silently', async () => {
    const a = await get('/projects/gamma/dicom-web/instances?BeamSequence.TreatmentMachineName=unit*');
    expect(a.body).toHaveLength(1);
    expect(a.warning).toContain('BeamSequence.TreatmentMachineName');
  });
});
