import { derivePseudonym, isPseudonym, patientIssuer, patientKey } from './keys';

describe('cohort pseudonyms and date offsets', () => {
  const secretA = Buffer.alloc(32, 1);
  const secretB = Buffer.alloc(32, 2);

  it('derives the same pseudonym and offset for the same patient under one secret', () => {
    expect(derivePseudonym(secretA, 'clinic', 'PAT-1')).toEqual(derivePseudonym(secretA, 'clinic', 'PAT-1'));
  });

  it('gives another research project (secret) another pseudonym and offset', () => {
    const a = derivePseudonym(secretA, 'clinic', 'PAT-1');
    const b = derivePseudonym(secretB, 'clinic', 'PAT-1');
    expect(a.pseudonym).not.toBe(b.pseudonym);
    expect(isPseudonym(a.pseudonym)).toBe(true);
  });

  it('shifts dates one to eleven years into the past', () => {
    for (let i = 0; i < 200; i++) {
      const { dateOffsetDays } = derivePseudonym(secretA, 'clinic', `P${i}`);
      expect(dateOffsetDays).toBeLessThanOrEqual(-365);
      expect(dateOffsetDays).toBeGreaterThan(-365 - 3650);
      expect(Number.isInteger(dateOffsetDays)).toBe(true);
    }
  });

  it('keys a patient by Patient ID, else by name, never mixing the two', () => {
    expect(patientKey(' 123 ', 'Doe^John')).toBe('123');
    expect(patientKey('', 'Doe^John')).toBe('name:Doe^John');
    expect(patientKey(null, null)).toBe('unknown');
  });

  it('gives the same Patient ID under two issuers two pseudonyms, and keeps the old one without an issuer', () => {
    const a = derivePseudonym(secretA, 'clinic', 'PAT-1', 'HOSP-A');
    const b = derivePseudonym(secretA, 'clinic', 'PAT-1', 'HOSP-B');
    const none = derivePseudonym(secretA, 'clinic', 'PAT-1', '');
    expect(a.pseudonym).not.toBe(b.pseudonym);
    expect(a.pseudonym).not.toBe(none.pseudonym);
    expect(none).toEqual(derivePseudonym(secretA, 'clinic', 'PAT-1'));
    expect(derivePseudonym(secretA, 'clinic', 'PAT-1', 'HOSP-A')).toEqual(a);
    expect(patientIssuer(' HOSP-A ')).toBe('HOSP-A');
    expect(patientIssuer(null)).toBe('');
  });
});
