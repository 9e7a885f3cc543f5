/** The PS3.15 de-identifier and its leak check: the only entry points other code should import. */
export {
  deidentify,
  mapUid,
  IMPLEMENTATION_CLASS_UID,
  type DeidExtra,
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
  CLEAN_PIXEL_DATA,
  OPTION_NAMES,
  TABLE_E1_1,
  TABLE_EDITION,
  profileDescription,
  type DeidOptions,
  type OptionName,
} from './profile';
export {
  BUILT_IN_PIXEL_RULES,
  blackoutFrame,
  frameBytes,
  matchPixelRules,
  parsePixelRules,
  pixelLayout,
  splitFrames,
  withCleanedPixels,
  type PixelLayout,
  type PixelRefusal,
  type PixelRule,
} from './pixels';
export { readPart10, PIXEL_DATA } from './codec';
