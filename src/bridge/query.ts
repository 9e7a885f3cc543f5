/**
 * QIDO-like keys for a C-FIND to a remote node, and its answers as DICOM JSON (PS3.18 F.2). Keys are matched by the
 * node (PS3.4 C.2.2: single value, wildcard, range, UID list), so only their syntax is checked here: a known
 * attribute, a short value without control characters.
 */
import { attributeByTag, lookupAttribute } from '../dicom/matching';
import type { DicomJson } from '../dicom/json';
import { BadRequestError } from '../errors';
import type { FindAnswer } from '../orthanc/remote-nodes';

export type FindLevel = 'study' | 'series';

/** Return keys asked at each level (PS3.4 C.6.2.1.2 Study Root: required and common optional keys). */
const RETURN_KEYS: Record<FindLevel, string[]> = {
  study: [
    'StudyInstanceUID',
    'StudyDate',
    'StudyTime',
    'AccessionNumber',
    'PatientName',
    'PatientID',
    'PatientBirthDate',
    'PatientSex',
    'StudyID',
    'StudyDescription',
    'ReferringPhysicianName',
    'ModalitiesInStudy',
    'NumberOfStudyRelatedSeries',
    'NumberOfStudyRelatedInstances',
  ],
  series: [
    'StudyInstanceUID',
    'SeriesInstanceUID',
    'Modality',
    'SeriesNumber',
    'SeriesDescription',
    'SeriesDate',
    'BodyPartExamined',
    'NumberOfSeriesRelatedInstances',
  ],
};

const MAX_KEYS = 32;
const MAX_VALUE = 256;

/** The C-FIND identifier (keyword -> value, '' for a return key) for QIDO-like `keys` at `level`. */
export function findKeys(level: FindLevel, keys: Record<string, string>): Record<string, string> {
  const entries = Object.entries(keys);
  if (entries.length > MAX_KEYS) throw new BadRequestError(`query: at most ${MAX_KEYS} keys`);
  const out: Record<string, string> = {};
  for (const k of RETURN_KEYS[level]) out[k] = '';
  for (const [key, value] of entries) {
    const info = lookupAttribute(key);
    if (!info || info.keyword === info.tag)
      throw new BadRequestError(`query: ${key.slice(0, 64)} is not a DICOM attribute keyword or tag`);
    // eslint-disable-next-line no-control-regex -- control characters are what this refuses
    if (typeof value !== 'string' || value.length > MAX_VALUE || /[\0-\x1f\\]/.test(value))
      throw new BadRequestError(
        `query: ${info.keyword} must be a single text value of at most ${MAX_VALUE} characters`,
      );
    if (info.vr === 'SQ') throw new BadRequestError(`query: ${info.keyword} is a sequence`);
    out[info.keyword] = value;
  }
  if (level === 'series' && !out.StudyInstanceUID)
    throw new BadRequestError('query: a series-level query needs StudyInstanceUID');
  return out;
}

const NUMERIC = new Set(['IS', 'DS', 'US', 'UL', 'SS', 'SL', 'FL', 'FD']);

/** One C-FIND answer as a DICOM JSON object (tags the dictionary knows, with their VR; group 0008,0005 kept). */
export function answerToDicomJson(answer: FindAnswer): DicomJson {
  const out: DicomJson = {};
  for (const tag of Object.keys(answer).sort()) {
    const info = attributeByTag(tag);
    if (info.vr === 'UN' || info.vr === 'SQ') continue;
    const raw = answer[tag];
    if (raw === '') {
      out[tag] = { vr: info.vr };
      continue;
    }
    const values = raw.split('\\');
    let value: unknown[];
    if (info.vr === 'PN') value = values.map((v) => ({ Alphabetic: v }));
    else if (NUMERIC.has(info.vr)) value = values.map((v) => (v.trim() === '' ? null : Number(v)));
    else value = values;
    out[tag] = { vr: info.vr, Value: value } as DicomJson[string];
  }
  return out;
}

/** The Study Instance UID of an answer, if it has one. */
export function answerStudyUid(answer: FindAnswer): string | undefined {
  const v = answer['0020000D']?.trim();
  return v ? v : undefined;
}

/** NumberOfStudyRelatedInstances of an answer, if the node gave one. */
export function answerInstanceCount(answer: FindAnswer): number | undefined {
  const v = Number(answer['00201208']);
  return Number.isInteger(v) && v >= 0 && answer['00201208']?.trim() ? v : undefined;
}
