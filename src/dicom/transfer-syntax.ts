/**
 * The one transfer-syntax table (PS3.5 §10 and Annex A, PS3.6 Table A-1) and the properties the gateway decides
 * on. "Uncompressed" and "encapsulated" are different questions: Encapsulated Uncompressed Explicit VR Little
 * Endian (1.2.840.10008.1.2.1.98) keeps raw pixel bytes in fragments, so its frames travel as octet-stream like a
 * native syntax's, while the parser must not treat its Pixel Data as one native value.
 */

export const TransferSyntax = {
  implicitVrLittleEndian: '1.2.840.10008.1.2',
  explicitVrLittleEndian: '1.2.840.10008.1.2.1',
  encapsulatedUncompressed: '1.2.840.10008.1.2.1.98',
  deflatedExplicitVrLittleEndian: '1.2.840.10008.1.2.1.99',
  explicitVrBigEndian: '1.2.840.10008.1.2.2',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegExtended: '1.2.840.10008.1.2.4.51',
  jpegLosslessP14: '1.2.840.10008.1.2.4.57',
  jpegLosslessSv1: '1.2.840.10008.1.2.4.70',
  jpegLsLossless: '1.2.840.10008.1.2.4.80',
  jpegLsNearLossless: '1.2.840.10008.1.2.4.81',
  jpeg2000Lossless: '1.2.840.10008.1.2.4.90',
  jpeg2000: '1.2.840.10008.1.2.4.91',
  jpeg2000Part2Lossless: '1.2.840.10008.1.2.4.92',
  jpeg2000Part2: '1.2.840.10008.1.2.4.93',
  htj2kLossless: '1.2.840.10008.1.2.4.201',
  htj2kLosslessRpcl: '1.2.840.10008.1.2.4.202',
  htj2k: '1.2.840.10008.1.2.4.203',
  jpegXlLossless: '1.2.840.10008.1.2.4.110',
  mpeg2MainProfile: '1.2.840.10008.1.2.4.100',
  mpeg4HighProfile: '1.2.840.10008.1.2.4.102',
  hevcMainProfile: '1.2.840.10008.1.2.4.107',
  rleLossless: '1.2.840.10008.1.2.5',
} as const;

/** What a transfer syntax means for reading and sending an object. */
export interface TransferSyntaxInfo {
  uid: string;
  name: string;
  explicitVr: boolean;
  littleEndian: boolean;
  /** The data set after the File Meta is deflated (RFC 1951). */
  deflated: boolean;
  /** Pixel Data is a sequence of fragments (PS3.5 §A.4) rather than one value. */
  encapsulated: boolean;
  /** Pixel bytes are not raw samples (they need a decoder). */
  compressed: boolean;
  /** The encoding may lose information (PS3.5: lossy or possibly lossy processes). */
  lossy: boolean;
  /** Media type of one frame or bulk data item in this syntax (PS3.18 Table 8.7.3-5), for encapsulated ones. */
  frameMediaType?: string;
}

const row = (
  uid: string,
  name: string,
  p: Partial<Omit<TransferSyntaxInfo, 'uid' | 'name'>> = {},
): TransferSyntaxInfo => ({
  uid,
  name,
  explicitVr: true,
  littleEndian: true,
  deflated: false,
  encapsulated: true,
  compressed: true,
  lossy: false,
  ...p,
});
const native = { encapsulated: false, compressed: false };

const TABLE: readonly TransferSyntaxInfo[] = [
  row(TransferSyntax.implicitVrLittleEndian, 'Implicit VR Little Endian', { ...native, explicitVr: false }),
  row(TransferSyntax.explicitVrLittleEndian, 'Explicit VR Little Endian', native),
  row(TransferSyntax.encapsulatedUncompressed, 'Encapsulated Uncompressed Explicit VR Little Endian', {
    compressed: false,
  }),
  row(TransferSyntax.deflatedExplicitVrLittleEndian, 'Deflated Explicit VR Little Endian', {
    ...native,
    deflated: true,
  }),
  row(TransferSyntax.explicitVrBigEndian, 'Explicit VR Big Endian', { ...native, littleEndian: false }),
  row(TransferSyntax.jpegBaseline, 'JPEG Baseline (Process 1)', {
    lossy: true,
    frameMediaType: 'image/jpeg',
  }),
  row(TransferSyntax.jpegExtended, 'JPEG Extended (Process 2 & 4)', {
    lossy: true,
    frameMediaType: 'image/jpeg',
  }),
  row(TransferSyntax.jpegLosslessP14, 'JPEG Lossless, Non-Hierarchical (Process 14)', {
    frameMediaType: 'image/jpeg',
  }),
  row(TransferSyntax.jpegLosslessSv1, 'JPEG Lossless, Non-Hierarchical, First-Order Prediction', {
    frameMediaType: 'image/jpeg',
  }),
  row(TransferSyntax.jpegLsLossless, 'JPEG-LS Lossless', { frameMediaType: 'image/jls' }),
  row(TransferSyntax.jpegLsNearLossless, 'JPEG-LS Lossy (Near-Lossless)', {
    lossy: true,
    frameMediaType: 'image/jls',
  }),
  row(TransferSyntax.jpeg2000Lossless, 'JPEG 2000 (Lossless Only)', { frameMediaType: 'image/jp2' }),
  row(TransferSyntax.jpeg2000, 'JPEG 2000', { lossy: true, frameMediaType: 'image/jp2' }),
  row(TransferSyntax.jpeg2000Part2Lossless, 'JPEG 2000 Part 2 Multi-component (Lossless Only)', {
    frameMediaType: 'image/jpx',
  }),
  row(TransferSyntax.jpeg2000Part2, 'JPEG 2000 Part 2 Multi-component', {
    lossy: true,
    frameMediaType: 'image/jpx',
  }),
  row(TransferSyntax.htj2kLossless, 'High-Throughput JPEG 2000 (Lossless Only)', {
    frameMediaType: 'image/jphc',
  }),
  row(TransferSyntax.htj2kLosslessRpcl, 'High-Throughput JPEG 2000 with RPCL Options (Lossless Only)', {
    frameMediaType: 'image/jphc',
  }),
  row(TransferSyntax.htj2k, 'High-Throughput JPEG 2000', { lossy: true, frameMediaType: 'image/jphc' }),
  row(TransferSyntax.jpegXlLossless, 'JPEG XL Lossless', { frameMediaType: 'image/jxl' }),
  row('1.2.840.10008.1.2.4.111', 'JPEG XL JPEG Recompression', { lossy: true, frameMediaType: 'image/jxl' }),
  row('1.2.840.10008.1.2.4.112', 'JPEG XL', { lossy: true, frameMediaType: 'image/jxl' }),
  row(TransferSyntax.rleLossless, 'RLE Lossless', { frameMediaType: 'image/dicom-rle' }),
  ...(
    [
      ['1.2.840.10008.1.2.4.100', 'MPEG2 Main Profile / Main Level', 'video/mpeg'],
      ['1.2.840.10008.1.2.4.100.1', 'Fragmentable MPEG2 Main Profile / Main Level', 'video/mpeg'],
      ['1.2.840.10008.1.2.4.101', 'MPEG2 Main Profile / High Level', 'video/mpeg'],
      ['1.2.840.10008.1.2.4.101.1', 'Fragmentable MPEG2 Main Profile / High Level', 'video/mpeg'],
      ['1.2.840.10008.1.2.4.102', 'MPEG-4 AVC/H.264 High Profile / Level 4.1', 'video/mp4'],
      ['1.2.840.10008.1.2.4.102.1', 'Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.1', 'video/mp4'],
      ['1.2.840.10008.1.2.4.103', 'MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1', 'video/mp4'],
      ['1.2.840.10008.1.2.4.103.1', 'Fragmentable MPEG-4 AVC/H.264 BD-compatible High Profile', 'video/mp4'],
      ['1.2.840.10008.1.2.4.104', 'MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video', 'video/mp4'],
      [
        '1.2.840.10008.1.2.4.104.1',
        'Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video',
        'video/mp4',
      ],
      ['1.2.840.10008.1.2.4.105', 'MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video', 'video/mp4'],
      [
        '1.2.840.10008.1.2.4.105.1',
        'Fragmentable MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video',
        'video/mp4',
      ],
      ['1.2.840.10008.1.2.4.106', 'MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2', 'video/mp4'],
      [
        '1.2.840.10008.1.2.4.106.1',
        'Fragmentable MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2',
        'video/mp4',
      ],
      ['1.2.840.10008.1.2.4.107', 'HEVC/H.265 Main Profile / Level 5.1', 'video/H265'],
      ['1.2.840.10008.1.2.4.108', 'HEVC/H.265 Main 10 Profile / Level 5.1', 'video/H265'],
    ] as const
  ).map(([uid, name, mediaType]) => row(uid, name, { lossy: true, frameMediaType: mediaType })),
];

const BY_UID: ReadonlyMap<string, TransferSyntaxInfo> = new Map(TABLE.map((t) => [t.uid, t]));

/** Every transfer syntax the gateway knows, in PS3.6 order. */
export const TRANSFER_SYNTAXES: readonly TransferSyntaxInfo[] = TABLE;

/** A UID as read from a data set may carry trailing NUL or space padding. */
function clean(uid: string): string {
  return uid.trim().replace(/\0+$/, '');
}

/** The properties of a transfer syntax, or undefined for one the gateway does not know. */
export function transferSyntaxInfo(uid: string): TransferSyntaxInfo | undefined {
  return BY_UID.get(clean(uid));
}

/** True when pixel bytes are raw samples (native syntaxes and 1.2.840.10008.1.2.1.98): frames are octet-stream. */
export function isUncompressedTransferSyntax(uid: string): boolean {
  return transferSyntaxInfo(uid)?.compressed === false;
}

/** True when Pixel Data is one native value (not fragments): its length follows from the image attributes. */
export function hasNativePixelData(uid: string): boolean {
  return transferSyntaxInfo(uid)?.encapsulated === false;
}

/** Media type of one frame in this (encapsulated) syntax, per PS3.18 Table 8.7.3-5. */
export function frameMediaTypeOf(uid: string): string | undefined {
  return transferSyntaxInfo(uid)?.frameMediaType;
}
