/**
 * Specific Character Set handling that dcmjs lacks: ISO 2022 code extensions (PS3.5 §6.1.2.5, PS3.3 C.12.1.1.2),
 * used by Japanese (ISO 2022 IR 13/87/159), Korean (ISO 2022 IR 149) and Chinese (ISO 2022 IR 58) data sets.
 *
 * dcmjs decodes every string with the decoder of the first value of (0008,0005) and leaves the escape sequences in
 * place, then rewrites (0008,0005) to "ISO_IR 192". Here the original bytes are recovered from those strings (the
 * first-value decoders are single-byte on the bytes that matter, so this is exact), decoded properly, and
 * (0008,0005) gets its value from the file back: the DICOM JSON model carries Unicode strings whatever the file used,
 * and clients compare the attribute with the file.
 *
 * Pure module: no I/O.
 */

const ESC = 0x1b;

/** The character repertoire a code element (G0 or G1) is designated to. */
type Repertoire =
  | { kind: 'ascii' }
  | { kind: 'single'; label: string } // a 96-character set in G1 (ISO 8859-x, TIS 620)
  | { kind: 'katakana' } // JIS X 0201 katakana in G1
  | { kind: 'jis0208' } // two bytes in G0
  | { kind: 'jis0212' } // two bytes in G0
  | { kind: 'ksx1001' } // two bytes in G1
  | { kind: 'gb2312' }; // two bytes in G1

const ASCII: Repertoire = { kind: 'ascii' };

/** Defined terms of (0008,0005) with code extensions → what they designate at the start of a value (PS3.3 C.12-3/4). */
const INITIAL: Record<string, { g0: Repertoire; g1?: Repertoire }> = {
  '': { g0: ASCII },
  'ISO 2022 IR 6': { g0: ASCII },
  'ISO 2022 IR 100': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-1' } },
  'ISO 2022 IR 101': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-2' } },
  'ISO 2022 IR 109': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-3' } },
  'ISO 2022 IR 110': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-4' } },
  'ISO 2022 IR 144': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-5' } },
  'ISO 2022 IR 127': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-6' } },
  'ISO 2022 IR 126': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-7' } },
  'ISO 2022 IR 138': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-8' } },
  'ISO 2022 IR 148': { g0: ASCII, g1: { kind: 'single', label: 'iso-8859-9' } },
  'ISO 2022 IR 166': { g0: ASCII, g1: { kind: 'single', label: 'windows-874' } },
  // JIS X 0201 Romaji differs from ASCII only at 5/12 and 7/14; like DCMTK and pydicom we read it as ASCII.
  'ISO 2022 IR 13': { g0: ASCII, g1: { kind: 'katakana' } },
  'ISO 2022 IR 87': { g0: { kind: 'jis0208' } },
  'ISO 2022 IR 159': { g0: { kind: 'jis0212' } },
  'ISO 2022 IR 149': { g0: ASCII, g1: { kind: 'ksx1001' } },
  'ISO 2022 IR 58': { g0: ASCII, g1: { kind: 'gb2312' } },
};

/** Escape sequences (without ESC) → the code element they designate and to what (PS3.3 Tables C.12-3 and C.12-4). */
const ESCAPES: Array<{ seq: number[]; g: 0 | 1; rep: Repertoire }> = [
  { seq: [0x28, 0x42], g: 0, rep: ASCII }, // ESC ( B  ISO-IR 6
  { seq: [0x28, 0x4a], g: 0, rep: ASCII }, // ESC ( J  ISO-IR 14 (JIS X 0201 Romaji)
  { seq: [0x29, 0x49], g: 1, rep: { kind: 'katakana' } }, // ESC ) I  ISO-IR 13
  { seq: [0x24, 0x42], g: 0, rep: { kind: 'jis0208' } }, // ESC $ B  ISO-IR 87
  { seq: [0x24, 0x28, 0x44], g: 0, rep: { kind: 'jis0212' } }, // ESC $ ( D  ISO-IR 159
  { seq: [0x24, 0x29, 0x43], g: 1, rep: { kind: 'ksx1001' } }, // ESC $ ) C  ISO-IR 149
  { seq: [0x24, 0x29, 0x41], g: 1, rep: { kind: 'gb2312' } }, // ESC $ ) A  ISO-IR 58
  { seq: [0x2d, 0x41], g: 1, rep: { kind: 'single', label: 'iso-8859-1' } }, // ESC - A  ISO-IR 100
  { seq: [0x2d, 0x42], g: 1, rep: { kind: 'single', label: 'iso-8859-2' } }, // ESC - B  ISO-IR 101
  { seq: [0x2d, 0x43], g: 1, rep: { kind: 'single', label: 'iso-8859-3' } }, // ESC - C  ISO-IR 109
  { seq: [0x2d, 0x44], g: 1, rep: { kind: 'single', label: 'iso-8859-4' } }, // ESC - D  ISO-IR 110
  { seq: [0x2d, 0x4c], g: 1, rep: { kind: 'single', label: 'iso-8859-5' } }, // ESC - L  ISO-IR 144
  { seq: [0x2d, 0x47], g: 1, rep: { kind: 'single', label: 'iso-8859-6' } }, // ESC - G  ISO-IR 127
  { seq: [0x2d, 0x46], g: 1, rep: { kind: 'single', label: 'iso-8859-7' } }, // ESC - F  ISO-IR 126
  { seq: [0x2d, 0x48], g: 1, rep: { kind: 'single', label: 'iso-8859-8' } }, // ESC - H  ISO-IR 138
  { seq: [0x2d, 0x4d], g: 1, rep: { kind: 'single', label: 'iso-8859-9' } }, // ESC - M  ISO-IR 148
  { seq: [0x2d, 0x54], g: 1, rep: { kind: 'single', label: 'windows-874' } }, // ESC - T  ISO-IR 166
];

/** The decoder dcmjs picks for the first value of (0008,0005) (its `encodingMapping`), as a WHATWG label. */
function dcmjsLabel(firstTerm: string): string | undefined {
  const t = firstTerm.trim().toUpperCase();
  if (t === '' || t === 'ISO 2022 IR 6' || t === 'ISO 2022 IR 100') return 'windows-1252';
  if (t === 'ISO 2022 IR 13') return 'shift_jis';
  const single = INITIAL[t]?.g1;
  if (single?.kind === 'single') return single.label;
  return undefined;
}

const inverseCache = new Map<string, Map<string, number>>();

/** Character → byte for every single byte the decoder maps to exactly one character (bytes it cannot decode alone are absent). */
export function singleByteInverse(label: string): Map<string, number> {
  let inv = inverseCache.get(label);
  if (inv) return inv;
  inv = new Map();
  const dec = new TextDecoder(label);
  for (let b = 0; b < 256; b++) {
    const s = dec.decode(Uint8Array.of(b));
    if (s.length === 1 && s !== '\ufffd' && !inv.has(s)) inv.set(s, b);
  }
  inverseCache.set(label, inv);
  return inv;
}

/** The values of (0008,0005), trimmed, with empty values kept in place ('' for the default repertoire). */
export function charsetTerms(values: readonly unknown[] | undefined): string[] {
  return (values ?? []).map((v) => (typeof v === 'string' ? v.replace(/[\0 ]+$/g, '').trim() : ''));
}

/** True when (0008,0005) uses ISO 2022 code extensions, which dcmjs cannot decode. */
export function usesCodeExtensions(terms: readonly string[]): boolean {
  return terms.length > 1 && terms.every((t) => t === '' || t.toUpperCase().startsWith('ISO 2022'));
}

/** Delimiters after which value 1's designations are back in effect (PS3.5 §6.1.2.5.3). */
const CONTROL_RESETS = new Set([0x0a, 0x0c, 0x0d, 0x09, 0x5c]);
const PN_RESETS = new Set([0x5e, 0x3d]);

/**
 * Decodes the bytes of one string value written with ISO 2022 code extensions. `terms` are the values of
 * (0008,0005); `personName` turns on the PN component delimiters (^ and =) as reset points.
 */
export function decodeIso2022(bytes: Uint8Array, terms: readonly string[], personName = false): string {
  const first = INITIAL[(terms[0] ?? '').toUpperCase()] ?? INITIAL[''];
  let g0 = first.g0;
  let g1 = first.g1;
  let out = '';
  let run: number[] = [];
  let runLabel = '';
  const flush = () => {
    if (run.length) out += new TextDecoder(runLabel).decode(Uint8Array.from(run));
    run = [];
  };
  const emit = (label: string, ...b: number[]) => {
    if (label !== runLabel) {
      flush();
      runLabel = label;
    }
    run.push(...b);
  };
  for (let i = 0; i < bytes.length; i++) {
    const b = bytes[i];
    if (b === ESC) {
      const esc = ESCAPES.find((e) => e.seq.every((c, k) => bytes[i + 1 + k] === c));
      if (esc) {
        if (esc.g === 0) g0 = esc.rep;
        else g1 = esc.rep;
        i += esc.seq.length;
        continue;
      }
      emit('windows-1252', b);
      continue;
    }
    if (b < 0x80) {
      const twoByte = g0.kind === 'jis0208' || g0.kind === 'jis0212';
      if (
        twoByte &&
        b >= 0x21 &&
        b <= 0x7e &&
        i + 1 < bytes.length &&
        bytes[i + 1] >= 0x21 &&
        bytes[i + 1] <= 0x7e
      ) {
        const pair = [b | 0x80, bytes[i + 1] | 0x80];
        if (g0.kind === 'jis0212') emit('euc-jp', 0x8f, ...pair);
        else emit('euc-jp', ...pair);
        i++;
        continue;
      }
      emit('windows-1252', b);
      if (CONTROL_RESETS.has(b) || (personName && !twoByte && PN_RESETS.has(b))) {
        g0 = first.g0;
        g1 = first.g1;
      }
      continue;
    }
    switch (g1?.kind) {
      case 'single':
        emit(g1.label, b);
        break;
      case 'katakana':
        emit('euc-jp', 0x8e, b);
        break;
      case 'ksx1001':
      case 'gb2312':
        if (i + 1 < bytes.length && bytes[i + 1] >= 0xa1) {
          emit(g1.kind === 'ksx1001' ? 'euc-kr' : 'gbk', b, bytes[i + 1]);
          i++;
        } else {
          emit('windows-1252', b);
        }
        break;
      default:
        emit('windows-1252', b);
    }
  }
  flush();
  return out;
}

/**
 * Re-decodes a string dcmjs produced from a value written with code extensions: its bytes are recovered through the
 * decoder dcmjs used (single-byte on every byte such a value holds), then decoded with the escape sequences applied.
 * Returns the string unchanged when it holds no escape sequence or its bytes cannot be recovered exactly.
 */
export function redecodeDcmjsString(s: string, terms: readonly string[], personName = false): string {
  if (!s.includes('\u001b')) return s;
  const label = dcmjsLabel(terms[0] ?? '');
  if (!label) return s;
  const inv = singleByteInverse(label);
  const bytes = new Uint8Array(s.length);
  let n = 0;
  for (const ch of s) {
    const b = inv.get(ch);
    if (b === undefined) return s;
    bytes[n++] = b;
  }
  return decodeIso2022(bytes.subarray(0, n), terms, personName);
}

/** VRs whose values are encoded with the Specific Character Set (PS3.5 §6.1.2.3). */
const TEXT_VRS = new Set(['SH', 'LO', 'ST', 'LT', 'UT', 'UC', 'PN']);

interface DcmjsElement {
  vr?: string;
  Value?: unknown[];
  _rawValue?: unknown;
}

/**
 * Fixes a dcmjs data set in place: strings written with ISO 2022 code extensions are decoded, and every
 * (0008,0005) gets its value from the file back (dcmjs replaces it with "ISO_IR 192"). Items of sequences inherit
 * the character set of their parent unless they carry their own (PS3.3 C.12.1.1.2).
 */
export function restoreCharacterSets(dict: Record<string, DcmjsElement>, inherited: string[] = []): void {
  let terms = inherited;
  const cs = dict['00080005'];
  if (cs) {
    const raw = Array.isArray(cs._rawValue)
      ? cs._rawValue
      : typeof cs._rawValue === 'string'
        ? [cs._rawValue]
        : undefined;
    if (raw) {
      terms = charsetTerms(raw);
      cs.Value = terms.length ? [...terms] : undefined;
    }
  }
  const extended = usesCodeExtensions(terms);
  for (const el of Object.values(dict)) {
    if (!el || !el.Value) continue;
    if (el.vr === 'SQ') {
      for (const item of el.Value) {
        if (item && typeof item === 'object')
          restoreCharacterSets(item as Record<string, DcmjsElement>, terms);
      }
      continue;
    }
    if (!extended || !TEXT_VRS.has(el.vr ?? '')) continue;
    el.Value = el.Value.map((v) => {
      if (typeof v === 'string') return redecodeDcmjsString(v, terms, el.vr === 'PN');
      if (el.vr === 'PN' && v && typeof v === 'object') {
        const pn = { ...(v as Record<string, unknown>) };
        for (const group of ['Alphabetic', 'Ideographic', 'Phonetic']) {
          if (typeof pn[group] === 'string')
            pn[group] = redecodeDcmjsString(pn[group] as string, terms, true);
        }
        return pn;
      }
      return v;
    });
  }
}
