/**
 * The PS3.15 Annex E de-identifier: Part-10 bytes in, de-identified Part-10 bytes out, driven by Table E.1-1.
 * Pure: no I/O, no clock, no randomness — the same input, options and keys always give the same bytes.
 */
import { createHmac } from 'node:crypto';
import { DicomParseError } from '../structure';
import {
  type Dataset,
  type Element,
  PIXEL_DATA,
  TS_EXPLICIT_LE,
  findElement,
  hexTag,
  rawString,
  readPart10,
  writePart10,
  dictionaryVr,
} from './codec';
import {
  type Action,
  CID_7050,
  CLEAN_PIXEL_DATA,
  type DeidOptions,
  OPTION_NAMES,
  PROFILE_VERSION,
  type ProfileRow,
  actionFor,
  checkOptions,
  contentItemRow,
  isSafePrivate,
  rowForTag,
} from './profile';
import { type Charset, charsetOf, decodeText, encodeText } from './text';
import {
  type IdentifyingValue,
  type IdentifyingValues,
  identifyingKind,
  normalise,
  redactText,
} from './identifying';

export type { DeidOptions } from './profile';
export type { IdentifyingValues } from './identifying';

/** Per research project and patient; chosen and kept by the caller (PostgreSQL), never derived here. */
export interface DeidKeys {
  /** Per research project: UIDs are HMAC-SHA256 of the source UID under this secret. */
  uidSecret: Buffer;
  /** Pseudonyms written into Patient's Name (0010,0010) and Patient ID (0010,0020). */
  patientName: string;
  patientId: string;
  /** Per patient per research project; used only with Retain Longitudinal Temporal Information Modified Dates. */
  dateOffsetDays: number;
}

export interface InstanceUids {
  study: string;
  series: string;
  sop: string;
}

export interface DeidResult {
  bytes: Buffer;
  sourceUids: InstanceUids;
  outputUids: InstanceUids;
  /** Every UID replaced, [source, output], in first-seen order, without duplicates. */
  uidMap: Array<[string, string]>;
  /** What identified the source: input of leakCheck. Holds PHI: keep in memory, never log or queue it. */
  identifying: IdentifyingValues;
}

/** Reason codes of an instance that is not exported (no PHI). */
export type WithheldReason =
  'unreadable' | 'missing-uids' | 'burned-in-annotation' | 'burned-in-annotation-likely';

export interface DeidWithheld {
  withheld: WithheldReason;
}

/** Modalities whose images routinely carry burned-in text (PS3.15 E.3.1 and issue 10 item 3). */
const BURNED_IN_MODALITIES = new Set(['US', 'SC', 'XA', 'ES']);
/** Secondary Capture Image Storage and its multi-frame variants (PS3.4 B.5). */
const SECONDARY_CAPTURE_PREFIX = '1.2.840.10008.5.1.4.1.1.7';

/** Implementation Class UID of the de-identifier's output (a 2.25 UUID-derived root, PS3.5 B.2). */
export const IMPLEMENTATION_CLASS_UID = '2.25.167494215930116620349587216593713640173';
const IMPLEMENTATION_VERSION = `APERTURE_DEID_${PROFILE_VERSION}`;

/** HMAC-SHA256 of the UID under the secret, first 128 bits as a 2.25 UID (PS3.5 B.2): at most 44 characters. */
export function mapUid(uid: string, secret: Buffer): string {
  const digest = createHmac('sha256', secret).update(uid, 'latin1').digest();
  return `2.25.${BigInt('0x' + digest.subarray(0, 16).toString('hex')).toString(10)}`;
}

/** Code components of a coded entry: terminology, not free text, so a dummy sequence keeps them. */
const CODE_COMPONENTS = new Set([0x00080100, 0x00080102, 0x00080103, 0x00080104, 0x00080119, 0x00080120]);
const TEXT_VRS = new Set(['LO', 'SH', 'ST', 'LT', 'UT', 'UC', 'PN']);
const STRING_VRS = new Set([...TEXT_VRS, ...['AE', 'AS', 'CS', 'DA', 'DS', 'DT', 'IS', 'TM', 'UI', 'UR']]);

const TAG = {
  specificCharacterSet: 0x00080005,
  sopClassUid: 0x00080016,
  sopInstanceUid: 0x00080018,
  modality: 0x00080060,
  patientName: 0x00100010,
  patientId: 0x00100020,
  studyInstanceUid: 0x0020000d,
  seriesInstanceUid: 0x0020000e,
  burnedIn: 0x00280301,
  patientIdentityRemoved: 0x00120062,
  deidMethod: 0x00120063,
  deidMethodCodes: 0x00120064,
  longitudinalModified: 0x00280303,
} as const;

/** How text outside the table is treated inside a sequence the table said to dummy (D) or clean (C). */
type Mode = 'keep' | 'dummy' | 'clean';

interface Run {
  options: DeidOptions;
  keys: DeidKeys;
  uidMap: Map<string, string>;
  identifying: IdentifyingValue[];
  /** Values of attributes passed through unchanged: free text equal to one of them is not evidence of a leak. */
  kept: Set<string>;
  /** The identifying values of the whole object (from a first pass), which clean (C) removes from text. */
  redactWith: IdentifyingValue[];
}

/** What the caller did before de-identifying, to be recorded in the output. */
export interface DeidExtra {
  /**
   * The caller blacked out every burned-in region its pixel rules name (src/dicom/deid/pixels.ts) and set Burned In
   * Annotation NO: the output lists the Clean Pixel Data Option (113101) among its methods.
   */
  pixelsCleaned?: boolean;
}

/** De-identifies one Part-10 object under the Basic Profile and the options; or says why it is withheld. */
export function deidentify(
  part10: Buffer,
  options: DeidOptions,
  keys: DeidKeys,
  extra: DeidExtra = {},
): DeidResult | DeidWithheld {
  checkOptions(options);
  // A fractional offset would shift DA and DT differently; the caller's key is a whole number of days by contract.
  if (!Number.isInteger(keys.dateOffsetDays))
    throw new RangeError('dateOffsetDays must be a whole number of days');
  let parsed;
  try {
    parsed = readPart10(part10);
  } catch (err) {
    if (err instanceof DicomParseError || err instanceof RangeError || err instanceof Error) {
      return { withheld: 'unreadable' };
    }
    throw err;
  }
  const ds = parsed.dataset;
  const str = (tag: number) => {
    const e = findElement(ds, tag);
    return e?.value ? rawString(e) : undefined;
  };
  const sourceUids = {
    study: str(TAG.studyInstanceUid) ?? '',
    series: str(TAG.seriesInstanceUid) ?? '',
    sop: str(TAG.sopInstanceUid) ?? '',
  };
  const sopClass = str(TAG.sopClassUid) ?? '';
  if (!sourceUids.study || !sourceUids.series || !sourceUids.sop || !sopClass) {
    return { withheld: 'missing-uids' };
  }
  const burnedIn = str(TAG.burnedIn)?.trim().toUpperCase();
  const hasPixels = ds.some((e) => e.tag === PIXEL_DATA || e.tag === 0x7fe00008 || e.tag === 0x7fe00009);
  if (burnedIn === 'YES') return { withheld: 'burned-in-annotation' };
  if (burnedIn !== 'NO' && hasPixels) {
    const modality = str(TAG.modality)?.trim().toUpperCase() ?? '';
    if (BURNED_IN_MODALITIES.has(modality) || sopClass.startsWith(SECONDARY_CAPTURE_PREFIX)) {
      return { withheld: 'burned-in-annotation-likely' };
    }
  }

  const cs = charsetOf(findElement(ds, TAG.specificCharacterSet)?.value);
  // Two passes when something may be cleaned (C on text): cleaning a descriptor must know every identifying value
  // of the object, wherever it comes. Only these options turn a text row into C.
  const mayClean =
    options.cleanDescriptors ||
    options.cleanStructuredContent ||
    options.cleanGraphics ||
    options.retainDeviceIdentity ||
    options.retainPatientCharacteristics;
  let redactWith: IdentifyingValue[] = [];
  if (mayClean) {
    const first: Run = { options, keys, uidMap: new Map(), identifying: [], kept: new Set(), redactWith: [] };
    processDataset(ds, first, cs, 'keep', '', true);
    redactWith = dedupe(first.identifying);
  }
  const run: Run = { options, keys, uidMap: new Map(), identifying: [], kept: new Set(), redactWith };
  const out = processDataset(ds, run, cs, 'keep', '', true);
  addDeidentificationAttributes(out, options, extra.pixelsCleaned === true);
  out.sort((a, b) => a.tag - b.tag);

  const outUid = (u: string) => (options.retainUIDs ? u : (run.uidMap.get(u) ?? mapUid(u, keys.uidSecret)));
  const outputUids = {
    study: outUid(sourceUids.study),
    series: outUid(sourceUids.series),
    sop: outUid(sourceUids.sop),
  };
  const encapsulated = ds.some((e) => e.tag === PIXEL_DATA && e.encapsulated);
  const ts = encapsulated ? parsed.transferSyntaxUid : TS_EXPLICIT_LE;
  const meta: Dataset = [
    { tag: 0x00020001, vr: 'OB', value: Buffer.from([0, 1]) },
    { tag: 0x00020002, vr: 'UI', value: uidBytes(sopClass) },
    { tag: 0x00020003, vr: 'UI', value: uidBytes(outputUids.sop) },
    { tag: 0x00020010, vr: 'UI', value: uidBytes(ts) },
    { tag: 0x00020012, vr: 'UI', value: uidBytes(IMPLEMENTATION_CLASS_UID) },
    { tag: 0x00020013, vr: 'SH', value: Buffer.from(IMPLEMENTATION_VERSION, 'latin1') },
  ];
  // A value the profile keeps elsewhere in the object (Manufacturer equal to an Institution Name, a private tag
  // repeating the model name) is no leak; names, dates and UIDs are never excused. Nor is what the
  // de-identifier writes itself (dummies, pseudonyms).
  const kept = [...run.kept].map(normalise);
  const written = new Set([DUMMY_TEXT, keys.patientName, keys.patientId].map(normalise));
  const identifying = run.identifying.filter((v) => {
    const n = normalise(v.value);
    if (written.has(n) || (v.kind === 'name' && written.has(normalise(v.value.replace(/\^/g, ' ')))))
      return false;
    if (v.kind === 'name' || v.kind === 'date' || v.kind === 'uid') return true;
    return !kept.some((k) => k.includes(n));
  });
  return {
    bytes: writePart10(meta, out),
    sourceUids,
    outputUids,
    uidMap: [...run.uidMap.entries()],
    identifying: dedupe(identifying),
  };
}

function dedupe(values: IdentifyingValue[]): IdentifyingValue[] {
  const seen = new Set<string>();
  return values.filter((v) => {
    const k = `${v.kind}\u0000${v.value}`;
    if (seen.has(k)) return false;
    seen.add(k);
    return true;
  });
}

function uidBytes(uid: string): Buffer {
  return Buffer.from(uid.length & 1 ? uid + '\0' : uid, 'latin1');
}

function stringBytes(s: string, vr: string): Buffer {
  const b = Buffer.from(s, 'latin1');
  return b.length & 1 ? Buffer.concat([b, Buffer.from([vr === 'UI' ? 0 : 0x20])]) : b;
}

/** Processes one data set (top level or an item): returns the kept and replaced elements. */
function processDataset(
  ds: Dataset,
  run: Run,
  inherited: Charset,
  mode: Mode,
  path: string,
  top: boolean,
): Dataset {
  const own = findElement(ds, TAG.specificCharacterSet);
  const cs = own ? charsetOf(own.value, inherited) : inherited;
  const out: Dataset = [];
  // Private creators are kept only when an element of their block is kept (decided after the block's elements).
  const creators = new Map<number, Element>();
  const usedCreators = new Set<number>();
  for (const e of ds) {
    const group = e.tag >>> 16;
    if (group & 1 && (e.tag & 0xffff) >= 0x10 && (e.tag & 0xffff) <= 0xff) creators.set(e.tag, e);
  }
  for (const e of ds) {
    const group = e.tag >>> 16;
    const elementPath = `${path}${hexTag(e.tag)}`;
    if (group & 1) {
      const el = e.tag & 0xffff;
      if (el >= 0x10 && el <= 0xff) continue; // creators: written below if used
      const creatorTag = ((group << 16) | (el >>> 8)) >>> 0;
      const creator = creators.get(creatorTag);
      const creatorName = creator ? rawString(creator) : '';
      if (
        run.options.retainSafePrivate &&
        creator &&
        el >= 0x1000 &&
        isSafePrivate(group, creatorName, el & 0xff)
      ) {
        out.push(
          e.items
            ? {
                ...e,
                items: e.items.map((it, i) =>
                  processDataset(it, run, cs, mode, `${elementPath}[${i}].`, false),
                ),
              }
            : e,
        );
        usedCreators.add(creatorTag);
        noteKept(e, run, cs);
      } else {
        collect(e, 'private', run, cs);
      }
      continue;
    }
    if ((e.tag & 0xffff) === 0 || group === 0x0002) continue; // group lengths (retired) and stray File Meta
    if (top && isDeidentificationAttribute(e.tag)) continue; // rewritten below
    const row = rowForTag(e.tag);
    const action = decideAction(e, row, run.options, mode);
    const result = apply(e, action, row, run, cs, mode, elementPath);
    if (result) out.push(result);
  }
  for (const tag of usedCreators) {
    const c = creators.get(tag);
    if (c) out.push(c);
  }
  if (usedCreators.size) out.sort((a, b) => a.tag - b.tag);
  return out;
}

function isDeidentificationAttribute(tag: number): boolean {
  return (
    tag === TAG.patientIdentityRemoved ||
    tag === TAG.deidMethod ||
    tag === TAG.deidMethodCodes ||
    tag === TAG.longitudinalModified
  );
}

/** Overlay groups: their bitmaps cannot be cleaned, and a module without its data is invalid, so all of it goes. */
function isOverlayOrCurve(tag: number): boolean {
  const g = tag >>> 16;
  return (g & 0xff00) === 0x6000 || (g & 0xff00) === 0x5000;
}

/** The action applied to one standard element. */
export function decideAction(
  e: Element,
  row: ProfileRow | undefined,
  options: DeidOptions,
  mode: Mode,
): Action {
  if (isOverlayOrCurve(e.tag)) return 'X';
  if (row) return actionFor(row, options);
  if (e.tag === TAG.specificCharacterSet) return 'K';
  // Standard attributes that Table E.1-1 does not list are not identifying; those no dictionary knows cannot be
  // judged and are removed.
  const known = dictionaryVr(e.tag);
  if (!known) return 'X';
  if (mode !== 'keep' && TEXT_VRS.has(e.vr) && !CODE_COMPONENTS.has(e.tag))
    return mode === 'dummy' ? 'D' : 'C';
  return 'K';
}

function apply(
  e: Element,
  action: Action,
  row: ProfileRow | undefined,
  run: Run,
  cs: Charset,
  mode: Mode,
  path: string,
): Element | undefined {
  if (e.items) {
    switch (action) {
      case 'X':
        collect(e, row?.name ?? '', run, cs);
        return undefined;
      case 'Z':
        collect(e, row?.name ?? '', run, cs);
        return { tag: e.tag, vr: 'SQ', items: [] };
      default: {
        const childMode: Mode = action === 'D' ? 'dummy' : action === 'C' ? 'clean' : mode;
        if (e.tag === CONTENT_SEQUENCE && run.options.cleanStructuredContent) {
          const items: Dataset[] = [];
          e.items.forEach((item, i) => {
            const out = processContentItem(item, run, cs, childMode, `${path}[${i}].`);
            if (out) items.push(out);
          });
          return { tag: e.tag, vr: 'SQ', items };
        }
        return {
          tag: e.tag,
          vr: 'SQ',
          items: e.items.map((item, i) => processDataset(item, run, cs, childMode, `${path}[${i}].`, false)),
        };
      }
    }
  }
  if (e.encapsulated) {
    // Pixel data is not in Table E.1-1; burned-in text is handled by withholding, not by the table.
    return action === 'X' ? undefined : e;
  }
  if (e.tag === TAG.patientName && action !== 'K') {
    collect(e, row?.name ?? '', run, cs);
    return { tag: e.tag, vr: 'PN', value: stringBytes(run.keys.patientName, 'PN') };
  }
  if (e.tag === TAG.patientId && action !== 'K') {
    collect(e, row?.name ?? '', run, cs);
    return { tag: e.tag, vr: 'LO', value: stringBytes(run.keys.patientId, 'LO') };
  }
  switch (action) {
    case 'K':
      noteKept(e, run, cs);
      return e;
    case 'X':
      collect(e, row?.name ?? '', run, cs);
      return undefined;
    case 'Z':
      collect(e, row?.name ?? '', run, cs);
      return { tag: e.tag, vr: e.vr, value: Buffer.alloc(0) };
    case 'D':
      collect(e, row?.name ?? '', run, cs);
      return { tag: e.tag, vr: e.vr, value: dummyValue(e, run) };
    case 'U':
      if (e.vr !== 'UI' && e.vr !== 'UN') {
        collect(e, row?.name ?? '', run, cs);
        return { tag: e.tag, vr: e.vr, value: dummyValue(e, run) };
      }
      return { tag: e.tag, vr: 'UI', value: mapUids(e, run) };
    case 'C':
      return clean(e, row, run, cs);
  }
}

const CONTENT_SEQUENCE = 0x0040a730;
const CONCEPT_NAME_CODE_SEQUENCE = 0x0040a043;
const VALUE_TYPE = 0x0040a040;
/** The attribute holding a content item's value, for the value types whose value is one element (PS3.3 C.17.3). */
const VALUE_ELEMENT: Record<string, number> = {
  TEXT: 0x0040a160,
  DATE: 0x0040a121,
  TIME: 0x0040a122,
  DATETIME: 0x0040a120,
  PNAME: 0x0040a123,
  UIDREF: 0x0040a124,
};

/**
 * One SR content item under the Clean Structured Content Option (PS3.15 E.3.4): a Concept Name listed in Table
 * E.3.4-1 for the item's Value Type gets that row's action under the options in force — X removes the item with its
 * children, D dummies its value (and the text of the item), K keeps its value, C cleans it (text cleaned of the
 * object's identifying values, dates shifted under Modified Dates). X/D gives D, as for Table E.1-1 (the item may
 * be required by its template). An item the table does not list is cleaned as before. Children are content items
 * of their own and get their own rows.
 */
function processContentItem(
  item: Dataset,
  run: Run,
  cs: Charset,
  mode: Mode,
  path: string,
): Dataset | undefined {
  const concept = findElement(item, CONCEPT_NAME_CODE_SEQUENCE)?.items?.[0];
  const valueType = findElement(item, VALUE_TYPE);
  const code = concept && findElement(concept, 0x00080100);
  const scheme = concept && findElement(concept, 0x00080102);
  const row =
    code && scheme && valueType
      ? contentItemRow(rawString(code), rawString(scheme), rawString(valueType))
      : undefined;
  if (!row) return processDataset(item, run, cs, mode, path, false);
  let action = actionFor(row, run.options);
  if (action === 'Z' || action === 'U') action = 'D';
  if (action === 'X') {
    collect({ tag: CONTENT_SEQUENCE, vr: 'SQ', items: [item] }, row.name, run, cs);
    return undefined;
  }
  const itemMode: Mode = action === 'D' ? 'dummy' : action === 'C' ? 'clean' : 'keep';
  const out = processDataset(item, run, cs, itemMode, path, false);
  const valueTag = VALUE_ELEMENT[row.valueType];
  const original = valueTag === undefined ? undefined : findElement(item, valueTag);
  if (!original?.value) return out;
  let value: Element | undefined;
  if (action === 'K') {
    noteKept(original, run, cs);
    value = original;
  } else if (action === 'D') {
    collect(original, row.name, run, cs);
    value = { tag: original.tag, vr: original.vr, value: dummyValue(original, run) };
  } else {
    value =
      original.vr === 'UI'
        ? { ...original, value: mapUids(original, run) }
        : clean(original, undefined, run, cs);
  }
  const at = out.findIndex((x) => x.tag === valueTag);
  if (at >= 0 && value) out[at] = value;
  else if (at >= 0) out.splice(at, 1);
  else if (value) {
    out.push(value);
    out.sort((a, b) => a.tag - b.tag);
  }
  return out;
}

function mapUids(e: Element, run: Run): Buffer {
  const values = rawString(e).split('\\');
  const mapped = values.map((v) => {
    const uid = v.trim().replace(/\0+$/, '');
    if (!uid) return '';
    let m = run.uidMap.get(uid);
    if (!m) {
      m = mapUid(uid, run.keys.uidSecret);
      run.uidMap.set(uid, m);
      run.identifying.push({ kind: 'uid', value: uid });
    }
    return m;
  });
  return uidBytes(mapped.join('\\'));
}

const DUMMY_TEXT = 'ANONYMIZED';
const DICOM_UID_ROOT = '1.2.840.10008.';

/** A non-zero-length value of the element's VR that carries no information (D). */
function dummyValue(e: Element, run: Run): Buffer {
  const len = e.value?.length ?? 0;
  switch (e.vr) {
    case 'DA':
      return stringBytes('19000101', 'DA');
    case 'DT':
      return stringBytes('19000101000000', 'DT');
    case 'TM':
      return stringBytes('000000', 'TM');
    case 'DS':
    case 'IS':
      return stringBytes('0', e.vr);
    case 'AS':
      return stringBytes('000Y', 'AS');
    case 'UI':
      return uidBytes(
        e.value
          ? rawString(e)
              .split('\\')
              .map((u) => (u ? mapUid(u.trim(), run.keys.uidSecret) : ''))
              .join('\\')
          : '',
      );
    case 'UR':
      return stringBytes('urn:x-aperture:anonymized', 'UR');
    case 'CS':
    case 'AE':
    case 'LO':
    case 'SH':
    case 'ST':
    case 'LT':
    case 'UT':
    case 'UC':
    case 'PN':
      return stringBytes(DUMMY_TEXT, e.vr);
    case 'AT':
      return Buffer.alloc(4);
    case 'US':
    case 'SS':
      return Buffer.alloc(2);
    case 'UL':
    case 'SL':
    case 'FL':
      return Buffer.alloc(4);
    case 'FD':
    case 'SV':
    case 'UV':
      return Buffer.alloc(8);
    default:
      // OB, OW, OF, …, UN: zeros, so that the value is present and its length still fits its VR.
      return Buffer.alloc(Math.max(2, Math.min(len, 2)));
  }
}

/** C: dates shifted (Modified Dates), text cleaned of the source's identifying values, anything else dummied. */
function clean(e: Element, row: ProfileRow | undefined, run: Run, cs: Charset): Element | undefined {
  if (e.vr === 'DA' || e.vr === 'DT' || e.vr === 'TM') {
    if (!run.options.retainLongitudinalModifiedDates) {
      collect(e, row?.name ?? '', run, cs);
      return { tag: e.tag, vr: e.vr, value: dummyValue(e, run) };
    }
    collect(e, row?.name ?? '', run, cs);
    return { tag: e.tag, vr: e.vr, value: shiftDates(e, run.keys.dateOffsetDays) };
  }
  if (STRING_VRS.has(e.vr) && e.vr !== 'UI') {
    const text = decodeText(e.value ?? Buffer.alloc(0), cs, e.vr === 'PN');
    if (e.vr === 'PN') {
      // A person's name is identifying whatever it is: cleaning a name can only remove it.
      collect(e, row?.name ?? '', run, cs);
      return { tag: e.tag, vr: e.vr, value: stringBytes(DUMMY_TEXT, 'PN') };
    }
    const cleaned = redactText(text, run.redactWith);
    if (cleaned === text) {
      noteKept(e, run, cs);
      return e;
    }
    const encoded = encodeText(cleaned, cs) ?? Buffer.from(DUMMY_TEXT, 'latin1');
    return { tag: e.tag, vr: e.vr, value: stringBytes(encoded.toString('latin1'), e.vr) };
  }
  collect(e, row?.name ?? '', run, cs);
  return { tag: e.tag, vr: e.vr, value: dummyValue(e, run) };
}

/** Records what an element removed or replaced said, for the clean actions and the leak check. */
function collect(e: Element, rowName: string, run: Run, cs: Charset): void {
  if (e.items) {
    e.items.forEach((item) => {
      const own = findElement(item, TAG.specificCharacterSet);
      const ics = own ? charsetOf(own.value, cs) : cs;
      for (const child of item) collect(child, rowForTag(child.tag)?.name ?? '', run, ics);
    });
    return;
  }
  if (!e.value || !e.value.length) return;
  const vr = e.wasUn && e.vr === 'UN' ? 'UN' : e.vr;
  if (vr === 'UI') {
    // Only instance UIDs identify: class, coding-scheme and transfer-syntax UIDs are kept wherever they occur.
    const row = rowForTag(e.tag);
    if (!row || !/[UD]/.test(row.basicProfile) || (e.tag >>> 16) & 1) return;
    for (const u of rawString(e).split('\\')) {
      const uid = u.trim();
      if (uid && !uid.startsWith(DICOM_UID_ROOT)) run.identifying.push({ kind: 'uid', value: uid });
    }
    return;
  }
  if (!STRING_VRS.has(vr) && vr !== 'UN' && vr !== 'OB') return;
  if (vr === 'UN' || vr === 'OB') {
    if (e.value.length > 1024) return;
    const text = e.value.toString('latin1').replace(/[\0 ]+$/, '');
    // Only printable values: an opaque binary UN is not text that could be found again.
    if (/^[\x20-\x7e]{8,}$/.test(text)) run.identifying.push({ kind: 'text', value: text });
    return;
  }
  const text = decodeText(e.value, cs, vr === 'PN');
  const kind = identifyingKind(e.tag, vr, rowName);
  if (!kind) return;
  for (const v of vr === 'LT' || vr === 'ST' || vr === 'UT' ? [text] : text.split('\\')) {
    const value = v.trim();
    if (value) run.identifying.push({ kind, value });
  }
}

function noteKept(e: Element, run: Run, cs: Charset): void {
  if (!e.value || !STRING_VRS.has(e.vr) || e.vr === 'UI') return;
  const text = decodeText(e.value, cs, e.vr === 'PN');
  for (const v of text.split('\\')) if (v.trim()) run.kept.add(v.trim());
}

/** Shifts DA and DT values by whole days; TM values are times of day, which a whole-day shift leaves unchanged. */
export function shiftDates(e: Element, days: number): Buffer {
  const text = rawString(e);
  if (e.vr === 'TM') return e.value ?? Buffer.alloc(0);
  const shifted = text
    .split('\\')
    .map((v) => (e.vr === 'DA' ? shiftDa(v.trim(), days) : shiftDt(v.trim(), days)));
  return stringBytes(shifted.join('\\'), e.vr);
}

function addDays(y: number, m: number, d: number, days: number): Date {
  const t = new Date(Date.UTC(y, m - 1, d));
  t.setUTCDate(t.getUTCDate() + days);
  return t;
}

const pad = (n: number, w: number) => String(n).padStart(w, '0');
const ymd = (t: Date) =>
  `${pad(t.getUTCFullYear(), 4)}${pad(t.getUTCMonth() + 1, 2)}${pad(t.getUTCDate(), 2)}`;

/** DA: YYYYMMDD, or the ACR-NEMA YYYY.MM.DD; a value that is not a date becomes the dummy date. */
export function shiftDa(v: string, days: number): string {
  if (!v) return '';
  const m = /^(\d{4})\.?(\d{2})\.?(\d{2})$/.exec(v);
  if (!m) return '19000101';
  return ymd(addDays(+m[1], +m[2], +m[3], days));
}

/**
 * DT: YYYY[MM[DD[HH[MM[SS[.F]]]]]][&ZZXX]. The time of day and the UTC offset are kept; a value of month or year
 * precision is shifted from the first day of its period and written back at its own precision.
 */
export function shiftDt(v: string, days: number): string {
  if (!v) return '';
  const m = /^(\d{4})(\d{2})?(\d{2})?([^+-]*)([+-]\d{4})?$/.exec(v);
  if (!m) return '19000101';
  const t = addDays(+m[1], m[2] ? +m[2] : 1, m[3] ? +m[3] : 1, days);
  const full = ymd(t);
  const date = m[3] ? full : m[2] ? full.slice(0, 6) : full.slice(0, 4);
  return `${date}${m[4] ?? ''}${m[5] ?? ''}`;
}

function addDeidentificationAttributes(ds: Dataset, options: DeidOptions, pixelsCleaned: boolean): void {
  const cs = (s: string) => stringBytes(s, 'CS');
  ds.push({ tag: TAG.patientIdentityRemoved, vr: 'CS', value: cs('YES') });
  const used = OPTION_NAMES.filter((n) => options[n]);
  ds.push({
    tag: TAG.deidMethod,
    vr: 'LO',
    value: stringBytes(`Aperture PS3.15 E.1-1 v${PROFILE_VERSION}`, 'LO'),
  });
  const codes = [
    CID_7050.basic,
    ...(pixelsCleaned ? [CLEAN_PIXEL_DATA] : []),
    ...used.map((n) => CID_7050[n]),
  ];
  ds.push({
    tag: TAG.deidMethodCodes,
    vr: 'SQ',
    items: codes.map((c) => [
      { tag: 0x00080100, vr: 'SH', value: stringBytes(c.code, 'SH') },
      { tag: 0x00080102, vr: 'SH', value: stringBytes('DCM', 'SH') },
      { tag: 0x00080104, vr: 'LO', value: stringBytes(c.meaning, 'LO') },
    ]),
  });
  const longitudinal = options.retainLongitudinalFullDates
    ? 'UNMODIFIED'
    : options.retainLongitudinalModifiedDates
      ? 'MODIFIED'
      : 'REMOVED';
  ds.push({ tag: TAG.longitudinalModified, vr: 'CS', value: cs(longitudinal) });
}
