import {
  describeOffers,
  formatMediaType,
  frameMediaTypeForTransferSyntax,
  isNativeTransferSyntax,
  MediaType,
  MediaTypeOffer,
  negotiateMediaType,
  parseAccept,
  parseContentType,
  partContentType,
  TransferSyntax,
} from './media-types';

const EXPLICIT_LE = TransferSyntax.explicitVrLittleEndian;
const JPEG_LOSSLESS = TransferSyntax.jpegLosslessSv1;

/** Retrieve Study/Series/Instance (PS3.18 §10.4.1.1.1): stored as JPEG Lossless, transcodable to Explicit VR LE. */
const INSTANCE_OFFERS: MediaTypeOffer[] = [
  {
    mediaType: MediaType.multipartRelated,
    partType: MediaType.dicom,
    transferSyntaxes: [JPEG_LOSSLESS, EXPLICIT_LE],
  },
];

/** Retrieve Frames of a JPEG-LS instance: native octets after decoding, or the stored JPEG-LS codestream. */
const FRAME_OFFERS: MediaTypeOffer[] = [
  { mediaType: MediaType.multipartRelated, partType: MediaType.octetStream, transferSyntaxes: [EXPLICIT_LE] },
  {
    mediaType: MediaType.multipartRelated,
    partType: MediaType.jls,
    transferSyntaxes: [TransferSyntax.jpegLsLossless],
  },
];

/** Retrieve Metadata (PS3.18 §10.4.1.1.2). */
const METADATA_OFFERS: MediaTypeOffer[] = [
  { mediaType: MediaType.dicomJson },
  { mediaType: MediaType.multipartRelated, partType: MediaType.dicomXml },
];

describe('parseContentType', () => {
  it('lower-cases the type and parameter names and unquotes values', () => {
    expect(parseContentType('Multipart/Related; Type="application/dicom"; BOUNDARY="a b;c"')).toEqual({
      type: 'multipart/related',
      params: { type: 'application/dicom', boundary: 'a b;c' },
    });
  });

  it('accepts the unquoted type=application/dicom that clients send', () => {
    expect(parseContentType('multipart/related; type=application/dicom; boundary=xyz')).toEqual({
      type: 'multipart/related',
      params: { type: 'application/dicom', boundary: 'xyz' },
    });
  });

  it('unescapes backslashes inside quoted values', () => {
    expect(parseContentType('text/plain; x="a\\"b\\\\c"')?.params.x).toBe('a"b\\c');
  });

  it.each([undefined, '', 'dicom', '/json', 'application/', 'app lication/json'])(
    'returns null for %j',
    (header) => {
      expect(parseContentType(header)).toBeNull();
    },
  );
});

describe('parseAccept', () => {
  it('reads media ranges, parameters and q values, keeping commas inside quotes', () => {
    const entries = parseAccept(
      'multipart/related; type="application/dicom"; transfer-syntax=*, application/dicom+json;q=0.5, */*;q=0.1, text/x;a="1,2"',
    );
    expect(entries.map(({ type, params, q }) => ({ type, params, q }))).toEqual([
      { type: 'multipart/related', params: { type: 'application/dicom', 'transfer-syntax': '*' }, q: 1 },
      { type: 'application/dicom+json', params: {}, q: 0.5 },
      { type: '*/*', params: {}, q: 0.1 },
      { type: 'text/x', params: { a: '1,2' }, q: 1 },
    ]);
  });

  it('treats parameters after q as accept extensions, not media type parameters', () => {
    expect(parseAccept('application/dicom;q=0.3;transfer-syntax=1.2.3')).toEqual([
      { type: 'application/dicom', params: {}, q: 0.3, index: 0 },
    ]);
  });

  it('drops malformed ranges and invalid q values but keeps the rest', () => {
    expect(
      parseAccept('garbage, image/png;q=2, image/jpeg;q=0.8, , image/gif;q=x').map((e) => e.type),
    ).toEqual(['image/jpeg']);
  });

  it('joins repeated Accept headers', () => {
    expect(parseAccept(['image/png', 'image/jpeg;q=0.5']).map((e) => [e.type, e.q])).toEqual([
      ['image/png', 1],
      ['image/jpeg', 0.5],
    ]);
  });
});

describe('negotiateMediaType', () => {
  it('sends the stored transfer syntax for transfer-syntax=*', () => {
    const result = negotiateMediaType(
      INSTANCE_OFFERS,
      'multipart/related; type="application/dicom"; transfer-syntax=*',
    );
    expect(result).toMatchObject({
      mediaType: 'multipart/related',
      partType: 'application/dicom',
      transferSyntax: JPEG_LOSSLESS,
    });
  });

  it('falls back to Explicit VR Little Endian when no transfer syntax is named (PS3.18 §8.7.3.5.2)', () => {
    const result = negotiateMediaType(INSTANCE_OFFERS, 'multipart/related; type="application/dicom"');
    expect(result?.transferSyntax).toBe(EXPLICIT_LE);
  });

  it('honours a default transfer syntax chosen by a server that cannot transcode', () => {
    const offers = [
      { ...INSTANCE_OFFERS[0], transferSyntaxes: [JPEG_LOSSLESS], defaultTransferSyntax: JPEG_LOSSLESS },
    ];
    expect(negotiateMediaType(offers, 'multipart/related; type="application/dicom"')?.transferSyntax).toBe(
      JPEG_LOSSLESS,
    );
  });

  it('matches no request naming no transfer syntax when the declared default cannot be produced', () => {
    // What WADO-RS instance retrieval declares for an object nothing can decode: ELE stays the default, unlisted.
    const offers = [
      {
        ...INSTANCE_OFFERS[0],
        transferSyntaxes: ['*', JPEG_LOSSLESS],
        defaultTransferSyntax: EXPLICIT_LE,
      },
    ];
    expect(negotiateMediaType(offers, 'multipart/related; type="application/dicom"')).toBeNull();
    expect(negotiateMediaType(offers, 'multipart/related')).toBeNull();
    expect(
      negotiateMediaType(offers, 'multipart/related; type="application/dicom"; transfer-syntax=*')
        ?.transferSyntax,
    ).toBe('*');
    expect(
      negotiateMediaType(
        offers,
        `multipart/related; type="application/dicom"; transfer-syntax=${JPEG_LOSSLESS}`,
      )?.transferSyntax,
    ).toBe(JPEG_LOSSLESS);
  });

  it('sends a named transfer syntax the resource can produce', () => {
    const result = negotiateMediaType(
      INSTANCE_OFFERS,
      `multipart/related; type="application/dicom"; transfer-syntax=${EXPLICIT_LE}`,
    );
    expect(result?.transferSyntax).toBe(EXPLICIT_LE);
  });

  it('returns null (406) for a transfer syntax the resource cannot produce, and lists what it can', () => {
    const accept = `multipart/related; type="application/dicom"; transfer-syntax=${TransferSyntax.jpegBaseline}`;
    expect(negotiateMediaType(INSTANCE_OFFERS, accept)).toBeNull();
    expect(describeOffers(INSTANCE_OFFERS)).toEqual([
      `multipart/related; type="application/dicom"; transfer-syntax=${JPEG_LOSSLESS}`,
      `multipart/related; type="application/dicom"; transfer-syntax=${EXPLICIT_LE}`,
    ]);
  });

  it('returns null (406) when only single-part types are accepted for a multipart-only resource', () => {
    expect(negotiateMediaType(INSTANCE_OFFERS, 'application/dicom, image/jpeg')).toBeNull();
  });

  it('prefers the higher q whatever the order in the header', () => {
    const result = negotiateMediaType(
      FRAME_OFFERS,
      'multipart/related; type="application/octet-stream"; q=0.5, multipart/related; type="image/jls"',
    );
    expect(result).toMatchObject({
      partType: 'image/jls',
      transferSyntax: TransferSyntax.jpegLsLossless,
      q: 1,
    });
  });

  it('breaks ties by the order the server prefers, not the order in the header', () => {
    const result = negotiateMediaType(
      FRAME_OFFERS,
      'multipart/related; type="image/jls", multipart/related; type="application/octet-stream"',
    );
    expect(result?.partType).toBe('application/octet-stream');
  });

  it('accepts the unquoted type and transfer-syntax that viewers send for frames', () => {
    const result = negotiateMediaType(
      FRAME_OFFERS,
      `multipart/related; type=application/octet-stream; transfer-syntax=${EXPLICIT_LE}`,
    );
    expect(result).toMatchObject({ partType: 'application/octet-stream', transferSyntax: EXPLICIT_LE });
  });

  it('matches a wildcard part type such as type="image/*"', () => {
    expect(negotiateMediaType(FRAME_OFFERS, 'multipart/related; type="image/*"')?.partType).toBe('image/jls');
  });

  it('answers */* with the server default', () => {
    expect(negotiateMediaType(INSTANCE_OFFERS, '*/*')).toMatchObject({
      partType: 'application/dicom',
      transferSyntax: EXPLICIT_LE,
    });
    expect(negotiateMediaType(METADATA_OFFERS, '*/*')?.mediaType).toBe('application/dicom+json');
  });

  it('answers multipart/* with the first multipart representation', () => {
    expect(negotiateMediaType(METADATA_OFFERS, 'multipart/*')).toMatchObject({
      mediaType: 'multipart/related',
      partType: 'application/dicom+xml',
    });
  });

  it('lets a more specific q=0 entry veto what a wildcard allows', () => {
    expect(negotiateMediaType(METADATA_OFFERS, '*/*, application/dicom+json;q=0')?.partType).toBe(
      'application/dicom+xml',
    );
    expect(
      negotiateMediaType(METADATA_OFFERS, 'application/dicom+json;q=0, multipart/related;q=0'),
    ).toBeNull();
  });

  it('prefers an explicit default-syntax entry over a lower-q transfer-syntax=* entry for the same type', () => {
    const result = negotiateMediaType(
      INSTANCE_OFFERS,
      'multipart/related; type="application/dicom"; transfer-syntax=*; q=0.2, multipart/related; type="application/dicom"',
    );
    expect(result).toMatchObject({ transferSyntax: EXPLICIT_LE, q: 1 });
  });

  it('sends the server default when there is no Accept header', () => {
    expect(negotiateMediaType(METADATA_OFFERS, undefined)?.mediaType).toBe('application/dicom+json');
    expect(negotiateMediaType(INSTANCE_OFFERS, '')?.transferSyntax).toBe(EXPLICIT_LE);
  });

  it('gives the accept query parameter precedence over the header when it names something supported', () => {
    expect(
      negotiateMediaType(
        METADATA_OFFERS,
        'application/dicom+json',
        'multipart/related; type="application/dicom+xml"',
      )?.partType,
    ).toBe('application/dicom+xml');
    expect(negotiateMediaType(METADATA_OFFERS, 'application/dicom+json', 'image/png')?.mediaType).toBe(
      'application/dicom+json',
    );
  });

  it('ignores a transfer-syntax parameter on media types that have none', () => {
    expect(
      negotiateMediaType(METADATA_OFFERS, `application/dicom+json; transfer-syntax=${EXPLICIT_LE}`)
        ?.mediaType,
    ).toBe('application/dicom+json');
  });
});

describe('response Content-Types', () => {
  it('formats the part Content-Type of a negotiated result', () => {
    const result = negotiateMediaType(
      INSTANCE_OFFERS,
      'multipart/related; type="application/dicom"; transfer-syntax=*',
    );
    expect(partContentType(result!)).toBe(`application/dicom; transfer-syntax=${JPEG_LOSSLESS}`);
    expect(partContentType(negotiateMediaType(METADATA_OFFERS, '*/*')!)).toBe('application/dicom+json');
  });

  it('quotes parameter values that are not tokens', () => {
    expect(
      formatMediaType('multipart/related', { type: 'application/dicom', boundary: 'abc123', x: undefined }),
    ).toBe('multipart/related; type="application/dicom"; boundary=abc123');
  });
});

describe('frame media types by transfer syntax (PS3.18 Tables 8.7.3-4 and 8.7.3-5)', () => {
  it.each([
    ['1.2.840.10008.1.2.4.50', 'image/jpeg'],
    ['1.2.840.10008.1.2.4.51', 'image/jpeg'],
    ['1.2.840.10008.1.2.4.57', 'image/jpeg'],
    ['1.2.840.10008.1.2.4.70', 'image/jpeg'],
    ['1.2.840.10008.1.2.4.80', 'image/jls'],
    ['1.2.840.10008.1.2.4.81', 'image/jls'],
    ['1.2.840.10008.1.2.4.90', 'image/jp2'],
    ['1.2.840.10008.1.2.4.91', 'image/jp2'],
    ['1.2.840.10008.1.2.4.92', 'image/jpx'],
    ['1.2.840.10008.1.2.4.93', 'image/jpx'],
    ['1.2.840.10008.1.2.4.201', 'image/jphc'],
    ['1.2.840.10008.1.2.4.202', 'image/jphc'],
    ['1.2.840.10008.1.2.4.203', 'image/jphc'],
    ['1.2.840.10008.1.2.5', 'image/dicom-rle'],
    ['1.2.840.10008.1.2.4.102', 'video/mp4'],
    ['1.2.840.10008.1.2', 'application/octet-stream'],
    ['1.2.840.10008.1.2.1', 'application/octet-stream'],
    ['1.2.840.10008.1.2.1.99', 'application/octet-stream'],
    ['1.2.840.10008.1.2.2', 'application/octet-stream'],
    ['1.2.840.10008.1.2.1\0', 'application/octet-stream'],
  ])('%s → %s', (uid, mediaType) => {
    expect(frameMediaTypeForTransferSyntax(uid)).toBe(mediaType);
  });

  it('knows nothing of unknown transfer syntaxes', () => {
    expect(frameMediaTypeForTransferSyntax('1.2.3.4')).toBeUndefined();
    expect(isNativeTransferSyntax('1.2.840.10008.1.2.4.50')).toBe(false);
    expect(isNativeTransferSyntax('1.2.840.10008.1.2.1')).toBe(true);
  });
});
