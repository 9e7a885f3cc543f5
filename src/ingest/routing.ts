/**
 * Routing rules: which project an object that arrived by DIMSE belongs to. Pure code (no database).
 *
 * Precedence (issue 8, defect 3): across projects, the rule that claimed its arrivals first wins (`claim_order`,
 * renewed whenever a rule's criteria change or it is enabled again), unless a global administrator gave a rule a
 * `priority`. A project administrator's `position` only orders the rules of their own project, so no position can
 * put one project's rule in front of another's.
 */
import dcmjs from 'dcmjs';
import { randomInt } from 'node:crypto';
import { BlockList, isIP } from 'node:net';
import { z } from 'zod';
import type { DicomJson } from '../dicom/json';

export const RULE_KINDS = ['called_aet', 'calling_aet', 'source_ip', 'attribute'] as const;
export type RuleKind = (typeof RULE_KINDS)[number];
export const MATCH_KINDS = ['equals', 'prefix', 'contains', 'regex'] as const;
export type MatchKind = (typeof MATCH_KINDS)[number];

/** A routing rule as stored (routing_rules). */
export interface RoutingRule {
  id: string; // bigserial comes back as a string
  project_id: string;
  position: number;
  kind: RuleKind;
  attribute: string | null;
  match: MatchKind;
  value: string;
  enabled: boolean;
  /** Order in which rules claimed their arrivals (bigint as a string); earlier wins across projects. */
  claim_order: string;
  /** Cross-project precedence set by a global administrator: lower first, before every rule without one. */
  priority: number | null;
}

/** What a rule matches on, without where it sends arrivals. */
export type RuleCriteria = Pick<RoutingRule, 'kind' | 'attribute' | 'match' | 'value'>;

/** How an object reached the archive, from Orthanc's instance metadata. */
export interface ArrivalRoute {
  calledAet: string;
  callingAet: string;
  remoteIp: string;
}

/** Longest regular expression accepted in a rule: rules are checked for every new series. */
const MAX_REGEX = 200;

/** A rule as the API and CLI accept it. */
export const ruleInputSchema = z
  .object({
    kind: z.enum(RULE_KINDS),
    attribute: z.string().trim().min(1).max(64).optional(),
    match: z.enum(MATCH_KINDS).default('equals'),
    value: z.string().trim().min(1).max(512),
    position: z.number().int().min(0).max(1_000_000).optional(),
    enabled: z.boolean().default(true),
    // Global administrators only; null clears it.
    priority: z.number().int().min(-1_000_000).max(1_000_000).nullable().optional(),
  })
  .superRefine((r, ctx) => {
    if (r.kind === 'attribute') {
      if (!r.attribute)
        ctx.addIssue({ code: 'custom', path: ['attribute'], message: 'required for kind attribute' });
      else if (!resolveAttributeTag(r.attribute)) {
        ctx.addIssue({ code: 'custom', path: ['attribute'], message: 'not a DICOM keyword or tag' });
      }
    } else if (r.attribute) {
      ctx.addIssue({ code: 'custom', path: ['attribute'], message: 'only for kind attribute' });
    }
    if (r.match === 'regex') {
      if (r.value.length > MAX_REGEX) {
        ctx.addIssue({
          code: 'custom',
          path: ['value'],
          message: `regex longer than ${MAX_REGEX} characters`,
        });
      } else {
        try {
          new RegExp(r.value);
        } catch {
          ctx.addIssue({ code: 'custom', path: ['value'], message: 'not a valid regular expression' });
        }
      }
    }
    if (r.kind === 'source_ip' && r.match === 'equals' && r.value.includes('/') && !parseCidr(r.value)) {
      ctx.addIssue({ code: 'custom', path: ['value'], message: 'not a valid CIDR block' });
    }
  });
export type RuleInput = z.infer<typeof ruleInputSchema>;

/**
 * The tag (8 upper-case hex digits) a rule's attribute names: a keyword (`PatientComments`) or a tag in any common
 * spelling (`00104000`, `0010,4000`, `(0010,4000)`). Undefined when it names nothing.
 */
export function resolveAttributeTag(attribute: string): string | undefined {
  const a = attribute.trim();
  const hex = /^\(?([0-9a-fA-F]{4}),?([0-9a-fA-F]{4})\)?$/.exec(a);
  if (hex) return (hex[1] + hex[2]).toUpperCase();
  const entry = dcmjs.data.DicomMetaDictionary.nameMap[a];
  if (!entry) return undefined;
  const m = /^\(([0-9A-Fa-f]{4}),([0-9A-Fa-f]{4})\)$/.exec(entry.tag);
  return m ? (m[1] + m[2]).toUpperCase() : undefined;
}

/** The string values of an attribute for matching: person names by their alphabetic form, numbers as written. */
export function attributeValues(ds: DicomJson, tag: string): string[] {
  const el = ds[tag];
  if (!el?.Value) return [];
  const out: string[] = [];
  for (const v of el.Value) {
    if (v === null || v === undefined) continue;
    if (typeof v === 'string') out.push(v);
    else if (typeof v === 'number') out.push(String(v));
    else if (typeof v === 'object' && 'Alphabetic' in (v as object)) {
      const alpha = (v as { Alphabetic?: string }).Alphabetic;
      if (alpha) out.push(alpha);
    }
  }
  return out.map((s) => s.replace(/[\0 ]+$/, '').trim());
}

function parseCidr(value: string): BlockList | undefined {
  const [addr, bits] = value.split('/');
  const type = isIP(addr);
  const prefix = Number(bits);
  if (!type || !Number.isInteger(prefix) || prefix < 0 || prefix > (type === 4 ? 32 : 128)) return undefined;
  const list = new BlockList();
  list.addSubnet(addr, prefix, type === 4 ? 'ipv4' : 'ipv6');
  return list;
}

/**
 * Whether one candidate string satisfies a rule's match. equals/prefix/contains ignore case (AE titles and free
 * text are cased inconsistently by modalities); regex is applied as written (use `[Xx]` for case).
 */
export function matchValue(match: MatchKind, pattern: string, candidate: string): boolean {
  const c = candidate.trim();
  switch (match) {
    case 'equals':
      return c.toUpperCase() === pattern.trim().toUpperCase();
    case 'prefix':
      return c.toUpperCase().startsWith(pattern.trim().toUpperCase());
    case 'contains':
      return c.toUpperCase().includes(pattern.trim().toUpperCase());
    case 'regex':
      try {
        return new RegExp(pattern).test(c);
      } catch {
        return false;
      }
  }
}

/** Whether a rule matches an arrival. Disabled rules never match. */
export function ruleMatches(
  rule: RuleCriteria & Pick<RoutingRule, 'enabled'>,
  route: ArrivalRoute,
  ds: DicomJson,
): boolean {
  if (!rule.enabled) return false;
  switch (rule.kind) {
    case 'called_aet':
      return route.calledAet !== '' && matchValue(rule.match, rule.value, route.calledAet);
    case 'calling_aet':
      return route.callingAet !== '' && matchValue(rule.match, rule.value, route.callingAet);
    case 'source_ip': {
      if (!route.remoteIp) return false;
      if (rule.match === 'equals' && rule.value.includes('/')) {
        const ip = route.remoteIp.replace(/^::ffff:/, '');
        const type = isIP(ip);
        return type !== 0 && (parseCidr(rule.value)?.check(ip, type === 4 ? 'ipv4' : 'ipv6') ?? false);
      }
      return matchValue(rule.match, rule.value, route.remoteIp.replace(/^::ffff:/, ''));
    }
    case 'attribute': {
      const tag = rule.attribute ? resolveAttributeTag(rule.attribute) : undefined;
      if (!tag) return false;
      return attributeValues(ds, tag).some((v) => matchValue(rule.match, rule.value, v));
    }
    default:
      return false;
  }
}

/** Cross-project precedence: priority (lower first, unset last), then claim order, then id. */
export function compareClaims(
  a: Pick<RoutingRule, 'id' | 'priority' | 'claim_order'>,
  b: Pick<RoutingRule, 'id' | 'priority' | 'claim_order'>,
): number {
  if (a.priority !== b.priority) {
    if (a.priority === null) return 1;
    if (b.priority === null) return -1;
    return a.priority - b.priority;
  }
  const big = (x: string) => (/^\d+$/.test(x) ? BigInt(x) : 0n);
  const c = big(a.claim_order) - big(b.claim_order);
  if (c !== 0n) return c < 0n ? -1 : 1;
  const d = big(a.id) - big(b.id);
  return d === 0n ? 0 : d < 0n ? -1 : 1;
}

function comparePositions(a: RoutingRule, b: RoutingRule): number {
  if (a.position !== b.position) return a.position - b.position;
  return compareClaims(
    { ...a, priority: null, claim_order: a.id },
    { ...b, priority: null, claim_order: b.id },
  );
}

/**
 * The rule that decides an arrival, if any: the project is the one whose matching rule comes first across projects
 * (compareClaims); within that project, its own positions pick which of its matching rules is credited. Rule order in
 * the input does not matter.
 */
export function firstMatchingRule(
  rules: readonly RoutingRule[],
  route: ArrivalRoute,
  ds: DicomJson,
): RoutingRule | undefined {
  const matching = rules.filter((r) => ruleMatches(r, route, ds));
  if (matching.length === 0) return undefined;
  const winner = matching.reduce((a, b) => (compareClaims(b, a) < 0 ? b : a));
  return matching
    .filter((r) => r.project_id === winner.project_id)
    .reduce((a, b) => (comparePositions(b, a) < 0 ? b : a));
}

/** Whether two rules look at the same thing: the same kind and, for attribute rules, the same tag. */
function sameDimension(a: RuleCriteria, b: RuleCriteria): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind !== 'attribute') return true;
  const ta = a.attribute ? resolveAttributeTag(a.attribute) : undefined;
  return ta !== undefined && ta === (b.attribute ? resolveAttributeTag(b.attribute) : undefined);
}

const isCidr = (r: RuleCriteria) => r.kind === 'source_ip' && r.match === 'equals' && r.value.includes('/');

/**
 * Concrete values a non-regex rule claims, to test the other rule against: its own value in the cases a modality
 * may send it (equals/prefix/contains ignore case, a regex does not); for addresses, the network of a CIDR block and
 * the addresses an address prefix completes to.
 */
function representatives(r: RuleCriteria): string[] {
  const v = r.value.trim();
  if (isCidr(r)) return [v.split('/')[0]];
  const out = [v, v.toUpperCase(), v.toLowerCase()];
  if (r.kind === 'source_ip' && r.match === 'prefix') {
    for (const tail of ['0', '.0', '0.0', '.0.0', '0.0.0', '.0.0.0', ':0', '::', '::1']) {
      if (isIP(v + tail)) out.push(v + tail);
    }
  }
  return [...new Set(out)];
}

/** Whether a rule claims an arrival whose value (of the rule's kind) is `value`. */
export function ruleMatchesValue(rule: RuleCriteria, value: string): boolean {
  const route: ArrivalRoute = { calledAet: '', callingAet: '', remoteIp: '' };
  let ds: DicomJson = {};
  if (rule.kind === 'called_aet') route.calledAet = value;
  else if (rule.kind === 'calling_aet') route.callingAet = value;
  else if (rule.kind === 'source_ip') route.remoteIp = value;
  else {
    const tag = rule.attribute ? resolveAttributeTag(rule.attribute) : undefined;
    if (!tag) return false;
    ds = { [tag]: { vr: 'LO', Value: [value] } };
  }
  return ruleMatches({ ...rule, enabled: true }, route, ds);
}

/**
 * How two rules' claims relate. `overlap`: one claims the other's own value, so some arrival matches both (for
 * regexes: the regex matches the other rule's literal value). `disjoint`: provably no common arrival (equals or
 * CIDR against anything, prefix against prefix). `unknown`: same kind and attribute, but not decidable here (two
 * regexes; contains or prefix against a regex or contains). `unrelated`: different kinds or attributes, which any
 * single arrival may satisfy together; cross-project precedence decides those.
 */
export function claimRelation(
  a: RuleCriteria,
  b: RuleCriteria,
): 'overlap' | 'disjoint' | 'unknown' | 'unrelated' {
  if (!sameDimension(a, b)) return 'unrelated';
  if (b.match !== 'regex' && representatives(b).some((v) => ruleMatchesValue(a, v))) return 'overlap';
  if (a.match !== 'regex' && representatives(a).some((v) => ruleMatchesValue(b, v))) return 'overlap';
  const exact = (r: RuleCriteria) => r.match === 'equals';
  if (exact(a) || exact(b) || (a.match === 'prefix' && b.match === 'prefix')) return 'disjoint';
  return 'unknown';
}

/**
 * Whether a rule would claim arrivals of any value: a regex matching the empty string, or every one of a set of
 * random probes. Such a rule would take everything no earlier rule claims (DEFAULT_PROJECT's and quarantine's
 * arrivals), so only a global administrator may add one.
 */
export function isCatchAll(rule: RuleCriteria): boolean {
  if (rule.match !== 'regex') return false;
  let re: RegExp;
  try {
    re = new RegExp(rule.value);
  } catch {
    return false;
  }
  if (re.test('')) return true;
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-^ ';
  const probes = ['A', 'z', '0', '1.2.840.10008.5.1.4.1.1.2', '192.0.2.1', 'ANY_AE_TITLE'];
  for (let i = 0; i < 8; i++) {
    let p = '';
    for (let n = randomInt(1, 17); n > 0; n--) p += alphabet[randomInt(alphabet.length)];
    probes.push(p);
  }
  return probes.every((p) => re.test(p));
}

/** Whether two rules provably claim a common arrival (see claimRelation). */
export function rulesOverlap(a: RuleCriteria, b: RuleCriteria): boolean {
  return claimRelation(a, b) === 'overlap';
}
