import { deidentify, type IdentifyingValue, leakCheck, profileDescription } from '../dicom/deid';
import type { Deidentifier } from './deid-port';

/** The PS3.15 de-identifier (src/dicom/deid) as cohorts use it. */
export const deidentifier: Deidentifier = {
  deidentify: (part10, options, keys, extra) => deidentify(part10, options, keys, extra),
  leakCheck: (output, identifying) => leakCheck(output, identifying as readonly IdentifyingValue[]),
  profileDescription: (options) => profileDescription(options),
};
