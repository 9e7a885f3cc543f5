/**
 * Table-driven: every one of the 621 rows of PS3.15 Table E.1-1, under the Basic Profile and under each of the ten
 * options, on a synthetic attribute at the top level and inside sequences nested one and two deep.
 */
import { el, part10, requiredUids, rowElement, sq, testTag } from '../../../test/helpers/deid-synthetic';
import { type Dataset, type Element, findElement, rawString, readPart10 } from './codec';
import { deidentify, mapUid, type DeidResult } from './deidentify';
import {
  BASIC_PROFILE,
  type DeidOptions,
  OPTION_COLUMN,
  OPTION_NAMES,
  type OptionName,
  type ProfileRow,
  TABLE_E1_1,
  rowForTag,
} from './profile';

const keys = {
  uidSecret: Buffer.from('table-test-secret'),
  patientName: 'SUBJECT^0001',
  patientId: 'SUBJ0001',
  dateOffsetDays: 40,
};

/** Sequences outside the table (kept, "cleaned for sequences"): the containers of the nested copies. */
const OUTER = 0x52009229; // Shared Functional Groups Sequence
const INNER = 0x00209113; // Plane Position Sequence
/** Written by the de-identifier itself at the top level, whatever the source said. */
const REWRITTEN = new Set([0x00120062, 0x00120063, 0x00120064, 0x00280303]);
const REQUIRED = new Set([0x00080018, 0x0020000d, 0x0020000e]);

/**
 * The action the test expects for a row, written from PS3.15's wording rather than from the implementation: an
 * enabled option's K or C overrides the Basic action (K when options disagree, Modified Dates' C first on date
 * rows); combinations take the variant valid for any Type (D, then Z; X/Z/U* keeps the sequence and maps inside).
 * Overlay and curve rows are removed whatever the option (their bitmaps cannot be cleaned).
 */
function expected(row: ProfileRow, options: DeidOptions): string {
  if (/^\((50|60)XX/i.test(row.tag)) return 'X';
  // The synthetic private creator is on no safe list (the list itself is tested below).
  if (/GGGG IS ODD/i.test(row.tag)) return 'X';
  if (options.retainLongitudinalModifiedDates && row.rtnLongModifDatesOpt) return 'C';
  const cells = OPTION_NAMES.filter((n) => options[n]).map((n) => row[OPTION_COLUMN[n]]);
  if (cells.includes('K')) return 'K';
  if (cells.includes('C')) return 'C';
  const b = row.basicProfile;
  if (b.includes('D')) return 'D';
  if (b === 'X/Z/U*') return 'K';
  if (b === 'U') return 'U';
  if (b.includes('Z')) return 'Z';
  return 'X';
}

function build(): { bytes: Buffer; sources: Map<number, Element>; topSources: Map<number, Element> } {
  const sources = new Map<number, Element>();
  const rowsElements: Element[] = [];
  TABLE_E1_1.forEach((row, n) => {
    const e = rowElement(row, n + 1);
    sources.set(e.tag, e);
    rowsElements.push(e);
  });
  const privateCreator = el(0x00090010, 'LO', 'SYNTH CREATOR');
  const nested = (): Dataset => [privateCreator, ...rowsElements.filter((e) => e.tag >>> 16 !== 0x0002)];
  const top: Dataset = [
    ...requiredUids(),
    privateCreator,
    ...rowsElements.filter((e) => !REQUIRED.has(e.tag) && e.tag >>> 16 !== 0x0002),
    sq(OUTER, [[...nested(), sq(INNER, [nested()])]]),
  ];
  const topSources = new Map(sources);
  for (const e of requiredUids()) topSources.set(e.tag, e);
  return { bytes: part10(top), sources, topSources };
}

function check(
  row: ProfileRow,
  action: string,
  source: Element,
  out: Element | undefined,
  options: DeidOptions,
  where: string,
): void {
  const label = `${row.tag} ${row.name} ${where}: expected ${action}`;
  const fail = (why: string) => {
    throw new Error(`${label}, ${why}`);
  };
  if (source.tag === 0x00100010 || source.tag === 0x00100020) {
    // Patient's Name and ID carry the caller's pseudonyms (a replacement value, PS3.15 E.1.1 note 2).
    const want = source.tag === 0x00100010 ? keys.patientName : keys.patientId;
    if (!out || rawString(out) !== want) fail('pseudonym not written');
    return;
  }
  switch (action) {
    case 'X':
      if (out) fail('still present');
      return;
    case 'Z':
      if (!out) fail('absent');
      if (out!.items ? out!.items.length !== 0 : out!.value?.length) fail('not empty');
      return;
    case 'D':
      if (!out) fail('absent');
      if (out!.items) {
        if (out!.items.length !== 1) fail('sequence items not kept');
      } else if (!out!.value?.length || out!.value.equals(source.value!)) fail('not replaced by a dummy');
      return;
    case 'K':
      if (!out) fail('absent');
      if (out!.items) {
        if (out!.items.length !== source.items!.length) fail('sequence items lost');
      } else if (!out!.value?.equals(source.value!)) fail('value changed');
      return;
    case 'U': {
      if (!out) fail('absent');
      const want = mapUid(rawString(source), keys.uidSecret);
      if (rawString(out!) !== want) fail(`UID not mapped (${rawString(out!)})`);
      return;
    }
    case 'C': {
      if (!out) fail('absent');
      if (out!.items) {
        if (out!.items.length !== source.items!.length) fail('sequence items lost');
        return;
      }
      if (source.vr === 'DA' || source.vr === 'DT') {
        if (!options.retainLongitudinalModifiedDates) fail('date cleaned without Modified Dates');
        const want = source.vr === 'DA' ? '20010315' : '20010315040506';
        if (rawString(out!) !== want) fail(`date not shifted by 40 days (${rawString(out!)})`);
        return;
      }
      if (source.vr === 'TM') {
        if (!out!.value?.equals(source.value!)) fail('a time of day changed under a whole-day shift');
        return;
      }
      if (source.vr === 'PN') {
        if (rawString(out!) === rawString(source)) fail('a person name survived cleaning');
        return;
      }
      if (['LO', 'SH', 'ST', 'LT', 'UT', 'UC', 'AE', 'CS'].includes(source.vr)) {
        // Nothing identifying in the synthetic text, so cleaning leaves it as it was.
        if (!out!.value?.equals(source.value!)) fail('clean text changed');
        return;
      }
      if (!out!.value?.length) fail('clean gave an empty value');
      return;
    }
  }
}

const optionSets: Array<[string, DeidOptions]> = [
  ['Basic Profile', BASIC_PROFILE],
  ...OPTION_NAMES.map((n: OptionName): [string, DeidOptions] => [n, { ...BASIC_PROFILE, [n]: true }]),
];

describe('PS3.15 Table E.1-1, every row', () => {
  const { bytes, sources, topSources } = build();

  it('holds all 621 rows, including the repeating groups and the private-tag rule', () => {
    expect(TABLE_E1_1).toHaveLength(621);
    for (const row of TABLE_E1_1) expect(rowForTag(testTag(row))).toBe(row);
    expect(rowForTag(0x50223000)?.tag).toBe('(50XX,XXXX)');
    expect(rowForTag(0x601e4000)?.tag).toBe('(60XX,4000)');
    expect(rowForTag(OUTER)).toBeUndefined();
    expect(rowForTag(INNER)).toBeUndefined();
  });

  it.each(optionSets)(
    'applies each row’s action under %s, at the top level and two levels deep',
    (_name, options) => {
      const r = deidentify(bytes, options, keys);
      if ('withheld' in r) throw new Error(`withheld: ${r.withheld}`);
      const out = readPart10((r as DeidResult).bytes);
      const level1 = findElement(out.dataset, OUTER)?.items?.[0];
      const level2 = level1 && findElement(level1, INNER)?.items?.[0];
      expect(level1).toBeDefined();
      expect(level2).toBeDefined();
      let checked = 0;
      for (const row of TABLE_E1_1) {
        const tag = testTag(row);
        const source = sources.get(tag)!;
        const action = expected(row, options);
        if (tag >>> 16 === 0x0002) {
          // File Meta attributes: rewritten in the new File Meta, never carried in a data set.
          if (tag === 0x00020003) {
            const sop = findElement(out.meta, tag);
            expect(rawString(sop!)).toBe(
              options.retainUIDs ? rawString(topSources.get(0x00080018)!) : r.outputUids.sop,
            );
          }
          for (const ds of [out.dataset, level1!, level2!]) expect(findElement(ds, tag)).toBeUndefined();
          checked++;
          continue;
        }
        if (!REWRITTEN.has(tag)) {
          check(row, action, topSources.get(tag)!, findElement(out.dataset, tag), options, 'at top level');
        }
        check(row, action, source, findElement(level1!, tag), options, 'in a sequence');
        check(row, action, source, findElement(level2!, tag), options, 'two sequences deep');
        checked++;
      }
      expect(checked).toBe(621);
    },
  );

  it('keeps a private attribute of the safe list with its creator under Retain Safe Private only', () => {
    const ds: Dataset = [
      ...requiredUids(),
      el(0x00190010, 'LO', 'GEMS_ACQU_01'),
      el(0x00191023, 'DS', '39.375'),
      el(0x00191099, 'LO', 'NOT ON THE LIST'),
      el(0x00290010, 'LO', 'UNKNOWN CREATOR'),
      el(0x00291023, 'DS', '1.0'),
    ];
    const bytes = part10(ds);
    for (const retain of [false, true]) {
      const r = deidentify(bytes, { ...BASIC_PROFILE, retainSafePrivate: retain }, keys) as DeidResult;
      const out = readPart10(r.bytes).dataset;
      expect(findElement(out, 0x00191023) !== undefined).toBe(retain);
      expect(findElement(out, 0x00190010) !== undefined).toBe(retain);
      expect(findElement(out, 0x00191099)).toBeUndefined();
      expect(findElement(out, 0x00290010)).toBeUndefined();
      expect(findElement(out, 0x00291023)).toBeUndefined();
    }
  });
});
