import { moveStatusOf } from './cmove';

describe('C-MOVE statuses as DCMTK words them', () => {
  it('reads the final response into a DIMSE status', () => {
    expect(moveStatusOf('Success')).toBe(0x0000);
    expect(moveStatusOf('Warning')).toBe(0xb000);
    expect(moveStatusOf('Refused: Move Destination unknown')).toBe(0xa801);
    expect(moveStatusOf('Refused: MoveDestinationUnknown')).toBe(0xa801);
    expect(moveStatusOf('Refused: Out of resources - Unable to perform sub-operations')).toBe(0xa702);
    expect(moveStatusOf('Refused: OutOfResourcesNumberOfMatches')).toBe(0xa701);
    expect(moveStatusOf('Refused: Out of resources')).toBe(0xa700);
    expect(moveStatusOf('Failed: UnableToProcess')).toBe(0xc000);
    expect(moveStatusOf('Cancel: Sub-operations terminated due to Cancel Indication')).toBe(0xfe00);
    expect(moveStatusOf('Something new')).toBeUndefined();
  });
});
