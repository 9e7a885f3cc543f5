/**
 * PS3.15 Annex E as data: Table E.1-1 (vendored from innolitics/dicom-standard, see README.md next to it), the ten
 * options as named switches, the CID 7050 codes that record them, and the rule that turns a row's cell (which
 * may be a combination such as X/Z/D) into the one action applied.
 */
import rows from './confidentiality_profile_attributes.json';
import safePrivate from './safe-private.json';
import tableE341 from './table-e3.4-1.json';

/** The ten options of PS3.15 E.3, each a named switch; all false is the Basic Profile alone. */
export interface DeidOptions {
  retainSafePrivate: boolean;
  retainUIDs: boolean;
  retainDeviceIdentity: boolean;
  retainInstitutionIdentity: boolean;
  retainPatientCharacteristics: boolean;
  retainLongitudinalFullDates: boolean;
  retainLongitudinalModifiedDates: boolean;
  cleanDescriptors: boolean;
  cleanStructuredContent: boolean;
  cleanGraphics: boolean;
}

export type OptionName = keyof DeidOptions;

export const BASIC_PROFILE: DeidOptions = {
  retainSafePrivate: false,
  retainUIDs: false,
  retainDeviceIdentity: false,
  retainInstitutionIdentity: false,
  retainPatientCharacteristics: false,
  retainLongitudinalFullDates: false,
  retainLongitudinalModifiedDates: false,
  cleanDescriptors: false,
  cleanStructuredContent: false,
  cleanGraphics: false,
};

/** Table E.1-1's column of each option (names as in the vendored JSON). */
export const OPTION_COLUMN: Record<OptionName, string> = {
  retainSafePrivate: 'rtnSafePrivOpt',
  retainUIDs: 'rtnUIDsOpt',
  retainDeviceIdentity: 'rtnDevIdOpt',
  retainInstitutionIdentity: 'rtnInstIdOpt',
  retainPatientCharacteristics: 'rtnPatCharsOpt',
  retainLongitudinalFullDates: 'rtnLongFullDatesOpt',
  retainLongitudinalModifiedDates: 'rtnLongModifDatesOpt',
  cleanDescriptors: 'cleanDescOpt',
  cleanStructuredContent: 'cleanStructContOpt',
  cleanGraphics: 'cleanGraphOpt',
};

/** PS3.16 CID 7050 (De-identification Method), DCM coding scheme. */
export const CID_7050: Record<'basic' | OptionName, { code: string; meaning: string }> = {
  basic: { code: '113100', meaning: 'Basic Application Confidentiality Profile' },
  cleanGraphics: { code: '113103', meaning: 'Clean Graphics Option' },
  cleanStructuredContent: { code: '113104', meaning: 'Clean Structured Content Option' },
  cleanDescriptors: { code: '113105', meaning: 'Clean Descriptors Option' },
  retainLongitudinalFullDates: {
    code: '113106',
    meaning: 'Retain Longitudinal Temporal Information Full Dates Option',
  },
  retainLongitudinalModifiedDates: {
    code: '113107',
    meaning: 'Retain Longitudinal Temporal Information Modified Dates Option',
  },
  retainPatientCharacteristics: { code: '113108', meaning: 'Retain Patient Characteristics Option' },
  retainDeviceIdentity: { code: '113109', meaning: 'Retain Device Identity Option' },
  retainUIDs: { code: '113110', meaning: 'Retain UIDs Option' },
  retainSafePrivate: { code: '113111', meaning: 'Retain Safe Private Option' },
  retainInstitutionIdentity: { code: '113112', meaning: 'Retain Institution Identity Option' },
};

/** CID 7050 code of the Clean Pixel Data Option: not a column of Table E.1-1, applied to the pixels by the caller. */
export const CLEAN_PIXEL_DATA = { code: '113101', meaning: 'Clean Pixel Data Option' } as const;

export const OPTION_NAMES = Object.keys(OPTION_COLUMN) as OptionName[];

/** One row of Table E.1-1. */
export interface ProfileRow {
  name: string;
  tag: string;
  id: string;
  stdCompIOD: string;
  basicProfile: string;
  [column: string]: string | undefined;
}

export const TABLE_E1_1: readonly ProfileRow[] = rows as ProfileRow[];

/** Where the vendored table comes from; frozen into every cohort's provenance. */
export const TABLE_EDITION =
  'PS3.15 Table E.1-1 as extracted by innolitics/dicom-standard at commit 7f4749d09ed3ef2fa70637d376d423a4b13523cd';
export const PROFILE_VERSION = '1';

/** The single action applied to one element. U* (X/Z/U*) is applied as "keep the sequence, map the UIDs inside". */
export type Action = 'X' | 'Z' | 'D' | 'K' | 'C' | 'U';

const exact = new Map<number, ProfileRow>();
let curveRow: ProfileRow | undefined;
const overlayRows = new Map<number, ProfileRow>();
let privateRow: ProfileRow | undefined;
for (const row of TABLE_E1_1) {
  const m = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(row.tag);
  if (m) {
    exact.set(parseInt(m[1] + m[2], 16) >>> 0, row);
  } else if (/^\(50XX,XXXX\)$/i.test(row.tag)) {
    curveRow = row;
  } else if (/^\(60XX,([0-9A-F]{4})\)$/i.test(row.tag)) {
    overlayRows.set(parseInt(row.tag.slice(6, 10), 16), row);
  } else if (/GGGG IS ODD/i.test(row.tag)) {
    privateRow = row;
  } else {
    throw new Error(`unexpected tag pattern in Table E.1-1: ${row.tag}`);
  }
}
if (!curveRow || !privateRow || overlayRows.size !== 2) throw new Error('Table E.1-1 is incomplete');
export const PRIVATE_ROW: ProfileRow = privateRow;

/** The row of Table E.1-1 that governs a tag, repeating groups (50xx, 60xx) and private tags included. */
export function rowForTag(tag: number): ProfileRow | undefined {
  const group = tag >>> 16;
  if (group & 1) return privateRow;
  const row = exact.get(tag);
  if (row) return row;
  if ((group & 0xff00) === 0x5000) return curveRow;
  if ((group & 0xff00) === 0x6000) return overlayRows.get(tag & 0xffff);
  return undefined;
}

/** Tag number of a row with a plain tag; for repeating groups, the first group (5000, 6000). */
export function rowTag(row: ProfileRow): number | undefined {
  const t = row.tag.replace(/X/gi, '0');
  const m = /^\(([0-9A-F]{4}),([0-9A-F]{4})\)$/i.exec(t);
  return m ? parseInt(m[1] + m[2], 16) >>> 0 : undefined;
}

/**
 * The action of a row under the options.
 *
 * Several enabled options can name a row (Beam Hold Transition DateTime: Retain Device Identity says K, Modified
 * Dates says C). Modified Dates wins on its rows, because keeping a real date would defeat the option the curator
 * chose to hide dates; otherwise any K wins over C (the curator asked to keep), and C over the Basic action.
 *
 * Combinations (X/Z, X/D, Z/D, X/Z/D, X/Z/U*) choose by the Type of the attribute in the object's IOD. This
 * de-identifier has no per-IOD module tables, so it applies the variant that is valid whatever the Type: D
 * where D is offered (a dummy satisfies Type 1), else Z (a zero-length value satisfies Type 2; carrying no value,
 * it discloses no more than X), and U* as "keep the sequence, apply the table inside" (its UIDs are mapped by
 * their own rows).
 */
export function actionFor(row: ProfileRow, options: DeidOptions): Action {
  if (
    options.retainLongitudinalModifiedDates &&
    row[OPTION_COLUMN.retainLongitudinalModifiedDates] !== undefined
  ) {
    return 'C';
  }
  let retain = false;
  let clean = false;
  for (const name of OPTION_NAMES) {
    if (!options[name]) continue;
    const cell = row[OPTION_COLUMN[name]];
    if (cell === 'K') retain = true;
    else if (cell === 'C') clean = true;
  }
  if (retain) return 'K';
  if (clean) return 'C';
  return resolveCombination(row.basicProfile);
}

export function resolveCombination(cell: string): Action {
  const parts = cell.split('/');
  if (parts.includes('D')) return 'D';
  if (parts.some((p) => p.startsWith('U'))) return parts.length > 1 ? 'K' : 'U';
  if (parts.includes('Z')) return 'Z';
  if (parts.includes('K')) return 'K';
  if (parts.includes('C')) return 'C';
  return 'X';
}

/** Throws for option sets PS3.15 does not allow together. */
export function checkOptions(options: DeidOptions): void {
  if (options.retainLongitudinalFullDates && options.retainLongitudinalModifiedDates) {
    throw new Error('Retain Longitudinal Full Dates and Modified Dates exclude each other');
  }
}

/** Safe private attributes (PS3.15 Table E.3.10-1 style): creator → element offsets (the low byte). */
interface SafePrivateEntry {
  creator: string;
  group: string;
  element: string;
  name: string;
}

const safeByCreator = new Map<string, Set<number>>();
for (const e of (safePrivate as { attributes: SafePrivateEntry[] }).attributes) {
  const key = `${e.group.toUpperCase()}|${e.creator.trim().toUpperCase()}`;
  let set = safeByCreator.get(key);
  if (!set) safeByCreator.set(key, (set = new Set()));
  set.add(parseInt(e.element, 16));
}

export const SAFE_PRIVATE_ATTRIBUTES: readonly SafePrivateEntry[] = (
  safePrivate as { attributes: SafePrivateEntry[] }
).attributes;

/** True when the private element `offset` (low byte) of `creator`'s block in `group` is on the safe list. */
export function isSafePrivate(group: number, creator: string, offset: number): boolean {
  const key = `${group.toString(16).padStart(4, '0').toUpperCase()}|${creator.trim().toUpperCase()}`;
  return safeByCreator.get(key)?.has(offset) ?? false;
}

/** The profile as recorded in provenance (with Clean Pixel Data when the caller cleans burned-in regions). */
export function profileDescription(options: DeidOptions & { cleanPixelData?: boolean }): {
  name: string;
  version: string;
  edition: string;
  options: string[];
} {
  return {
    name: 'DICOM PS3.15 Basic Application Level Confidentiality Profile',
    version: PROFILE_VERSION,
    edition: TABLE_EDITION,
    options: [
      ...(options.cleanPixelData ? [CLEAN_PIXEL_DATA.meaning] : []),
      ...OPTION_NAMES.filter((n) => options[n]).map((n) => CID_7050[n].meaning),
    ],
  };
}

/** One row of PS3.15 Table E.3.4-1: a content item's Concept Name code and Value Type, with actions per option. */
export interface ContentItemRow extends ProfileRow {
  codeValue: string;
  codingScheme: string;
  valueType: string;
}

/** Table E.3.4-1 (211 rows), as data: applied to SR content items under the Clean Structured Content Option. */
export const TABLE_E3_4_1: readonly ContentItemRow[] = (
  tableE341 as { rows: Array<Omit<ContentItemRow, 'tag' | 'id' | 'stdCompIOD'>> }
).rows.map((r) => ({ ...r, tag: '', id: '', stdCompIOD: 'Y' }) as ContentItemRow);

const contentItemRows = new Map<string, ContentItemRow>(
  TABLE_E3_4_1.map((r) => [`${r.codeValue}|${r.codingScheme}|${r.valueType}`, r]),
);

/** The Table E.3.4-1 row of a content item (Concept Name code value and scheme, Value Type), if listed. */
export function contentItemRow(
  codeValue: string,
  scheme: string,
  valueType: string,
): ContentItemRow | undefined {
  return contentItemRows.get(`${codeValue.trim()}|${scheme.trim()}|${valueType.trim().toUpperCase()}`);
}
