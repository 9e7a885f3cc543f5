/**
 * Real-world oddities, generated from the shared samples (none of which has them): the shapes that pydicom's test
 * collection and modalities in the field produce and that a DICOM JSON index must survive. Each object gets fresh
 * UIDs, so the generator can be called again and again within one archive.
 *
 * Written with dcmjs, which writes a string value's bytes as given (a trailing "\0" stays in the file; an odd length
 * is padded with a space, or "\0" for UI) so every oddity below is really in the bytes sent.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import dcmjs from 'dcmjs';
import { newUid } from './dimse';

/** One generated object and what the index should show for it. */
export interface Oddity {
  /** Short name, used in test titles and file names. */
  name: string;
  bytes: Buffer;
  studyUid: string;
  seriesUid: string;
  sopInstanceUid: string;
  /** Tag → the first value the index must answer once normalised (strings; PN as its Alphabetic group). */
  expect: Record<string, string | number | null>;
}

type Dict = Record<string, { vr: string; Value?: unknown[] }>;
interface Edit {
  name: string;
  /** Changes the data set (and File Meta) of a copy of the template; returns the values the index must show. */
  apply(dict: Dict, meta: Dict): Record<string, string | number | null>;
}

/** The template most oddities start from: a 16x16 CT in explicit VR little endian, with private tags. */
export const ODDITY_TEMPLATE = 'hierarchy/77654033/CT2/17106';

const set = (dict: Dict, tag: string, vr: string, ...values: unknown[]) => {
  dict[tag] = { vr, Value: values };
};

/** Every oddity the generator knows, by name. */
export const EDITS: Edit[] = [
  {
    // The example, in many string VRs at once: values padded with NUL instead of a space.
    name: 'nul-padded-strings',
    apply(d) {
      set(d, '00080070', 'LO', 'Philips\0'); // Manufacturer
      set(d, '00081030', 'LO', 'NUL PADDED STUDY\0\0'); // StudyDescription
      set(d, '0008103E', 'LO', 'SERIES\0'); // SeriesDescription
      set(d, '00100020', 'LO', 'NULPID\0'); // PatientID
      set(d, '00100010', 'PN', { Alphabetic: 'NUL^PADDED\0' }); // PatientName
      set(d, '00080060', 'CS', 'CT\0\0'); // Modality
      set(d, '00180015', 'CS', 'CHEST\0'); // BodyPartExamined
      set(d, '00080050', 'SH', 'ACC1\0\0'); // AccessionNumber
      set(d, '00200010', 'SH', 'S1\0\0'); // StudyID
      set(d, '00080020', 'DA', '20040101'); // StudyDate
      set(d, '00080030', 'TM', '1200\0\0'); // StudyTime
      set(d, '00081010', 'SH', 'STATION\0'); // StationName
      set(d, '00081090', 'LO', 'Model\0'); // ManufacturerModelName
      set(d, '00180050', 'DS', '1.5\0'); // SliceThickness
      set(d, '00101010', 'AS', '045Y\0\0'); // PatientAge
      set(d, '00204000', 'LT', 'comment with NUL padding\0'); // ImageComments
      set(d, '00081040', 'LO', 'DEPT\0'); // InstitutionalDepartmentName
      set(d, '00080008', 'CS', 'ORIGINAL', 'PRIMARY', 'AXIAL\0'); // ImageType, NUL after the last value
      return {
        '00080070': 'Philips',
        '00081030': 'NUL PADDED STUDY',
        '0008103E': 'SERIES',
        '00100020': 'NULPID',
        '00100010': 'NUL^PADDED',
        '00080060': 'CT',
        '00180015': 'CHEST',
        '00080050': 'ACC1',
        '00200010': 'S1',
        '00080030': '1200',
        '00081010': 'STATION',
        '00081090': 'Model',
        '00180050': 1.5,
        '00101010': '045Y',
        '00204000': 'comment with NUL padding',
      };
    },
  },
  {
    // Odd-length values made even with a NUL (PS3.5 wants a space for these VRs, a NUL only for UI).
    name: 'odd-length-nul',
    apply(d) {
      set(d, '00080070', 'LO', 'GE\0X\0'); // an embedded NUL and a trailing one
      set(d, '00081030', 'LO', 'ABC\0'); // StudyDescription
      set(d, '00100020', 'LO', 'ODD\0'); // PatientID
      set(d, '00200011', 'IS', '7\0'); // SeriesNumber
      set(d, '00080090', 'PN', { Alphabetic: 'REF^DOC\0' }); // ReferringPhysicianName
      set(d, '00321060', 'LO', 'PROC\0'); // RequestedProcedureDescription
      return {
        '00080070': 'GEX',
        '00081030': 'ABC',
        '00100020': 'ODD',
        '00200011': 7,
        '00080090': 'REF^DOC',
      };
    },
  },
  {
    // NULs inside values, not only at the end: PostgreSQL's jsonb refuses \u0000 wherever it is.
    name: 'embedded-nul',
    apply(d) {
      set(d, '00080070', 'LO', 'Phi\0lips');
      set(d, '00081030', 'LO', 'A\0B\0C');
      set(d, '00100010', 'PN', { Alphabetic: 'EMB\0EDDED^NUL' });
      set(d, '00204000', 'LT', 'line1\0\0line2');
      set(d, '00181030', 'LO', '\0\0\0\0'); // ProtocolName: nothing but NULs
      return {
        '00080070': 'Philips',
        '00081030': 'ABC',
        '00100010': 'EMBEDDED^NUL',
        '00204000': 'line1line2',
        '00181030': null,
      };
    },
  },
  {
    // UIDs with a trailing space instead of (or before) the NUL pad, as some old writers do.
    name: 'uid-trailing-space',
    apply(d, meta) {
      const sop = String(d['00080018'].Value![0]);
      const series = String(d['0020000E'].Value![0]);
      set(d, '00080018', 'UI', sop + ' ');
      set(d, '0020000E', 'UI', series + ' \0');
      set(meta, '00020003', 'UI', sop + ' ');
      set(d, '00080016', 'UI', '1.2.840.10008.5.1.4.1.1.2\0');
      return { '00080018': sop, '0020000E': series, '00080016': '1.2.840.10008.5.1.4.1.1.2' };
    },
  },
  {
    // Present but empty attributes, of every kind: zero-length strings, numbers, person names, sequences.
    name: 'empty-values',
    apply(d) {
      d['00080070'] = { vr: 'LO', Value: [] };
      d['00081030'] = { vr: 'LO', Value: [''] };
      d['00100010'] = { vr: 'PN', Value: [] };
      d['00100030'] = { vr: 'DA', Value: [] };
      d['00200011'] = { vr: 'IS', Value: [] };
      d['00080050'] = { vr: 'SH', Value: [] };
      d['00081110'] = { vr: 'SQ', Value: [] }; // ReferencedStudySequence
      d['00081032'] = { vr: 'SQ', Value: [{}] }; // ProcedureCodeSequence with one empty item
      return { '00080070': null, '00081030': null, '00100010': null, '00200011': null };
    },
  },
  {
    // Private elements with unusual VRs and NULs in them, next to the template's own private tags.
    name: 'private-strange-vrs',
    apply(d) {
      set(d, '00091010', 'LO', 'ODDITY CREATOR\0'); // private creator
      set(d, '00091011', 'UT', 'private text\0\0');
      set(d, '00091012', 'SH', '\0');
      set(d, '00091013', 'OB', new Uint8Array([0, 1, 2, 0]).buffer);
      set(d, '00091014', 'UN', new Uint8Array([0x41, 0x00, 0x42, 0x00]).buffer);
      set(d, '00091015', 'US', 1, 2, 3);
      set(d, '00091016', 'FD', 1.5);
      set(d, '00091017', 'SQ', { '00091018': { vr: 'LO', Value: ['nested\0'] } });
      set(d, '00091019', 'UC', 'unlimited characters\0');
      set(d, '0009101A', 'UR', 'http://example.org/x\0');
      return {};
    },
  },
  {
    // A standard attribute sent as UN (as implicit-VR converters and some modalities do).
    name: 'un-vr',
    apply(d) {
      d['00081090'] = { vr: 'UN', Value: [new Uint8Array(Buffer.from('UNMODEL\0')).buffer] };
      d['00181020'] = { vr: 'UN', Value: [new Uint8Array(Buffer.from('V1.0\0\0')).buffer] }; // SoftwareVersions
      return {};
    },
  },
  {
    // IS values beyond the 32-bit range PS3.5 allows: the index keeps them in the JSON but not in integer columns.
    name: 'is-out-of-range',
    apply(d) {
      set(d, '00200013', 'IS', '3000000000'); // InstanceNumber
      set(d, '00200011', 'IS', '-9999999999'); // SeriesNumber
      return { '00200013': 3000000000, '00200011': -9999999999 };
    },
  },
];

/** Reads a sample with dcmjs (kept out of jest's buffer pool pitfalls by copying into its own ArrayBuffer). */
function readDicom(path: string): {
  dict: Dict;
  meta: Dict;
  write(opts?: { allowInvalidVRLength?: boolean }): ArrayBuffer;
} {
  const src = readFileSync(path);
  const ab = src.buffer.slice(src.byteOffset, src.byteOffset + src.byteLength) as ArrayBuffer;
  return dcmjs.data.DicomMessage.readFile(ab) as unknown as {
    dict: Dict;
    meta: Dict;
    write(opts?: { allowInvalidVRLength?: boolean }): ArrayBuffer;
  };
}

/**
 * Makes one oddity from the template (or another sample), in a new study, series and instance unless given
 * `studyUid`/`seriesUid`.
 */
export function makeOddity(
  samples: string,
  name: string,
  opts: { template?: string; studyUid?: string; seriesUid?: string; instanceNumber?: number } = {},
): Oddity {
  const edit = EDITS.find((e) => e.name === name);
  if (!edit) throw new Error(`unknown oddity ${name}`);
  const d = readDicom(join(samples, opts.template ?? ODDITY_TEMPLATE));
  const studyUid = opts.studyUid ?? newUid();
  const seriesUid = opts.seriesUid ?? newUid();
  const sopInstanceUid = newUid();
  set(d.dict, '0020000D', 'UI', studyUid);
  set(d.dict, '0020000E', 'UI', seriesUid);
  set(d.dict, '00080018', 'UI', sopInstanceUid);
  set(d.meta, '00020003', 'UI', sopInstanceUid);
  if (opts.instanceNumber !== undefined) set(d.dict, '00200013', 'IS', String(opts.instanceNumber));
  const expect = edit.apply(d.dict, d.meta);
  return {
    name,
    bytes: Buffer.from(d.write({ allowInvalidVRLength: true })),
    studyUid,
    seriesUid,
    sopInstanceUid,
    expect,
  };
}

/** All oddities, one object each. */
export function allOddities(samples: string): Oddity[] {
  return EDITS.map((e) => makeOddity(samples, e.name));
}

/** Writes objects into `dir` (one file each) for dcmsend; returns the paths in order. */
export function writeOddities(dir: string, objects: Oddity[]): string[] {
  mkdirSync(dir, { recursive: true });
  return objects.map((o, i) => {
    const path = join(dir, `${String(i).padStart(4, '0')}-${o.name}.dcm`);
    writeFileSync(path, o.bytes);
    return path;
  });
}
