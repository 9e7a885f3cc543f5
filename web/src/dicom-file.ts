/**
 * Just enough of PS3.10 to sort dropped files before sending them: a Part-10 file has "DICM" after its 128-byte
 * preamble, and its File Meta group (always Explicit VR Little Endian) names the SOP Instance UID, which is how the
 * STOW-RS answer refers to each file. Everything else is the gateway's job.
 */
const LONG_VRS = new Set(['OB', 'OD', 'OF', 'OL', 'OV', 'OW', 'SQ', 'UC', 'UN', 'UR', 'UT']);

/** null when the bytes are not a Part-10 file; otherwise its Media Storage SOP Instance UID if the meta names one. */
export function sniffPart10(head: Uint8Array): { sopInstanceUid?: string } | null {
  if (head.length < 132) return null;
  if (head[128] !== 0x44 || head[129] !== 0x49 || head[130] !== 0x43 || head[131] !== 0x4d) return null;
  const view = new DataView(head.buffer, head.byteOffset, head.byteLength);
  let at = 132;
  while (at + 8 <= head.length) {
    const group = view.getUint16(at, true);
    const element = view.getUint16(at + 2, true);
    if (group !== 0x0002) break;
    const vr = String.fromCharCode(head[at + 4], head[at + 5]);
    let length: number;
    let value: number;
    if (LONG_VRS.has(vr)) {
      if (at + 12 > head.length) break;
      length = view.getUint32(at + 8, true);
      value = at + 12;
    } else {
      length = view.getUint16(at + 6, true);
      value = at + 8;
    }
    if (value + length > head.length) break;
    if (element === 0x0003) {
      const uid = new TextDecoder('ascii')
        .decode(head.subarray(value, value + length))
        .replace(/[\0 ]+$/, '');
      return { sopInstanceUid: uid || undefined };
    }
    at = value + length;
  }
  return {};
}

/** Words for a STOW-RS Failure Reason (PS3.4 Annex GG / PS3.18 Table I.2-1 and the gateway's own uses). */
export function failureReasonText(code: number | undefined): string {
  switch (code) {
    case 0xc000:
      return 'The file cannot be read as DICOM: it is damaged, incomplete or not a DICOM object.';
    case 0xa900:
      return 'Required identifiers are missing or invalid, or the pixel data does not match its description.';
    case 0xa910:
      return 'The file belongs to another study than the one it was sent to.';
    case 0x0111:
      return 'A different file is already archived under the same SOP Instance UID.';
    case 0x0110:
      return 'The archive was unavailable. Retry later.';
    case 0xa700:
      return 'The archive ran out of resources before this file. Retry later.';
    case 0x0122:
      return 'This kind of DICOM object (SOP Class) is not accepted.';
    case 0x0124:
      return 'You may not store into this project.';
    default:
      return code === undefined
        ? 'The archive did not accept the file.'
        : `The archive did not accept the file (reason code 0x${code.toString(16).toUpperCase().padStart(4, '0')}).`;
  }
}
