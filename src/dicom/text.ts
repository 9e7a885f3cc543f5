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
