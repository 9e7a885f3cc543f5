/** The PS3.15 de-identifier and its leak check: the only entry points other code should import. */
export {
  deidentify,
  mapUid,
  IMPLEMENTATION_CLASS_UID,
  type DeidKeys,
  type DeidResult,
  type DeidWithheld,
  type InstanceUids,
  type WithheldReason,
} from './deidentify';
export { leakCheck, type IdentifyingValue, type IdentifyingValues, type LeakHit } from './identifying';
export {
  BASIC_PROFILE,
  CID_7050,
  OPTION_NAMES,
  TABLE_E1_1,
  TABLE_EDITION,
  profileDescription,
  type DeidOptions,
  type OptionName,
} from './profile';
