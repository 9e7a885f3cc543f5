import { describeFailure, dimseStatusWords } from './status';

describe('DIMSE failures in words', () => {
  it('reads Orthanc and DCMTK descriptions', () => {
    expect(
      describeFailure(
        'DicomAssociation - connecting to AET "DEAD": TCP Initialization Error: Connection refused',
        'dead',
      ),
    ).toEqual({
      kind: 'unreachable',
      message: 'node dead is unreachable: nothing answers at its address and port',
    });
    const rej = describeFailure(
      'Association Rejected: Result: Rejected Permanent, Source: Service User, Reason: Called AE Title Not Recognized',
      'qr',
    );
    expect(rej.kind).toBe('rejected');
    expect(rej.message).toBe(
      'node qr rejected the association (it does not know the AE title it was called by)',
    );
    const st = describeFailure('C-MOVE SCU to AET "PACSB" has failed with DIMSE status 0xA801', 'b');
    expect(st).toEqual({
      kind: 'dimse',
      dimseStatus: '0xA801',
      message:
        'node b answered DIMSE status 0xA801: refused: move destination unknown (the node does not know our AE title)',
    });
    expect(dimseStatusWords(0xb000)).toMatch(/one or more failures/);
    expect(dimseStatusWords(0xc123)).toBe('failed: unable to process');
  });
});
