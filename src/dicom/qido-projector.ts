/**
 * Turns QIDO-RS result rows of the index into DICOM JSON answers (PS3.18 §10.6.3.3): picks the return attributes
 * per level, adds the computed ones, sends Type 2 attributes empty, builds RetrieveURL and absolute BulkDataURIs.
 * Pure: the rows come from src/index-db/qido.ts.
 */
import { absoluteBulkDataUris } from './bulk';
import type { DicomJson, DicomJsonElement } from './json';
import { attributeByTag } from './matching';
import {
  COMPUTED_SERIES,
  COMPUTED_STUDY,
  DEFAULT_TAGS,
  INSTANCE_RETURN,
  PRESENT_EVEN_IF_EMPTY,
  type QidoLevel,
  SERIES_RETURN,
  STUDY_RETURN,
  type WantedAttributes,
} from './qido-attributes';
import { Tag } from './tags';

/** One result row of the index: the level's stored DICOM JSON and the aggregates computed over the caller's scopes. */
export interface QidoRow {
  study_uid: string;
  series_uid?: string;
  sop_instance_uid?: string;
  study_json?: DicomJson;
  series_json?: DicomJson;
  instance_json?: DicomJson;
  agg_modalities?: string[] | null;
  agg_sop_classes?: string[] | null;
  agg_num_series?: number | null;
  agg_num_instances?: number | null;
  agg_series_instances?: number | null;
}

/** What the answer is for: the searched level, the resource path's UIDs, and the DICOMweb root URLs are built on. */
export interface QidoResultRequest {
  level: QidoLevel;
  studyUid?: string;
  seriesUid?: string;
  /** Absolute DICOMweb root the request came through. */
  root: string;
}

/** What the index found, and which levels and attributes its rows carry. */
export interface QidoFound {
  rows: QidoRow[];
  wanted: WantedAttributes;
  withStudy: boolean;
  withSeries: boolean;
}

/** Which attributes one level contributes to each result: decided once per search, applied to every row. */
interface LevelShape {
  all: boolean;
  tags: string[];
  has: ReadonlySet<string>;
  /** Attributes sent empty when the object lacks them: [tag, VR]. */
  empty: Array<[string, string]>;
}

function levelShape(all: boolean, defaults: readonly string[], extra: ReadonlySet<string>): LevelShape {
  const tags = [...new Set([...defaults, ...extra])];
  const empty = tags
    .filter((t) => !COMPUTED_STUDY.has(t) && !COMPUTED_SERIES.has(t))
    .filter((t) => PRESENT_EVEN_IF_EMPTY.has(t) || !DEFAULT_TAGS.has(t))
    .map((t): [string, string] => [t, attributeByTag(t).vr]);
  return { all, tags, has: new Set(tags), empty };
}

/** The DICOM JSON answers of a search's rows (PS3.18 §10.6.3.3), in the rows' order. */
export function projectQidoResults(request: QidoResultRequest, found: QidoFound): DicomJson[] {
  return found.rows.map(resultProjector(request, found));
}

/** Builds the function that turns a result row into its DICOM JSON answer. */
function resultProjector(
  search: QidoResultRequest,
  { wanted, withStudy, withSeries }: Omit<QidoFound, 'rows'>,
): (row: QidoRow) => DicomJson {
  const { level, root } = search;
  const study = withStudy
    ? levelShape(wanted.all, level === 'study' || !search.studyUid ? STUDY_RETURN : [], wanted.study)
    : undefined;
  const series = withSeries
    ? levelShape(wanted.all, level === 'series' || !search.seriesUid ? SERIES_RETURN : [], wanted.series)
    : undefined;
  const instance =
    level === 'instance' ? levelShape(wanted.all, INSTANCE_RETURN, wanted.instance) : undefined;

  return (row) => {
    const out: DicomJson = {};
    if (study && row.study_json) {
      copy(out, row.study_json, study, false);
      const put = (tag: string, el: DicomJsonElement) => {
        if (study.all || study.has.has(tag)) out[tag] = el;
      };
      put(Tag.ModalitiesInStudy, values('CS', [...(row.agg_modalities ?? [])].sort()));
      if (row.agg_sop_classes) put(Tag.SOPClassesInStudy, values('UI', [...row.agg_sop_classes].sort()));
      put(Tag.NumberOfStudyRelatedSeries, values('IS', [row.agg_num_series ?? 0]));
      put(Tag.NumberOfStudyRelatedInstances, values('IS', [row.agg_num_instances ?? 0]));
    }
    if (series && row.series_json) {
      copy(out, row.series_json, series, false);
      if (series.all || series.has.has(Tag.NumberOfSeriesRelatedInstances)) {
        out[Tag.NumberOfSeriesRelatedInstances] = values('IS', [row.agg_series_instances ?? 0]);
      }
    }
    let url = `${root}/studies/${row.study_uid}`;
    if (level !== 'study') url += `/series/${row.series_uid}`;
    if (instance && row.instance_json) {
      url += `/instances/${row.sop_instance_uid}`;
      copy(out, row.instance_json, instance, true);
      absoluteBulkDataUris(out, `${url}/bulk/`);
    }
    out[Tag.StudyInstanceUID] = values('UI', [row.study_uid]);
    if (level !== 'study') out[Tag.SeriesInstanceUID] = values('UI', [row.series_uid]);
    out[Tag.RetrieveURL] = values('UR', [url]);
    if (level !== 'series') out[Tag.InstanceAvailability] = values('CS', ['ONLINE']);
    // DICOM JSON is UTF-8 whatever the stored objects used (PS3.18 F.2).
    if (out[Tag.SpecificCharacterSet]) out[Tag.SpecificCharacterSet] = values('CS', ['ISO_IR 192']);
    const sorted: DicomJson = {};
    for (const tag of Object.keys(out).sort()) sorted[tag] = out[tag];
    return sorted;
  };
}

function values(vr: string, v: unknown[]): DicomJsonElement {
  return v.length ? { vr, Value: v } : { vr };
}

function copy(out: DicomJson, ds: DicomJson, shape: LevelShape, keepBulk: boolean): void {
  // Study and series JSON come from some instance; its bulk data belongs to that instance, not to this result.
  const usable = (el: DicomJsonElement | undefined) =>
    el !== undefined && (keepBulk || el.BulkDataURI === undefined);
  if (shape.all) {
    for (const tag of Object.keys(ds)) if (usable(ds[tag])) out[tag] = ds[tag];
  } else {
    for (const tag of shape.tags) if (usable(ds[tag])) out[tag] = ds[tag];
  }
  for (const [tag, vr] of shape.empty) if (!out[tag]) out[tag] = { vr };
}
