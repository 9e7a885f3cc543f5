import { createHmac } from 'node:crypto';

/**
 * Pseudonyms and date offsets are derived from the research project's secret, so a pseudonym says nothing about
 * the patient, two research projects never share one, and the first worker to meet a patient and any racing worker
 * compute the same values (PostgreSQL keeps the first; see ensurePseudonyms).
 */
const OFFSET_MIN_DAYS = 365;
const OFFSET_SPAN_DAYS = 3650;

/** The key that identifies a source patient: the Patient ID, or without one the Patient Name. */
export function patientKey(patientId: string | null, patientName: string | null): string {
  if (patientId && patientId.trim()) return patientId.trim();
  if (patientName && patientName.trim()) return `name:${patientName.trim()}`;
  return 'unknown';
}

/** The Issuer of Patient ID (0010,0021) as it takes part in a patient's identity: trimmed, '' when none. */
export function patientIssuer(issuer: string | null | undefined): string {
  return issuer?.trim() ?? '';
}

/** The pseudonym (Patient ID and Name of the copies) and the date offset of a source patient under its issuer. */
export function derivePseudonym(
  secret: Buffer,
  sourceProjectId: string,
  key: string,
  issuer = '',
): { pseudonym: string; dateOffsetDays: number } {
  // The issuer joins the input only when there is one, so patients without an issuer keep the pseudonym they had
  // before issuers were told apart; the same Patient ID under two issuers is two patients.
  const input = `patient\u0000${sourceProjectId}\u0000${key}${issuer ? `\u0000${issuer}` : ''}`;
  const mac = createHmac('sha256', secret).update(input).digest();
  const pseudonym = `RP${mac.subarray(0, 6).toString('hex').toUpperCase()}`;
  // Always into the past, so a shifted date is never in the future.
  const dateOffsetDays = -(OFFSET_MIN_DAYS + (mac.readUInt32BE(6) % OFFSET_SPAN_DAYS));
  return { pseudonym, dateOffsetDays };
}

/** True for the pseudonyms derivePseudonym makes (used to check path parameters). */
export function isPseudonym(s: string): boolean {
  return /^RP[0-9A-F]{12}$/.test(s);
}
