/** In-process decoders and encoders for every compressed transfer syntax the archive holds (issue 11). */
export {
  CodecPool,
  codecPoolFor,
  defaultCodecThreads,
  type CodecConfig,
  type CodecPoolOptions,
} from './pool';
export {
  codecFamily,
  isDecodableSyntax,
  decodedFrameBytes,
  type CodecPixels,
  type DecodedFrame,
} from './syntaxes';
export { reencodeTarget, type EncodedFrame } from './encode';
export { decodeRle, encodeRle } from './rle';
