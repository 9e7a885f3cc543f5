import dcmjs from 'dcmjs';
import type { DicomJson, DicomJsonElement } from './json';

/**
 * The Native DICOM Model (PS3.19 Annex A) written from the DICOM JSON model (PS3.18 Annex F): what
 * `application/dicom+xml` answers carry (Store Instances Response, WADO-RS metadata).
 */

const NATIVE_DICOM_NS = 'http://dicom.nema.org/PS3.19/models/NativeDICOM';
const XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n';
const PN_COMPONENTS = ['FamilyName', 'GivenName', 'MiddleName', 'NamePrefix', 'NameSuffix'] as const;
const PN_GROUPS = ['Alphabetic', 'Ideographic', 'Phonetic'] as const;

/**
 * Converts one data set to a `<NativeDicomModel>` document, or several data sets to one document each
 * (a multi-data-set XML answer is multipart/related with one document per part, PS3.18 §8.7.3).
 */
export function dicomJsonToXml(dataset: DicomJson): string;
export function dicomJsonToXml(datasets: DicomJson[]): string[];
export function dicomJsonToXml(datasets: DicomJson | DicomJson[]): string | string[] {
  if (Array.isArray(datasets)) return datasets.map((ds) => document(ds));
  return document(datasets);
}

function document(ds: DicomJson): string {
  const out: string[] = [
    XML_DECLARATION,
    `<NativeDicomModel xmlns="${NATIVE_DICOM_NS}" xml:space="preserve">`,
  ];
  writeDataset(ds, out);
  out.push('</NativeDicomModel>\n');
  return out.join('');
}

function writeDataset(ds: DicomJson, out: string[]): void {
  // PS3.19 A.1.1: attributes in ascending tag order. JSON keys are 8 hex digits; compare them as numbers.
  const tags = Object.keys(ds).sort((a, b) => parseInt(a, 16) - parseInt(b, 16));
  for (const tag of tags) writeAttribute(tag.toUpperCase(), ds[tag], ds, out);
}

function writeAttribute(tag: string, el: DicomJsonElement, ds: DicomJson, out: string[]): void {
  const vr = el.vr || 'UN';
  let attrs = `tag="${tag}" vr="${vr}"`;
  const keyword = keywordOf(tag);
  if (keyword) attrs += ` keyword="${keyword}"`;
  const creator = privateCreatorOf(tag, ds);
  if (creator !== undefined) attrs += ` privateCreator="${escapeXml(creator)}"`;

  const inner: string[] = [];
  if (el.BulkDataURI !== undefined) {
    inner.push(`<BulkData uri="${escapeXml(el.BulkDataURI)}"/>`);
  } else if (el.InlineBinary !== undefined) {
    inner.push(`<InlineBinary>${escapeXml(el.InlineBinary)}</InlineBinary>`);
  } else if (el.Value) {
    el.Value.forEach((v, i) => {
      const number = i + 1;
      if (vr === 'SQ') {
        inner.push(`<Item number="${number}">`);
        if (v && typeof v === 'object') writeDataset(v as DicomJson, inner);
        inner.push('</Item>');
      } else if (vr === 'PN') {
        inner.push(personName(v, number));
      } else if (v === null || v === undefined || v === '') {
        inner.push(`<Value number="${number}"/>`);
      } else {
        inner.push(`<Value number="${number}">${escapeXml(valueText(v))}</Value>`);
      }
    });
  }
  if (inner.length === 0) {
    out.push(`<DicomAttribute ${attrs}/>`);
  } else {
    out.push(`<DicomAttribute ${attrs}>`, ...inner, '</DicomAttribute>');
  }
}

function valueText(v: unknown): string {
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : '';
  if (typeof v === 'bigint') return v.toString();
  return String(v);
}

/** PS3.19 A.1.6: each present group of a name, split into its components; empty components are left out. */
function personName(v: unknown, number: number): string {
  if (v === null || v === undefined || v === '') return `<PersonName number="${number}"/>`;
  const groups: Record<string, unknown> =
    typeof v === 'string' ? { Alphabetic: v } : (v as Record<string, unknown>);
  const parts: string[] = [];
  for (const group of PN_GROUPS) {
    const value = groups[group];
    if (typeof value !== 'string' || value === '') continue;
    const components = value.split('^');
    const inner = PN_COMPONENTS.map((name, i) =>
      components[i] ? `<${name}>${escapeXml(components[i])}</${name}>` : '',
    ).join('');
    parts.push(inner ? `<${group}>${inner}</${group}>` : `<${group}/>`);
  }
  if (parts.length === 0) return `<PersonName number="${number}"/>`;
  return `<PersonName number="${number}">${parts.join('')}</PersonName>`;
}

/** Keywords by tag; the dictionary also knows repeating groups such as (60xx,3000). */
function keywordOf(tag: string): string | undefined {
  const group = tag.slice(0, 4);
  if (parseInt(group, 16) % 2 === 1) return undefined; // private: no standard keyword
  const dict = dcmjs.data.DicomMetaDictionary.dictionary;
  const element = tag.slice(4);
  const entry =
    dict[`(${group},${element})`] ??
    (/^(50|60|7F)/.test(group) ? dict[`(${group.slice(0, 2)}xx,${element})`] : undefined);
  const name = entry?.name;
  // The dictionary names retired or unnamed entries with placeholders such as "RETIRED_..." or "" in some builds.
  return name && /^[A-Za-z][A-Za-z0-9]*$/.test(name) ? name : undefined;
}

/**
 * PS3.19 A.1.2: private data elements name their Private Creator, found in the same data set at
 * (gggg,00xx) for element xxyy. Private Creator elements themselves, and group lengths, carry none.
 */
function privateCreatorOf(tag: string, ds: DicomJson): string | undefined {
  const group = tag.slice(0, 4);
  if (parseInt(group, 16) % 2 === 0) return undefined;
  const element = parseInt(tag.slice(4), 16);
  const block = element >> 8;
  if (block < 0x10) return undefined;
  const creatorTag = `${group}00${block.toString(16).toUpperCase().padStart(2, '0')}`;
  const creator = ds[creatorTag]?.Value?.[0];
  return typeof creator === 'string' ? creator.trim() : undefined;
}

// Characters XML 1.0 cannot carry at all (C0 controls other than TAB, LF, CR; lone surrogates; U+FFFE/U+FFFF).
const INVALID_XML_CHARS = new RegExp(
  // eslint-disable-next-line no-control-regex -- these control characters are what the pattern removes
  '[\\u0000-\\u0008\\u000B\\u000C\\u000E-\\u001F\\uFFFE\\uFFFF]|[\\uD800-\\uDBFF](?![\\uDC00-\\uDFFF])|(?<![\\uD800-\\uDBFF])[\\uDC00-\\uDFFF]',
  'g',
);

/** Escapes text for element content and attribute values, dropping characters XML 1.0 cannot represent. */
export function escapeXml(s: string): string {
  return s
    .replace(INVALID_XML_CHARS, '')
    .replace(/&/g, '&amp;')
    .replace(/</g, '&lt;')
    .replace(/>/g, '&gt;')
    .replace(/"/g, '&quot;')
    .replace(/'/g, '&apos;');
}
