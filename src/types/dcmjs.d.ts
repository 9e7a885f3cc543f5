// dcmjs ships no type declarations; this covers the parts Aperture uses.
declare module 'dcmjs' {
  type Dict = Record<string, { vr: string; Value?: unknown[]; [k: string]: unknown }>;
  interface ReadOptions {
    ignoreErrors?: boolean;
    untilTag?: string;
    includeUntilTagValue?: boolean;
    noCopy?: boolean;
    forceStoreRaw?: boolean;
  }
  class DicomDict {
    constructor(meta: Dict);
    meta: Dict;
    dict: Dict;
    write(options?: { allowInvalidVRLength?: boolean; fragmentMultiframe?: boolean }): ArrayBuffer;
  }
  const dcmjs: {
    log: { setLevel?(level: string): void; [k: string]: unknown };
    data: {
      DicomMessage: {
        readFile(buffer: ArrayBuffer, options?: ReadOptions): { meta: Dict; dict: Dict } & DicomDict;
      };
      DicomDict: typeof DicomDict;
      DicomMetaDictionary: {
        naturalizeDataset(dict: Dict): Record<string, unknown>;
        denaturalizeDataset(ds: Record<string, unknown>): Dict;
        uid(): string;
        dictionary: Record<string, { tag: string; vr: string; name: string; vm: string }>;
        nameMap: Record<string, { tag: string; vr: string; name: string; vm: string }>;
        punctuateTag(tag: string): string;
        unpunctuateTag(tag: string): string;
        [k: string]: unknown;
      };
      [k: string]: unknown;
    };
    [k: string]: unknown;
  };
  export default dcmjs;
}
