/**
 * Strings of a data set in its Specific Character Set (0008,0005): decoding for the clean actions and the leak
 * check, and encoding of cleaned values back into the same character set.
 */
import { TextDecoder } from 'node:util';
import { charsetTerms, decodeIso2022, singleByteInverse, usesCodeExtensions } from '../charset';

/** Single-byte and multi-byte defined terms of (0008,0005) without code extensions → WHATWG labels. */
const LABELS: Record<string, string> = {
  '': 'windows-1252',
  ISO_IR_6: 'windows-1252',
  'ISO_IR 100': 'iso-8859-1',
  'ISO_IR 101': 'iso-8859-2',
  'ISO_IR 109': 'iso-8859-3',
  'ISO_IR 110': 'iso-8859-4',
  'ISO_IR 144': 'iso-8859-5',
  'ISO_IR 127': 'iso-8859-6',
  'ISO_IR 126': 'iso-8859-7',
  'ISO_IR 138': 'iso-8859-8',
  'ISO_IR 148': 'iso-8859-9',
  'ISO_IR 203': 'iso-8859-15',
  'ISO_IR 166': 'windows-874',
  'ISO_IR 13': 'shift_jis',
  'ISO_IR 192': 'utf-8',
  GB18030: 'gb18030',
  GBK: 'gbk',
};

/** The character set of a data set: the terms of (0008,0005) as written (an item may override its parent's). */
export interface Charset {
  terms: string[];
}

export function charsetOf(value: Buffer | undefined, inherited?: Charset): Charset {
  if (!value) return inherited ?? { terms: [''] };
  return { terms: charsetTerms(value.toString('latin1').split('\\')) };
}

const decoders = new Map<string, TextDecoder>();

function decoder(label: string): TextDecoder {
  let d = decoders.get(label);
  if (!d) {
    d = new TextDecoder(label);
    decoders.set(label, d);
  }
  return d;
}

/** Decodes the bytes of a string value (padding included) into Unicode. */
export function decodeText(bytes: Uint8Array, cs: Charset, personName = false): string {
  const terms = cs.terms;
  let s: string;
  if (usesCodeExtensions(terms) || terms[0]?.startsWith('ISO 2022')) {
    s = decodeIso2022(bytes, terms, personName);
  } else {
    const label = LABELS[terms[0] ?? ''] ?? 'windows-1252';
    try {
      s = decoder(label).decode(bytes);
    } catch {
      s = Buffer.from(bytes).toString('latin1');
    }
  }
  return s.replace(/[\0 ]+$/, '');
}

/**
 * Encodes a value in the data set's character set, or undefined when this module cannot write that set (ISO 2022
 * code extensions, GB18030): the caller then writes an ASCII replacement, which every DICOM character set accepts.
 */
export function encodeText(s: string, cs: Charset): Buffer | undefined {
  // ASCII is the G0 of every character set DICOM defines, so it is valid whatever (0008,0005) says.
  if (/^[\x20-\x7e\r\n\t\f\\^=]*$/.test(s)) return Buffer.from(s, 'latin1');
  const terms = cs.terms;
  if (terms.length > 1 || terms[0]?.startsWith('ISO 2022')) return undefined;
  const label = LABELS[terms[0] ?? ''] ?? 'windows-1252';
  if (label === 'utf-8') return Buffer.from(s, 'utf8');
  if (label === 'gb18030' || label === 'gbk' || label === 'shift_jis') return undefined;
  const inv = singleByteInverse(label);
  const out = Buffer.alloc(s.length);
  let i = 0;
  for (const ch of s) {
    const b = inv.get(ch);
    if (b === undefined) return undefined;
    out[i++] = b;
  }
  return out.subarray(0, i);
}
