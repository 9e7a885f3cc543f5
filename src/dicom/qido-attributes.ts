/**
 * The QIDO-RS attribute tables of PS3.18 §10.6.3.3: which level holds an attribute, the default return
 * attributes per level (Tables 6.7.1-2 and 6.7.1-2a), which of them are computed by the archive and which are
 * sent empty when an object lacks them. Pure data and lookups; the index and the result projector share them.
 */
import { SERIES_LEVEL_TAGS, STUDY_LEVEL_TAGS, Tag } from './tags';

export type QidoLevel = 'study' | 'series' | 'instance';

/** What one search returns per level: attributes wanted beyond each level's defaults (or all of them). */
export interface WantedAttributes {
  all: boolean;
  study: Set<string>;
  series: Set<string>;
  instance: Set<string>;
}

/** Study above series above instance: a key of a lower level than the search cannot match. */
export const LEVEL_RANK: Record<QidoLevel, number> = { study: 0, series: 1, instance: 2 };

/** Attributes the index computes rather than copies (PS3.18 Table 6.7.1-2 / 2a). */
export const COMPUTED_STUDY: ReadonlySet<string> = new Set([
  Tag.ModalitiesInStudy,
  Tag.SOPClassesInStudy,
  Tag.NumberOfStudyRelatedSeries,
  Tag.NumberOfStudyRelatedInstances,
]);
export const COMPUTED_SERIES: ReadonlySet<string> = new Set([Tag.NumberOfSeriesRelatedInstances]);
const STUDY_TAGS: ReadonlySet<string> = new Set(STUDY_LEVEL_TAGS);
const SERIES_TAGS: ReadonlySet<string> = new Set(SERIES_LEVEL_TAGS);

/** Default return attributes per level: PS3.18 Table 6.7.1-2 (study), 6.7.1-2a (series, instance). */
export const STUDY_RETURN = [
  Tag.SpecificCharacterSet,
  Tag.StudyDate,
  Tag.StudyTime,
  Tag.AccessionNumber,
  Tag.InstanceAvailability,
  Tag.ModalitiesInStudy,
  Tag.ReferringPhysicianName,
  Tag.TimezoneOffsetFromUTC,
  Tag.StudyDescription, // not required, but every study browser shows it
  Tag.RetrieveURL,
  Tag.PatientName,
  Tag.PatientID,
  Tag.PatientBirthDate,
  Tag.PatientSex,
  Tag.StudyInstanceUID,
  Tag.StudyID,
  Tag.NumberOfStudyRelatedSeries,
  Tag.NumberOfStudyRelatedInstances,
];
export const SERIES_RETURN = [
  Tag.SpecificCharacterSet,
  Tag.Modality,
  Tag.TimezoneOffsetFromUTC,
  Tag.SeriesDescription,
  Tag.RetrieveURL,
  Tag.StudyInstanceUID,
  Tag.SeriesInstanceUID,
  Tag.SeriesNumber,
  Tag.NumberOfSeriesRelatedInstances,
  Tag.PerformedProcedureStepStartDate,
  Tag.PerformedProcedureStepStartTime,
  Tag.RequestAttributesSequence,
];
export const INSTANCE_RETURN = [
  Tag.SpecificCharacterSet,
  Tag.SOPClassUID,
  Tag.SOPInstanceUID,
  Tag.InstanceAvailability,
  Tag.TimezoneOffsetFromUTC,
  Tag.RetrieveURL,
  Tag.StudyInstanceUID,
  Tag.SeriesInstanceUID,
  Tag.InstanceNumber,
  Tag.Rows,
  Tag.Columns,
  Tag.BitsAllocated,
  Tag.NumberOfFrames,
];
/** Type 2 return attributes: present, empty when the object has no value. */
export const PRESENT_EVEN_IF_EMPTY: ReadonlySet<string> = new Set([
  Tag.StudyDate,
  Tag.StudyTime,
  Tag.AccessionNumber,
  Tag.ReferringPhysicianName,
  Tag.PatientName,
  Tag.PatientID,
  Tag.PatientBirthDate,
  Tag.PatientSex,
  Tag.StudyID,
  Tag.Modality,
  Tag.SeriesNumber,
  Tag.InstanceNumber,
]);

/** The level whose data holds an attribute. */
export function attributeLevel(tag: string): QidoLevel {
  if (COMPUTED_STUDY.has(tag) || STUDY_TAGS.has(tag)) return 'study';
  if (COMPUTED_SERIES.has(tag) || SERIES_TAGS.has(tag)) return 'series';
  return 'instance';
}

/** Defaults that are left out rather than sent empty when an object lacks them (Type 3 / conditional). */
export const DEFAULT_TAGS: ReadonlySet<string> = new Set([
  ...STUDY_RETURN,
  ...SERIES_RETURN,
  ...INSTANCE_RETURN,
]);
