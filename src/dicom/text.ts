/** Normalises a DICOM TM value to 'HHMMSS.FFFFFF' so that times compare as strings; undefined when unusable. */
export function normaliseTime(tm: string | undefined): string | undefined {
  if (!tm) return undefined;
  const s = tm.trim().replace(/:/g, '');
  const m = /^(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?$/.exec(s);
  if (!m) return undefined;
  const [, hh, mm = '00', ss = '00', frac = ''] = m;
  return `${hh}${mm}${ss}.${frac.padEnd(6, '0')}`;
}

/** Normalises a DICOM DA value to 'YYYYMMDD' (also accepting the old 'YYYY.MM.DD'); undefined when unusable. */
export function normaliseDate(da: string | undefined): string | undefined {
  if (!da) return undefined;
  const s = da.trim().replace(/[.-]/g, '');
  return /^\d{8}$/.test(s) ? s : undefined;
}

/**
 * Folds a person name for fuzzy matching: accents removed, upper case, component separators kept.
 * 'Müller^Jürgen' → 'MULLER^JURGEN'.
 */
export function foldName(name: string | undefined): string | undefined {
  if (name === undefined) return undefined;
  return name
    .normalize('NFD')
    .replace(/\p{M}+/gu, '')
    .toUpperCase();
}

/**
 * Removes the padding PS3.5 §6.2 allows at the end of a string value: spaces, and NULs (which UIDs use and many
 * writers use for every VR). Leading spaces are left alone: they are significant in the text VRs.
 */
export function stripPadding(s: string): string {
  return s.replace(/[\0 ]+$/, '');
}

/**
 * Makes a string storable in PostgreSQL text and jsonb, which refuse the NUL character and UTF-16 surrogates that
 * do not pair up (22P05, 22P02): NULs inside a value are dropped (padding left by a careless writer, never
 * meaning), unpaired surrogates become U+FFFD.
 */
export function jsonbSafe(s: string): string {
  return s
    .replace(/\0/g, '')
    .replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd');
}

/** A string value as the index keeps it: padding stripped, then made safe for PostgreSQL. */
export function indexText(s: string): string {
  return stripPadding(jsonbSafe(s));
}
