import type { DicomJson } from './json';
import { Tag } from './tags';

/**
 * The Store Instances Response Module (PS3.18 Annex I) and the STOW-RS status code that goes with it
 * (PS3.18 Table 10.5.3-1). Pure: the handler decides what happened, this module says how to report it.
 */

/** An instance the request stored (or had already stored: re-sending is idempotent). */
export interface StoredInstance {
  sopClassUid: string;
  sopInstanceUid: string;
  studyInstanceUid: string;
  seriesInstanceUid: string;
  /** Warning Reason (0008,1196), PS3.18 I.2.1, when the instance was accepted with a warning. */
  warningReason?: number;
}

/** An instance (or a part that was not one) the request could not store. */
export interface FailedInstance {
  /** Known only when the object could be read far enough. */
  sopClassUid?: string;
  sopInstanceUid?: string;
  /** Failure Reason (0008,1197), PS3.18 I.2.2. */
  failureReason: number;
}

/** What one STOW-RS request did. */
export interface StoreOutcomes {
  stored: readonly StoredInstance[];
  failed: readonly FailedInstance[];
}

/** Warning Reasons of PS3.18 Table I.2-1. */
export const WarningReason = {
  CoercionOfDataElements: 0xb000,
  DataSetDoesNotMatchSopClass: 0xb007,
  ElementsDiscarded: 0xb006,
} as const;

/** URLs of the Studies Retrieve Transaction (PS3.18 §10.4) under a DICOMweb root. */
export function studyRetrieveUrl(root: string, studyUid: string): string {
  return `${root}/studies/${encodeURIComponent(studyUid)}`;
}

/** The Retrieve URL of one instance under a DICOMweb root. */
export function instanceRetrieveUrl(
  root: string,
  i: Pick<StoredInstance, 'studyInstanceUid' | 'seriesInstanceUid' | 'sopInstanceUid'>,
): string {
  return (
    `${studyRetrieveUrl(root, i.studyInstanceUid)}/series/${encodeURIComponent(i.seriesInstanceUid)}` +
    `/instances/${encodeURIComponent(i.sopInstanceUid)}`
  );
}

/**
 * Builds the Store Instances Response Module as DICOM JSON. `root` is the absolute DICOMweb root the request
 * came through, so every Retrieve URL points back at the gateway (never at the archive). The top-level
 * Retrieve URL (type 2) names the study of the request URL, or the single study every stored instance
 * belongs to; it is empty when the request stored into several studies or none.
 */
export function buildStoreInstancesResponse(
  root: string,
  outcomes: StoreOutcomes,
  requestStudyUid?: string,
): DicomJson {
  const studies = new Set(outcomes.stored.map((s) => s.studyInstanceUid));
  const studyUid = requestStudyUid ?? (studies.size === 1 ? [...studies][0] : undefined);
  // Keys (and item keys) are added in ascending tag order, as readers of DICOM JSON expect.
  const ds: DicomJson = {
    [Tag.RetrieveURL]: studyUid ? { vr: 'UR', Value: [studyRetrieveUrl(root, studyUid)] } : { vr: 'UR' },
  };
  if (outcomes.failed.length > 0) {
    ds[Tag.FailedSOPSequence] = {
      vr: 'SQ',
      Value: outcomes.failed.map((f) => {
        const item: DicomJson = {};
        if (f.sopClassUid) item[Tag.ReferencedSOPClassUID] = { vr: 'UI', Value: [f.sopClassUid] };
        if (f.sopInstanceUid) item[Tag.ReferencedSOPInstanceUID] = { vr: 'UI', Value: [f.sopInstanceUid] };
        item[Tag.FailureReason] = { vr: 'US', Value: [f.failureReason] };
        return item;
      }),
    };
  }
  if (outcomes.stored.length > 0) {
    ds[Tag.ReferencedSOPSequence] = {
      vr: 'SQ',
      Value: outcomes.stored.map((s) => {
        const item: DicomJson = {
          [Tag.ReferencedSOPClassUID]: { vr: 'UI', Value: [s.sopClassUid] },
          [Tag.ReferencedSOPInstanceUID]: { vr: 'UI', Value: [s.sopInstanceUid] },
          [Tag.RetrieveURL]: { vr: 'UR', Value: [instanceRetrieveUrl(root, s)] },
        };
        if (s.warningReason !== undefined) item[Tag.WarningReason] = { vr: 'US', Value: [s.warningReason] };
        return item;
      }),
    };
  }
  return ds;
}

/** True for Failure Reasons meaning the object itself could not be read (PS3.18 I.2.2 "Cannot understand", Cxxx). */
export function isSyntaxFailure(reason: number): boolean {
  return reason >= 0xc000 && reason <= 0xcfff;
}

/** True for Failure Reasons that say the server, not the object, was the problem (Out of resources, processing failure). */
export function isServerFailure(reason: number): boolean {
  return (reason >= 0xa700 && reason <= 0xa7ff) || reason === 0x0110;
}

/**
 * The HTTP status of a STOW-RS answer (PS3.18 Table 10.5.3-1): 200 when everything was stored without warnings;
 * 202 when some instances were stored and others failed or carry warnings; when nothing was stored, 400 if
 * every part was unreadable (bad syntax), 503 if only the server's own trouble stopped them (so a client retries),
 * and 409 for conflicts or a mixture of reasons (e.g. Study Instance UID mismatch, duplicate SOP Instance UID).
 * An empty request (no parts at all) is bad syntax.
 */
export function storeResponseStatus(outcomes: StoreOutcomes): number {
  const { stored, failed } = outcomes;
  if (stored.length > 0) {
    if (failed.length === 0 && stored.every((s) => s.warningReason === undefined)) return 200;
    return 202;
  }
  if (failed.length === 0) return 400;
  if (failed.every((f) => isSyntaxFailure(f.failureReason))) return 400;
  if (failed.every((f) => isServerFailure(f.failureReason))) return 503;
  return 409;
}
