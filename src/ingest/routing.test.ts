import type { DicomJson } from '../dicom/json';
import {
  attributeValues,
  firstMatchingRule,
  resolveAttributeTag,
  type RoutingRule,
  ruleInputSchema,
  rulesOverlap,
  claimRelation,
  isCatchAll,
} from './routing';

let nextId = 1;
function rule(r: Partial<RoutingRule> & Pick<RoutingRule, 'kind' | 'value' | 'project_id'>): RoutingRule {
  const id = String(nextId++);
  return {
    id,
    position: nextId,
    attribute: null,
    match: 'equals',
    enabled: true,
    claim_order: id,
    priority: null,
    ...r,
  };
}

const ct: DicomJson = {
  '00081030': { vr: 'LO', Value: ['LUNG^screening low dose'] },
  '00100010': { vr: 'PN', Value: [{ Alphabetic: 'Doe^Jane' }] },
  '00104000': { vr: 'LT', Value: ['Consent given. Project: onco-7 Subject: 12'] },
  '00200011': { vr: 'IS', Value: [3] },
};
const fromScanner = { calledAet: 'LUNGSTUDY', callingAet: 'CT_ROOM_2', remoteIp: '10.1.2.3' };

describe('routing rules', () => {
  it('sends an arrival called LUNGSTUDY to lung-study, whatever the case of the AE title', () => {
    const rules = [rule({ kind: 'called_aet', value: 'lungstudy', project_id: 'lung-study' })];
    expect(firstMatchingRule(rules, fromScanner, ct)?.project_id).toBe('lung-study');
    expect(firstMatchingRule(rules, { ...fromScanner, calledAet: 'APERTURE' }, ct)).toBeUndefined();
  });

  it('lets the first matching rule win, skipping disabled ones', () => {
    const rules = [
      rule({ kind: 'calling_aet', value: 'CT_ROOM_2', project_id: 'off', enabled: false }),
      rule({
        kind: 'attribute',
        attribute: 'StudyDescription',
        match: 'prefix',
        value: 'LUNG^',
        project_id: 'a',
      }),
      rule({ kind: 'called_aet', value: 'LUNGSTUDY', project_id: 'b' }),
    ];
    expect(firstMatchingRule(rules, fromScanner, ct)?.project_id).toBe('a');
  });

  it('finds an XNAT-style "Project: X" in Patient Comments by keyword or by tag', () => {
    const byKeyword = rule({
      kind: 'attribute',
      attribute: 'PatientComments',
      match: 'contains',
      value: 'project: onco-7',
      project_id: 'onco-7',
    });
    const byTag = rule({
      kind: 'attribute',
      attribute: '(0010,4000)',
      match: 'regex',
      value: 'Project:\\s*onco-7\\b',
      project_id: 'onco-7',
    });
    expect(firstMatchingRule([byKeyword], fromScanner, ct)?.project_id).toBe('onco-7');
    expect(firstMatchingRule([byTag], fromScanner, ct)?.project_id).toBe('onco-7');
    expect(
      firstMatchingRule([byTag], fromScanner, {
        ...ct,
        '00104000': { vr: 'LT', Value: ['Project: onco-71'] },
      }),
    ).toBeUndefined();
  });

  it('matches person names by their alphabetic form and numbers as written', () => {
    expect(attributeValues(ct, '00100010')).toEqual(['Doe^Jane']);
    expect(attributeValues(ct, '00200011')).toEqual(['3']);
    expect(attributeValues(ct, '00080060')).toEqual([]);
  });

  it('matches source addresses by prefix and by CIDR block', () => {
    const prefix = rule({ kind: 'source_ip', match: 'prefix', value: '10.1.', project_id: 'p' });
    const cidr = rule({ kind: 'source_ip', value: '10.0.0.0/8', project_id: 'c' });
    expect(firstMatchingRule([prefix], fromScanner, ct)?.project_id).toBe('p');
    expect(firstMatchingRule([cidr], { ...fromScanner, remoteIp: '::ffff:10.200.0.1' }, ct)?.project_id).toBe(
      'c',
    );
    expect(firstMatchingRule([cidr], { ...fromScanner, remoteIp: '192.168.0.1' }, ct)).toBeUndefined();
  });

  it('never matches an empty route field, so objects stored over REST are not claimed by AE rules', () => {
    const rules = [rule({ kind: 'calling_aet', match: 'regex', value: '.*', project_id: 'x' })];
    expect(firstMatchingRule(rules, { calledAet: '', callingAet: '', remoteIp: '' }, ct)).toBeUndefined();
  });

  it('resolves keywords and tag spellings, and refuses unknown names', () => {
    expect(resolveAttributeTag('StudyDescription')).toBe('00081030');
    expect(resolveAttributeTag('0010,4000')).toBe('00104000');
    expect(resolveAttributeTag('7fe00010')).toBe('7FE00010');
    expect(resolveAttributeTag('NoSuchKeyword')).toBeUndefined();
  });

  it('validates rule input: attribute only for attribute rules, regexes must compile', () => {
    expect(ruleInputSchema.safeParse({ kind: 'called_aet', value: 'LUNGSTUDY' }).success).toBe(true);
    expect(ruleInputSchema.safeParse({ kind: 'attribute', value: 'x' }).success).toBe(false);
    expect(ruleInputSchema.safeParse({ kind: 'attribute', attribute: 'Nope', value: 'x' }).success).toBe(
      false,
    );
    expect(
      ruleInputSchema.safeParse({ kind: 'called_aet', attribute: 'PatientID', value: 'x' }).success,
    ).toBe(false);
    expect(ruleInputSchema.safeParse({ kind: 'called_aet', match: 'regex', value: '(' }).success).toBe(false);
    expect(ruleInputSchema.safeParse({ kind: 'source_ip', value: '10.0.0.0/99' }).success).toBe(false);
  });

  it('detects rules of two projects that would claim the same arrivals', () => {
    const mine = {
      kind: 'called_aet' as const,
      attribute: null,
      match: 'equals' as const,
      value: 'LUNGSTUDY',
    };
    expect(rulesOverlap(mine, { ...mine, value: 'lungstudy' })).toBe(true);
    expect(rulesOverlap(mine, { ...mine, match: 'prefix', value: 'LUNG' })).toBe(true);
    expect(rulesOverlap(mine, { ...mine, value: 'HEART' })).toBe(false);
    expect(rulesOverlap(mine, { ...mine, kind: 'calling_aet' })).toBe(false);
  });

  it('lets the rule that claimed first decide across projects, whatever positions project administrators set', () => {
    const lung = rule({
      kind: 'called_aet',
      value: 'LUNGSTUDY',
      project_id: 'lung',
      position: 50,
      claim_order: '1',
    });
    const rival = [
      rule({
        kind: 'called_aet',
        match: 'regex',
        value: '^LUNG',
        project_id: 'rival',
        position: 0,
        claim_order: '2',
      }),
      rule({ kind: 'calling_aet', value: 'CT_ROOM_2', project_id: 'rival', position: 0, claim_order: '3' }),
      rule({
        kind: 'attribute',
        attribute: 'StudyDescription',
        match: 'regex',
        value: '.',
        project_id: 'rival',
        position: 0,
        claim_order: '4',
      }),
    ];
    for (const order of [
      [lung, ...rival],
      [...rival, lung],
    ]) {
      expect(firstMatchingRule(order, fromScanner, ct)?.id).toBe(lung.id);
    }
    // A global administrator's priority overrides claim order.
    const raised = { ...rival[1], priority: 0 };
    expect(firstMatchingRule([lung, raised], fromScanner, ct)?.id).toBe(raised.id);
  });

  it('credits the winning project’s own rule by that project’s positions', () => {
    const early = rule({
      kind: 'called_aet',
      value: 'LUNGSTUDY',
      project_id: 'lung',
      position: 20,
      claim_order: '1',
    });
    const preferred = rule({
      kind: 'calling_aet',
      value: 'CT_ROOM_2',
      project_id: 'lung',
      position: 5,
      claim_order: '9',
    });
    const other = rule({
      kind: 'calling_aet',
      value: 'CT_ROOM_2',
      project_id: 'x',
      position: 0,
      claim_order: '5',
    });
    expect(firstMatchingRule([other, early, preferred], fromScanner, ct)?.id).toBe(preferred.id);
  });

  it('judges overlaps across match types: regexes against literal values, in any case', () => {
    const lung = {
      kind: 'called_aet' as const,
      attribute: null,
      match: 'equals' as const,
      value: 'LUNGSTUDY',
    };
    const regex = (value: string) => ({ ...lung, match: 'regex' as const, value });
    expect(claimRelation(regex('^LUNG'), lung)).toBe('overlap');
    expect(claimRelation(lung, regex('^[Ll]ung[a-z]+$'))).toBe('overlap');
    expect(claimRelation(regex('^HEART'), lung)).toBe('disjoint');
    expect(claimRelation(regex('^A'), regex('^B'))).toBe('unknown');
    expect(claimRelation({ ...lung, match: 'contains', value: 'NGST' }, lung)).toBe('overlap');
    expect(
      claimRelation({ ...lung, match: 'contains', value: 'X' }, { ...lung, match: 'prefix', value: 'Y' }),
    ).toBe('unknown');
    expect(claimRelation({ ...lung, kind: 'calling_aet' }, lung)).toBe('unrelated');
    const sop = {
      kind: 'attribute' as const,
      attribute: 'SOPClassUID',
      match: 'equals' as const,
      value: '1.2.3',
    };
    expect(claimRelation({ ...sop, attribute: '(0008,0016)', match: 'prefix', value: '1.2' }, sop)).toBe(
      'overlap',
    );
    expect(claimRelation({ ...sop, attribute: 'Modality' }, sop)).toBe('unrelated');
    const net = {
      kind: 'source_ip' as const,
      attribute: null,
      match: 'equals' as const,
      value: '10.0.0.0/8',
    };
    expect(claimRelation(net, { ...net, value: '10.1.0.0/16' })).toBe('overlap');
    expect(claimRelation(net, { ...net, match: 'prefix', value: '10.1.' })).toBe('overlap');
    expect(claimRelation(net, { ...net, value: '192.168.0.0/16' })).toBe('disjoint');
  });

  it('recognises catch-all regexes', () => {
    const r = (value: string) => ({
      kind: 'called_aet' as const,
      attribute: null,
      match: 'regex' as const,
      value,
    });
    for (const v of ['.*', '.+', '^', 'x?', '[\\s\\S]', '(?:)'])
      expect([v, isCatchAll(r(v))]).toEqual([v, true]);
    for (const v of ['^LUNG', 'STUDY$', '^[A-Z]{3}$']) expect([v, isCatchAll(r(v))]).toEqual([v, false]);
    expect(isCatchAll({ ...r('A'), match: 'contains' })).toBe(false);
  });
});
