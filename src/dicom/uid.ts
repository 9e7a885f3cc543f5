/**
 * The one UID syntax of the gateway (PS3.5 §9.1): digits in non-empty dot-separated components, at most 64
 * characters. Every route, API body, query key and parser check uses it, so QIDO, WADO and STOW never disagree.
 * Leading zeros inside a component are tolerated by `isUid` because real archives hold such UIDs; `isStrictUid`
 * is the letter of §9.1 for what the gateway itself checks as conformance.
 */
import { BadRequestError } from '../errors';

export const UID_MAX_LENGTH = 64;
const UID_SYNTAX = /^[0-9]+(\.[0-9]+)*$/;
const STRICT_UID_SYNTAX = /^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$/;

/** What the UID rule says, for error messages and API schemas. */
export const UID_RULE = `a DICOM UID (digits in dot-separated components, at most ${UID_MAX_LENGTH} characters)`;

/** True when s is a UID (see the module comment). */
export function isUid(s: unknown): s is string {
  return typeof s === 'string' && s.length > 0 && s.length <= UID_MAX_LENGTH && UID_SYNTAX.test(s);
}

/** isUid, and no component with a leading zero. */
export function isStrictUid(s: unknown): s is string {
  return isUid(s) && STRICT_UID_SYNTAX.test(s);
}

/** Why s is not a UID (no value echoed: a malformed "UID" may be anything, PHI included), or undefined. */
export function uidProblem(s: unknown): string | undefined {
  if (typeof s !== 'string' || s.length === 0) return 'it is empty';
  if (s.length > UID_MAX_LENGTH) return `it is longer than ${UID_MAX_LENGTH} characters`;
  if (/[^0-9.]/.test(s)) return 'it holds characters other than digits and dots';
  if (!UID_SYNTAX.test(s)) return 'it has an empty component';
  return undefined;
}

/** The value as a UID, or a 400 naming `parameter` and what is wrong. */
export function requireUid(value: unknown, parameter: string): string {
  const problem = uidProblem(value);
  if (problem) throw new BadRequestError(`malformed ${parameter}: ${problem}; expected ${UID_RULE}`);
  return value as string;
}
