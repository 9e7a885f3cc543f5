/**
 * Routing rules: which project an object that arrived by DIMSE belongs to. Pure code (no database): rules come in
 * already ordered, the first match wins.
 */
import dcmjs from 'dcmjs';
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
}

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
export function ruleMatches(rule: RoutingRule, route: ArrivalRoute, ds: DicomJson): boolean {
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

/** The first rule (in the given order) that matches, if any. */
export function firstMatchingRule(
  rules: readonly RoutingRule[],
  route: ArrivalRoute,
  ds: DicomJson,
): RoutingRule | undefined {
  return rules.find((r) => ruleMatches(r, route, ds));
}

/**
 * Whether two rules could claim the same arrivals, judged for equals/prefix on the same kind and attribute
 * (contains and regex are not judged). Used to stop a project administrator from claiming another project's traffic.
 */
export function rulesOverlap(
  a: Pick<RoutingRule, 'kind' | 'attribute' | 'match' | 'value'>,
  b: Pick<RoutingRule, 'kind' | 'attribute' | 'match' | 'value'>,
): boolean {
  if (a.kind !== b.kind) return false;
  if (a.kind === 'attribute') {
    const ta = a.attribute ? resolveAttributeTag(a.attribute) : undefined;
    const tb = b.attribute ? resolveAttributeTag(b.attribute) : undefined;
    if (!ta || ta !== tb) return false;
  }
  const va = a.value.trim().toUpperCase();
  const vb = b.value.trim().toUpperCase();
  const simple = (m: MatchKind) => m === 'equals' || m === 'prefix';
  if (!simple(a.match) || !simple(b.match)) return false;
  if (a.match === 'equals' && b.match === 'equals') return va === vb;
  if (a.match === 'prefix' && b.match === 'prefix') return va.startsWith(vb) || vb.startsWith(va);
  const [eq, pre] = a.match === 'equals' ? [va, vb] : [vb, va];
  return eq.startsWith(pre);
}
