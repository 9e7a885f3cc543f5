// The Cornerstone WebAssembly codecs and jpeg-lossless-decoder-js ship no usable type declarations; this covers the
/* eslint-disable @typescript-eslint/no-unused-vars -- ambient class declarations are used through `typeof` only */
// parts src/codecs uses (Embind classes: buffers are views into the module's memory, valid until the next call).
declare module '@cornerstonejs/codec-openjpeg/wasmjs' {
  interface FrameInfo {
    width: number;
    height: number;
    bitsPerSample: number;
    componentCount: number;
    isSigned: boolean;
  }
  class J2KDecoder {
    getEncodedBuffer(length: number): Uint8Array;
    getDecodedBuffer(): Uint8Array;
    readHeader(): void;
    decode(): void;
    /** Decodes only up to a resolution level (each halves both sides) and quality layer (0 = all). */
    decodeSubResolution(decodeLevel: number, decodeLayer: number): void;
    calculateSizeAtDecompositionLevel(decodeLevel: number): { width: number; height: number };
    getNumDecompositions(): number;
    getFrameInfo(): FrameInfo;
    getColorSpace(): number;
    delete(): void;
  }
  class J2KEncoder {
    getDecodedBuffer(info: FrameInfo): Uint8Array;
    getEncodedBuffer(): Uint8Array;
    setQuality(lossless: boolean, quality: number): void;
    setDecompositions(n: number): void;
    encode(): void;
    delete(): void;
  }
  interface OpenJpegModule {
    J2KDecoder: typeof J2KDecoder;
    J2KEncoder: typeof J2KEncoder;
  }
  const factory: (options?: {
    print?: (s: string) => void;
    printErr?: (s: string) => void;
  }) => Promise<OpenJpegModule>;
  export = factory;
}
declare module '@cornerstonejs/codec-openjph/wasmjs' {
  interface FrameInfo {
    width: number;
    height: number;
    bitsPerSample: number;
    componentCount: number;
    isSigned: boolean;
    isUsingColorTransform: boolean;
  }
  class HTJ2KDecoder {
    getEncodedBuffer(length: number): Uint8Array;
    getDecodedBuffer(): Uint8Array;
    readHeader(): void;
    decode(): void;
    /** Decodes only up to a resolution level (each halves both sides) and quality layer (0 = all). */
    decodeSubResolution(decodeLevel: number, decodeLayer: number): void;
    calculateSizeAtDecompositionLevel(decodeLevel: number): { width: number; height: number };
    getNumDecompositions(): number;
    getFrameInfo(): FrameInfo;
    delete(): void;
  }
  const factory: (options?: {
    print?: (s: string) => void;
    printErr?: (s: string) => void;
  }) => Promise<{ HTJ2KDecoder: typeof HTJ2KDecoder }>;
  export = factory;
}
declare module '@cornerstonejs/codec-charls/wasmjs' {
  interface FrameInfo {
    width: number;
    height: number;
    bitsPerSample: number;
    componentCount: number;
  }
  class JpegLSDecoder {
    getEncodedBuffer(length: number): Uint8Array;
    getDecodedBuffer(): Uint8Array;
    decode(): void;
    getFrameInfo(): FrameInfo;
    getInterleaveMode(): number;
    getNearLossless(): number;
    delete(): void;
  }
  class JpegLSEncoder {
    getDecodedBuffer(info: FrameInfo): Uint8Array;
    getEncodedBuffer(): Uint8Array;
    setNearLossless(near: number): void;
    setInterleaveMode(mode: number): void;
    encode(): void;
    delete(): void;
  }
  const factory: (options?: {
    print?: (s: string) => void;
    printErr?: (s: string) => void;
  }) => Promise<{ JpegLSDecoder: typeof JpegLSDecoder; JpegLSEncoder: typeof JpegLSEncoder }>;
  export = factory;
}
declare module '@cornerstonejs/codec-libjpeg-turbo-8bit/decodewasmjs' {
  interface FrameInfo {
    width: number;
    height: number;
    bitsPerSample: number;
    componentCount: number;
  }
  class JPEGDecoder {
    getEncodedBuffer(length: number): Uint8Array;
    getDecodedBuffer(): Uint8Array;
    readHeader(): void;
    decode(): void;
    getFrameInfo(): FrameInfo;
    delete(): void;
  }
  const factory: (options?: {
    print?: (s: string) => void;
    printErr?: (s: string) => void;
  }) => Promise<{ JPEGDecoder: typeof JPEGDecoder }>;
  export = factory;
}
declare module 'jpeg-lossless-decoder-js' {
  export class Decoder {
    decode(buffer: ArrayBufferLike, offset?: number, length?: number): Uint8Array | Uint16Array;
    numComp: number;
  }
}
