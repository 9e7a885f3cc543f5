import { dicomJsonToXml, escapeXml } from './xml';

describe('Native DICOM Model XML (PS3.19 Annex A)', () => {
  it('writes a document with the namespace, tag, keyword and VR of each attribute, values numbered from 1', () => {
    const xml = dicomJsonToXml({
      '00080016': { vr: 'UI', Value: ['1.2.840.10008.5.1.4.1.1.2'] },
      '00280030': { vr: 'DS', Value: [0.5, 0.25] },
    });
    expect(xml).toBe(
      '<?xml version="1.0" encoding="UTF-8"?>\n' +
        '<NativeDicomModel xmlns="http://dicom.nema.org/PS3.19/models/NativeDICOM" xml:space="preserve">' +
        '<DicomAttribute tag="00080016" vr="UI" keyword="SOPClassUID"><Value number="1">1.2.840.10008.5.1.4.1.1.2</Value></DicomAttribute>' +
        '<DicomAttribute tag="00280030" vr="DS" keyword="PixelSpacing"><Value number="1">0.5</Value><Value number="2">0.25</Value></DicomAttribute>' +
        '</NativeDicomModel>\n',
    );
  });

  it('orders attributes by tag and writes empty attributes as empty elements', () => {
    const xml = dicomJsonToXml({ '00200013': { vr: 'IS', Value: [3] }, '00080020': { vr: 'DA' } });
    expect(xml.indexOf('tag="00080020"')).toBeLessThan(xml.indexOf('tag="00200013"'));
    expect(xml).toContain('<DicomAttribute tag="00080020" vr="DA" keyword="StudyDate"/>');
  });

  it('splits person names into groups and components, leaving out empty components', () => {
    const xml = dicomJsonToXml({
      '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Yamada^Tarou', Ideographic: '山田^太郎' }, null] },
    });
    expect(xml).toContain(
      '<PersonName number="1"><Alphabetic><FamilyName>Yamada</FamilyName><GivenName>Tarou</GivenName></Alphabetic>' +
        '<Ideographic><FamilyName>山田</FamilyName><GivenName>太郎</GivenName></Ideographic></PersonName>' +
        '<PersonName number="2"/>',
    );
    expect(dicomJsonToXml({ '00080090': { vr: 'PN', Value: [{ Alphabetic: '^^^Dr' }] } })).toContain(
      '<Alphabetic><NamePrefix>Dr</NamePrefix></Alphabetic>',
    );
  });

  it('nests sequence items, numbered from 1', () => {
    const xml = dicomJsonToXml({
      '00081199': {
        vr: 'SQ',
        Value: [{ '00081155': { vr: 'UI', Value: ['1.2'] } }, { '00081155': { vr: 'UI', Value: ['1.3'] } }],
      },
    });
    expect(xml).toContain(
      '<DicomAttribute tag="00081199" vr="SQ" keyword="ReferencedSOPSequence"><Item number="1">' +
        '<DicomAttribute tag="00081155" vr="UI" keyword="ReferencedSOPInstanceUID"><Value number="1">1.2</Value></DicomAttribute>' +
        '</Item><Item number="2">',
    );
  });

  it('writes bulk data as a URI reference and small binaries inline', () => {
    const xml = dicomJsonToXml({
      '7FE00010': {
        vr: 'OW',
        BulkDataURI: 'https://h/dicom-web/studies/1/series/2/instances/3/bulk/7FE00010',
      },
      '00282000': { vr: 'OB', InlineBinary: 'AAEC' },
    });
    expect(xml).toContain(
      '<BulkData uri="https://h/dicom-web/studies/1/series/2/instances/3/bulk/7FE00010"/>',
    );
    expect(xml).toContain(
      '<DicomAttribute tag="00282000" vr="OB" keyword="ICCProfile"><InlineBinary>AAEC</InlineBinary>',
    );
  });

  it('names the Private Creator of private elements and gives them no keyword', () => {
    const xml = dicomJsonToXml({
      '00290010': { vr: 'LO', Value: ['ACME 1.0'] },
      '00291008': { vr: 'CS', Value: ['X'] },
    });
    expect(xml).toContain('<DicomAttribute tag="00290010" vr="LO"><Value number="1">ACME 1.0</Value>');
    expect(xml).toContain('<DicomAttribute tag="00291008" vr="CS" privateCreator="ACME 1.0">');
  });

  it('finds keywords of repeating groups such as overlays', () => {
    expect(dicomJsonToXml({ '60020010': { vr: 'US', Value: [512] } })).toContain('keyword="OverlayRows"');
  });

  it('escapes markup and drops characters XML cannot carry', () => {
    const xml = dicomJsonToXml({ '00081030': { vr: 'LO', Value: ['CT <head> & "neck"\u0001'] } });
    expect(xml).toContain('<Value number="1">CT &lt;head&gt; &amp; &quot;neck&quot;</Value>');
    expect(escapeXml("a'b")).toBe('a&apos;b');
  });

  it('writes one document per data set when given several', () => {
    const docs = dicomJsonToXml([
      { '00080018': { vr: 'UI', Value: ['1'] } },
      { '00080018': { vr: 'UI', Value: ['2'] } },
    ]);
    expect(docs).toHaveLength(2);
    expect(docs[1]).toContain('<Value number="1">2</Value>');
  });
});
