/**
 * Identifying values of a source object, and the leak check (issue 10 item 7): the de-identified bytes are read
 * back, every string decoded in its character set, and searched for every identifying value in the forms people
 * and systems write them (names in any component order and case, dates as DA/DT and common text forms, UIDs).
 * Pixel data, overlays and waveforms are not searched: burned-in text is handled by withholding, and short
 * needles would match random sample bytes.
 */
import { type Dataset, type Element, PIXEL_DATA, findElement, hexTag, readPart10 } from './codec';
import { type Charset, charsetOf, decodeText } from './text';

export type IdentifyingKind = 'name' | 'id' | 'date' | 'uid' | 'institution' | 'device' | 'text' | 'private';

export interface IdentifyingValue {
  kind: IdentifyingKind;
  value: string;
}

export type IdentifyingValues = IdentifyingValue[];

const ID_TAGS = new Set([
  0x00100020, 0x00101000, 0x00080050, 0x00200010, 0x00400253, 0x00401001, 0x00402016, 0x00402017, 0x00101002,
  0x00100021, 0x00380010, 0x00120040, 0x00120042,
]);

/** The kind of identifying value an element holds, or undefined when its value identifies nobody (CS codes, numbers). */
export function identifyingKind(tag: number, vr: string, rowName: string): IdentifyingKind | undefined {
  if (vr === 'PN') return 'name';
  if (vr === 'UI') return 'uid';
  if (vr === 'DA' || vr === 'DT') return 'date';
  if (ID_TAGS.has(tag)) return 'id';
  if ((tag >>> 16) & 1)
    return vr === 'LO' || vr === 'SH' || vr === 'LT' || vr === 'ST' || vr === 'UT' ? 'private' : undefined;
  if (/institution/i.test(rowName)) return 'institution';
  if (
    /station|serial|device|detector id|operator|physician|performing|aet|ae title/i.test(rowName) ||
    vr === 'AE'
  )
    return 'device';
  if (/\b(id|identifier|number)\b/i.test(rowName) && (vr === 'SH' || vr === 'LO')) return 'id';
  if (vr === 'LO' || vr === 'SH' || vr === 'ST' || vr === 'LT' || vr === 'UT' || vr === 'UC') return 'text';
  return undefined;
}

/** Upper case, accents and punctuation folded, runs of anything else than letters and digits → one space. */
export function normalise(s: string): string {
  return s
    .normalize('NFKD')
    .replace(/\p{M}+/gu, '')
    .toUpperCase()
    .replace(/[^\p{L}\p{N}]+/gu, ' ')
    .trim();
}

/** The searchable forms of one identifying value (normalised), empty when it is too short to search for. */
export function needles(v: IdentifyingValue): string[] {
  switch (v.kind) {
    case 'name': {
      const forms = new Set<string>();
      // Alphabetic, ideographic and phonetic groups are separate spellings of the same name.
      for (const group of v.value.split('=')) {
        const [family = '', given = '', middle = ''] = group.split('^').map(normalise);
        const parts = [family, given, middle].filter(Boolean);
        if (parts.length === 0) continue;
        if (parts.length === 1) {
          if (parts[0].length >= 4) forms.add(parts[0]);
          continue;
        }
        forms.add([family, given, middle].filter(Boolean).join(' '));
        forms.add([given, middle, family].filter(Boolean).join(' '));
        if (family && given) {
          forms.add(`${family} ${given}`);
          forms.add(`${given} ${family}`);
        }
      }
      return [...forms].filter((f) => f.replace(/ /g, '').length >= 3);
    }
    case 'date': {
      const m = /^(\d{4})\.?(\d{2})\.?(\d{2})/.exec(v.value);
      if (!m) return [];
      const [, y, mo, d] = m;
      return [`${y}${mo}${d}`, `${y} ${mo} ${d}`, `${d} ${mo} ${y}`, `${mo} ${d} ${y}`];
    }
    case 'uid':
      return v.value.length >= 8 ? [v.value] : [];
    case 'id':
    case 'device':
    case 'institution': {
      const n = normalise(v.value);
      return n.replace(/ /g, '').length >= 3 ? [n] : [];
    }
    case 'text':
    case 'private': {
      const n = normalise(v.value);
      return n.length >= 8 && /\p{L}/u.test(n) ? [n] : [];
    }
  }
}

function escapeRe(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}

/** Finds a needle in a normalised haystack, on word boundaries (dates may start a longer DT). */
function found(haystack: string, needle: string, kind: IdentifyingKind): boolean {
  if (kind === 'date' && /^\d{8}$/.test(needle)) return new RegExp(`(?<![0-9])${needle}`).test(haystack);
  return ` ${haystack} `.includes(` ${needle} `);
}

/**
 * Removes every identifying value from a descriptor (the clean action on text): its normalised occurrences are
 * replaced by asterisks; the rest of the text is kept as written.
 */
export function redactText(text: string, identifying: readonly IdentifyingValue[]): string {
  const patterns = redactionPatterns(identifying);
  if (!patterns.length) return text;
  // Matching runs on an accent-folded, upper-cased copy (as the needles are), mapped back to the original span.
  const { folded, origin } = foldWithMap(text);
  const spans: Array<[number, number]> = [];
  for (const re of patterns) {
    re.lastIndex = 0;
    for (const m of folded.matchAll(re)) {
      spans.push([origin[m.index], origin[m.index + m[0].length - 1] + 1]);
    }
  }
  if (!spans.length) return text;
  spans.sort((a, b) => a[0] - b[0] || b[1] - a[1]);
  let out = '';
  let at = 0;
  for (const [start, end] of spans) {
    if (end <= at) continue;
    out += text.slice(at, Math.max(at, start)) + (start >= at ? '*' : '');
    at = end;
  }
  return out + text.slice(at);
}

/** Each character folded like normalise() does (without collapsing separators), with its index in the original. */
function foldWithMap(text: string): { folded: string; origin: number[] } {
  let folded = '';
  const origin: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const f = text[i]
      .normalize('NFKD')
      .replace(/\p{M}+/gu, '')
      .toUpperCase();
    for (let k = 0; k < f.length; k++) origin.push(i);
    folded += f;
  }
  origin.push(text.length);
  return { folded, origin };
}

const patternCache = new WeakMap<readonly IdentifyingValue[], RegExp[]>();

/** One pattern per needle: its words separated by any non-alphanumeric run, in any case; compiled once per object. */
function redactionPatterns(identifying: readonly IdentifyingValue[]): RegExp[] {
  let patterns = patternCache.get(identifying);
  if (patterns) return patterns;
  patterns = [];
  for (const v of identifying) {
    if (v.kind === 'uid') {
      patterns.push(new RegExp(`(?<![0-9.])${escapeRe(v.value)}(?![0-9]|\\.[0-9])`, 'g'));
      continue;
    }
    for (const n of needles(v)) {
      const words = n.split(' ').map(escapeRe);
      patterns.push(
        new RegExp(`(?<![\\p{L}\\p{N}])${words.join('[^\\p{L}\\p{N}]+')}(?![\\p{L}\\p{N}])`, 'giu'),
      );
      if (v.kind === 'date' && /^\d{8}$/.test(n)) patterns.push(new RegExp(`(?<![0-9])${n}`, 'g'));
    }
  }
  patternCache.set(identifying, patterns);
  return patterns;
}

export interface LeakHit {
  /** Where the value was found, e.g. (0040,A730)[0].(0040,A160); never the value itself. */
  tagPath: string;
  kind: IdentifyingKind;
}

const NOT_SEARCHED = (tag: number) =>
  tag === PIXEL_DATA ||
  tag === 0x7fe00008 ||
  tag === 0x7fe00009 ||
  tag === 0x54001010 ||
  (((tag >>> 16) & 0xff00) === 0x6000 && (tag & 0xffff) === 0x3000);

/** Scans de-identified bytes for every identifying value of their source. No hits: nothing identifying survived. */
export function leakCheck(output: Buffer, identifying: readonly IdentifyingValue[]): { hits: LeakHit[] } {
  const parsed = readPart10(output);
  const hits: LeakHit[] = [];
  const uids = new Set(identifying.filter((v) => v.kind === 'uid').map((v) => v.value));
  const prepared = identifying
    .filter((v) => v.kind !== 'uid')
    .map((v) => ({ v, forms: needles(v) }))
    .filter((p) => p.forms.length > 0);
  const scan = (ds: Dataset, cs: Charset, path: string) => {
    const own = findElement(ds, 0x00080005);
    const here = own ? charsetOf(own.value, cs) : cs;
    for (const e of ds) {
      const p = `${path}${hexTag(e.tag)}`;
      if (e.items) {
        e.items.forEach((item, i) => scan(item, here, `${p}[${i}].`));
        continue;
      }
      if (!e.value || !e.value.length || NOT_SEARCHED(e.tag)) continue;
      // Numbers and word data are not text; OB and UN may hide text written by systems that did not know the tag.
      if (!isString(e.vr) && e.vr !== 'OB' && e.vr !== 'UN') continue;
      checkElement(e, here, p);
    }
  };
  const checkElement = (e: Element, cs: Charset, p: string) => {
    const value = e.value as Buffer;
    const raw = value.toString('latin1');
    const text = isString(e.vr) ? decodeText(value, cs, e.vr === 'PN') : raw;
    const norm = normalise(text);
    const normRaw = text === raw ? norm : normalise(raw);
    if (uids.size) {
      for (const m of raw.matchAll(/[0-9]+(?:\.[0-9]+)+/g)) {
        if (uids.has(m[0])) {
          hits.push({ tagPath: p, kind: 'uid' });
          break;
        }
      }
    }
    // Numbers (DS, IS) and times identify nobody and would match short IDs by chance.
    if (e.vr === 'DS' || e.vr === 'IS' || e.vr === 'TM' || e.vr === 'UI') return;
    for (const { v, forms } of prepared) {
      if (forms.some((f) => found(norm, f, v.kind) || found(normRaw, f, v.kind)))
        hits.push({ tagPath: p, kind: v.kind });
    }
  };
  scan(parsed.meta, { terms: [''] }, '');
  scan(parsed.dataset, { terms: [''] }, '');
  return { hits };
}

function isString(vr: string): boolean {
  return ![
    'OB',
    'OW',
    'OF',
    'OD',
    'OL',
    'OV',
    'UN',
    'US',
    'SS',
    'UL',
    'SL',
    'FL',
    'FD',
    'AT',
    'SV',
    'UV',
  ].includes(vr);
}
