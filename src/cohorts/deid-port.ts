/**
 * What cohorts need of the de-identifier (src/dicom/deid, built on its own branch): the agreed shape of its API,
 * so that cohorts are written and wired against it while it is being built. Cohort code receives a Deidentifier
 * and never reaches into the de-identifier's internals.
 */

/** The ten options of PS3.15 Table E.1-1, as named switches. */
export const DEID_OPTION_NAMES = [
  'retainSafePrivate',
  'retainUIDs',
  'retainDeviceIdentity',
  'retainInstitutionIdentity',
  'retainPatientCharacteristics',
  'retainLongitudinalFullDates',
  'retainLongitudinalModifiedDates',
  'cleanDescriptors',
  'cleanStructuredContent',
  'cleanGraphics',
] as const;
export type DeidOptionName = (typeof DEID_OPTION_NAMES)[number];
export type DeidOptions = Record<DeidOptionName, boolean>;

/**
 * The switches a cohort request may set: the ten options, and Clean Pixel Data (PS3.15 E.3.1, CID 7050 113101),
 * which blacks out the burned-in regions the pixel rules name instead of withholding such objects.
 */
export const COHORT_OPTION_NAMES = [...DEID_OPTION_NAMES, 'cleanPixelData'] as const;
export type CohortOptionName = (typeof COHORT_OPTION_NAMES)[number];
export type CohortOptions = Record<CohortOptionName, boolean>;

/** Keys of one research project and one patient. */
export interface DeidKeys {
  uidSecret: Buffer;
  patientName: string;
  patientId: string;
  dateOffsetDays: number;
}

/** Identifying values of a source object, opaque to cohorts (the leak check reads them). */
export type IdentifyingValues = unknown;

/** A de-identified object, or why it was withheld (a reason code). */
export type DeidResult =
  | {
      bytes: Buffer;
      sourceUids: { study: string; series: string; sop: string };
      outputUids: { study: string; series: string; sop: string };
      uidMap: Array<[string, string]>;
      identifying: IdentifyingValues;
    }
  | { withheld: string };

/** The de-identifier's API as cohorts use it. */
export interface Deidentifier {
  /** `pixelsCleaned`: the caller blacked out every burned-in region (the output records Clean Pixel Data). */
  deidentify(
    part10: Buffer,
    options: DeidOptions,
    keys: DeidKeys,
    extra?: { pixelsCleaned?: boolean },
  ): DeidResult;
  leakCheck(
    output: Buffer,
    identifying: IdentifyingValues,
  ): { hits: Array<{ tagPath: string; kind: string }> };
  profileDescription(options: DeidOptions & { cleanPixelData?: boolean }): {
    name: string;
    version: string;
    edition: string;
    options: string[];
  };
}
