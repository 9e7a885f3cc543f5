import { decodeIso2022, redecodeDcmjsString, restoreCharacterSets, usesCodeExtensions } from './charset';

const ESC = '\x1b';
/** Bytes of a string written with single-byte characters (escape sequences and ISO 2022 code points). */
const bytes = (s: string) => Uint8Array.from(Buffer.from(s, 'latin1'));
/** What dcmjs hands over for those bytes when the first value of (0008,0005) is empty: windows-1252 text. */
const asDcmjs = (s: string) => new TextDecoder('windows-1252').decode(bytes(s));

// The person names of D. Clunie's charset samples (PS3.5 Annexes H and I), byte for byte.
const H31 = `Yamada^Tarou=${ESC}$B;3ED${ESC}(B^${ESC}$BB@O:${ESC}(B=${ESC}$B$d$^$@${ESC}(B^${ESC}$B$?$m$&${ESC}(B`;
const I2 =
  `Hong^Gildong=${ESC}$)C\xfb\xf3^${ESC}$)C\xd1\xce\xd4\xd7=` + `${ESC}$)C\xc8\xab^${ESC}$)C\xb1\xe6\xb5\xbf`;

describe('ISO 2022 code extensions (Japanese, Korean)', () => {
  it('decodes JIS X 0208 between escape sequences (PS3.5 H.3.1, chrH31)', () => {
    expect(decodeIso2022(bytes(H31), ['', 'ISO 2022 IR 87'], true)).toBe(
      'Yamada^Tarou=山田^太郎=やまだ^たろう',
    );
  });

  it('decodes KS X 1001 designated to G1 (PS3.5 I.2, chrI2)', () => {
    expect(decodeIso2022(bytes(I2), ['', 'ISO 2022 IR 149'], true)).toBe('Hong^Gildong=洪^吉洞=홍^길동');
  });

  it('reads half-width katakana from G1 when value 1 is ISO 2022 IR 13 (chrH32)', () => {
    const h32 = '\xd4\xcf\xc0\xde^\xc0\xdb\xb3=' + `${ESC}$B;3ED${ESC}(J^${ESC}$BB@O:${ESC}(J`;
    expect(decodeIso2022(bytes(h32), ['ISO 2022 IR 13', 'ISO 2022 IR 87'], true)).toBe('ﾔﾏﾀﾞ^ﾀﾛｳ=山田^太郎');
  });

  it('goes back to value 1 designations after a component delimiter in person names', () => {
    // A Korean G1 designation ends at '^': the following high bytes are then not Korean.
    const s = `${ESC}$)C\xc8\xab^\xe9`;
    expect(decodeIso2022(bytes(s), ['ISO 2022 IR 100', 'ISO 2022 IR 149'], true)).toBe('홍^é');
  });

  it('recovers the bytes behind the strings dcmjs produced and decodes them', () => {
    expect(redecodeDcmjsString(asDcmjs(H31), ['', 'ISO 2022 IR 87'], true)).toBe(
      'Yamada^Tarou=山田^太郎=やまだ^たろう',
    );
    expect(redecodeDcmjsString(asDcmjs(I2), ['', 'ISO 2022 IR 149'], true)).toBe(
      'Hong^Gildong=洪^吉洞=홍^길동',
    );
  });

  it('leaves strings without escape sequences alone', () => {
    expect(redecodeDcmjsString('Buc^Jérôme', ['', 'ISO 2022 IR 87'])).toBe('Buc^Jérôme');
  });

  it('only treats multi-valued ISO 2022 character sets as code extensions', () => {
    expect(usesCodeExtensions(['', 'ISO 2022 IR 87'])).toBe(true);
    expect(usesCodeExtensions(['ISO 2022 IR 13', 'ISO 2022 IR 87'])).toBe(true);
    expect(usesCodeExtensions(['ISO_IR 100'])).toBe(false);
    expect(usesCodeExtensions(['ISO_IR 192'])).toBe(false);
  });
});

describe('restoreCharacterSets on a dcmjs data set', () => {
  it('fixes person names, text and nested items, and gives (0008,0005) its value from the file back', () => {
    const dict = {
      '00080005': { vr: 'CS', Value: ['ISO_IR 192'], _rawValue: ['', 'ISO 2022 IR 149 '] },
      '00100010': {
        vr: 'PN',
        Value: [
          { Alphabetic: 'Hong^Gildong', Ideographic: asDcmjs(`${ESC}$)C\xfb\xf3^${ESC}$)C\xd1\xce\xd4\xd7`) },
        ],
      },
      '00104000': { vr: 'LT', Value: [asDcmjs(`${ESC}$)C\xc8\xab${ESC}(B`)] },
      '00081110': {
        vr: 'SQ',
        Value: [{ '00081030': { vr: 'LO', Value: [asDcmjs(`${ESC}$)C\xb1\xe6\xb5\xbf`)] } }],
      },
      '00200010': { vr: 'SH', Value: ['ID1'] },
    };
    restoreCharacterSets(dict);
    expect(dict['00080005'].Value).toEqual(['', 'ISO 2022 IR 149']);
    expect(dict['00100010'].Value).toEqual([{ Alphabetic: 'Hong^Gildong', Ideographic: '洪^吉洞' }]);
    expect(dict['00104000'].Value).toEqual(['홍']);
    expect(dict['00081110'].Value[0]['00081030'].Value).toEqual(['길동']);
    expect(dict['00200010'].Value).toEqual(['ID1']);
  });

  it('restores a single-byte character set without touching strings dcmjs already decoded', () => {
    const dict = {
      '00080005': { vr: 'CS', Value: ['ISO_IR 192'], _rawValue: ['ISO_IR 100'] },
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Buc^Jérôme' }] },
    };
    restoreCharacterSets(dict);
    expect(dict['00080005'].Value).toEqual(['ISO_IR 100']);
    expect(dict['00100010'].Value).toEqual([{ Alphabetic: 'Buc^Jérôme' }]);
  });
});
