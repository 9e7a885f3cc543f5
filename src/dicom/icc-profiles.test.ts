import { matrixTrcProfileFor, outputProfile } from './icc-profiles';

describe('generated ICC output profiles', () => {
  it.each(['adobergb', 'rommrgb'] as const)('%s is a well-formed ICC v2.1 RGB display profile', (space) => {
    const p = outputProfile(space);
    expect(p.readUInt32BE(0)).toBe(p.length);
    expect(p.toString('latin1', 36, 40)).toBe('acsp');
    expect(p.toString('latin1', 12, 24)).toBe('mntrRGB XYZ ');
    expect(p.readUInt32BE(8)).toBe(0x02100000);
    const count = p.readUInt32BE(128);
    const tags = new Map<string, { at: number; size: number }>();
    for (let i = 0; i < count; i++) {
      const o = 132 + 12 * i;
      tags.set(p.toString('latin1', o, o + 4), { at: p.readUInt32BE(o + 4), size: p.readUInt32BE(o + 8) });
    }
    expect([...tags.keys()].sort()).toEqual(
      ['bTRC', 'bXYZ', 'cprt', 'desc', 'gTRC', 'gXYZ', 'rTRC', 'rXYZ', 'wtpt'].sort(),
    );
    for (const { at, size } of tags.values()) {
      expect(at % 4).toBe(0);
      expect(at + size).toBeLessThanOrEqual(p.length);
    }
    // The colorants add up to the D50 white point (ICC.1 §6.3.4.3), within s15Fixed16 rounding.
    const xyz = (sig: string) => {
      const at = tags.get(sig)!.at;
      return [0, 1, 2].map((k) => p.readInt32BE(at + 8 + 4 * k) / 65536);
    };
    const white = [0, 1, 2].map((k) => xyz('rXYZ')[k] + xyz('gXYZ')[k] + xyz('bXYZ')[k]);
    [0.9642, 1.0, 0.8249].forEach((w, k) => expect(Math.abs(white[k] - w)).toBeLessThan(0.002));
    expect(matrixTrcProfileFor(space).equals(p)).toBe(true); // deterministic bytes (stable ETags)
  });
});
