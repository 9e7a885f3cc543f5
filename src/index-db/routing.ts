import type { Pool } from 'pg';
import type { DicomJson } from '../dicom/json';
import { jsonbSafe } from '../dicom/text';
import { ConflictError, ForbiddenError, NotFoundError } from '../errors';
import type { ArrivalRoute, RoutingRule, RuleInput } from '../ingest/routing';
import { claimRelation, compareClaims, isCatchAll } from '../ingest/routing';
import { linkInstance } from './instances';
import { type Queryable, withTransaction } from './pool';

const RULE_COLUMNS =
  'id, project_id, position, kind, attribute, match, value, enabled, claim_order, priority, created_at';

/** A stored rule with its creation time. */
export type RoutingRuleRow = RoutingRule & { created_at: Date };

/** Rules in the order they are checked: one project's by position, all projects' by cross-project precedence. */
export async function listRules(db: Queryable, projectId?: string): Promise<RoutingRuleRow[]> {
  const r = projectId
    ? await db.query<RoutingRuleRow>(
        `SELECT ${RULE_COLUMNS} FROM routing_rules WHERE project_id = $1 ORDER BY position, id`,
        [projectId],
      )
    : await db.query<RoutingRuleRow>(
        `SELECT ${RULE_COLUMNS} FROM routing_rules ORDER BY priority NULLS LAST, claim_order, id`,
      );
  return r.rows;
}

/** The enabled rules, in cross-project precedence: what the indexer evaluates (firstMatchingRule). */
export async function activeRules(db: Queryable): Promise<RoutingRule[]> {
  const r = await db.query<RoutingRule>(
    `SELECT ${RULE_COLUMNS} FROM routing_rules WHERE enabled ORDER BY priority NULLS LAST, claim_order, id`,
  );
  return r.rows;
}

/** One rule of a project; 404 when it belongs to another project or does not exist. */
export async function getRule(db: Queryable, projectId: string, id: string): Promise<RoutingRuleRow> {
  if (!/^\d{1,18}$/.test(id)) throw new NotFoundError('routing rule not found');
  const r = await db.query<RoutingRuleRow>(
    `SELECT ${RULE_COLUMNS} FROM routing_rules WHERE id = $1 AND project_id = $2`,
    [id, projectId],
  );
  if (!r.rows[0]) throw new NotFoundError('routing rule not found');
  return r.rows[0];
}

/**
 * How a rule stands against the enabled rules of other projects (ids only: a project administrator may not see
 * other projects' rules). shadowed_by: rules checked before it that claim some of its arrivals; shadows: rules it
 * takes arrivals from (only a global administrator's priority can do that); possibly_shadowed_by: earlier rules of
 * the same kind and attribute whose overlap cannot be decided (two regexes, for instance).
 */
export interface ClaimReport {
  shadowed_by: string[];
  shadows: string[];
  possibly_shadowed_by: string[];
}

type Claimant = Pick<RoutingRule, 'kind' | 'attribute' | 'match' | 'value' | 'priority'> & {
  id?: string;
  claim_order?: string;
};

/** The ClaimReport of a rule; without claim_order it stands as a claim made now (after every existing one). */
export async function claimReport(db: Queryable, projectId: string, rule: Claimant): Promise<ClaimReport> {
  const others = await db.query<RoutingRule>(
    `SELECT ${RULE_COLUMNS} FROM routing_rules
      WHERE project_id <> $1 AND enabled ORDER BY priority NULLS LAST, claim_order, id`,
    [projectId],
  );
  const LAST = '999999999999999999999';
  const me = { id: rule.id ?? LAST, priority: rule.priority, claim_order: rule.claim_order ?? LAST };
  const report: ClaimReport = { shadowed_by: [], shadows: [], possibly_shadowed_by: [] };
  for (const o of others.rows) {
    const relation = claimRelation(rule, o);
    const earlier = compareClaims(o, me) < 0;
    if (relation === 'overlap') (earlier ? report.shadowed_by : report.shadows).push(o.id);
    else if (relation === 'unknown' && earlier) report.possibly_shadowed_by.push(o.id);
  }
  return report;
}

/** Serialises claim checks with rule writes, so two administrators cannot both claim the same arrivals at once. */
const RULES_LOCK = 0x524f555445; // 'ROUTE'

/** Who saves a rule: only global administrators may overlap other projects, add catch-alls or set priority. */
export interface RuleAuthority {
  globalAdmin: boolean;
}

/**
 * Creates a rule (no id) or replaces one of a project's rules, enforcing cross-project claims for project
 * administrators: a rule that newly claims arrivals (created, its criteria changed, or enabled again) must not
 * provably overlap an enabled rule of another project (409 naming that rule's id) and must not be a catch-all
 * (403); only global administrators set `priority`, and a rule a project administrator re-aims loses it.
 * Returns the stored rule with its ClaimReport.
 */
export async function saveRule(
  db: Pool,
  projectId: string,
  input: RuleInput,
  who: RuleAuthority,
  id?: string,
): Promise<RoutingRuleRow & ClaimReport> {
  if (input.priority !== undefined && !who.globalAdmin) {
    throw new ForbiddenError("only a global administrator sets a rule's cross-project priority");
  }
  return withTransaction(db, async (client) => {
    await client.query('SELECT pg_advisory_xact_lock($1)', [RULES_LOCK]);
    const before = id === undefined ? undefined : await getRule(client, projectId, id);
    const criteria = {
      kind: input.kind,
      attribute: input.attribute ?? null,
      match: input.match,
      value: input.value,
    };
    const reaimed =
      !before ||
      before.kind !== criteria.kind ||
      (before.attribute ?? null) !== criteria.attribute ||
      before.match !== criteria.match ||
      before.value !== criteria.value;
    const claimsAnew = input.enabled && (reaimed || !before.enabled);
    const priority =
      input.priority !== undefined
        ? input.priority
        : reaimed && !who.globalAdmin
          ? null
          : (before?.priority ?? null);
    if (claimsAnew && !who.globalAdmin) {
      if (isCatchAll(criteria)) {
        throw new ForbiddenError(
          'a rule that matches any value would claim every arrival; only a global administrator may add one',
        );
      }
      const report = await claimReport(client, projectId, { ...criteria, priority });
      const taken = [...report.shadowed_by, ...report.shadows];
      if (taken.length > 0) {
        throw new ConflictError(
          `the rule overlaps routing rule ${taken.join(', ')} of another project, which already claims those ` +
            'arrivals; ask a global administrator',
        );
      }
    }
    const row = before
      ? await updateRule(client, projectId, before.id, input, { renewClaim: claimsAnew, priority })
      : await createRule(client, projectId, input, priority);
    return { ...row, ...(await claimReport(client, projectId, row)) };
  });
}

/**
 * Adds a rule to a project, claiming after every existing rule; without a position it goes after the project's
 * other rules. No claim checks: saveRule is the door for administrators.
 */
export async function createRule(
  db: Queryable,
  projectId: string,
  input: RuleInput,
  priority: number | null = input.priority ?? null,
): Promise<RoutingRuleRow> {
  const r = await db.query<RoutingRuleRow>(
    `INSERT INTO routing_rules (project_id, position, kind, attribute, match, value, enabled, priority)
     VALUES ($1, COALESCE($2, (SELECT COALESCE(max(position), 0) + 10 FROM routing_rules WHERE project_id = $1)),
             $3, $4, $5, $6, $7, $8)
     RETURNING ${RULE_COLUMNS}`,
    [
      projectId,
      input.position ?? null,
      input.kind,
      input.attribute ?? null,
      input.match,
      input.value,
      input.enabled,
      priority,
    ],
  );
  return r.rows[0];
}

/**
 * Replaces a rule of a project (keeping its position unless a new one is given). renewClaim puts its claim after
 * every existing one, as when it is re-aimed or enabled again.
 */
export async function updateRule(
  db: Queryable,
  projectId: string,
  id: string,
  input: RuleInput,
  opts: { renewClaim: boolean; priority: number | null },
): Promise<RoutingRuleRow> {
  await getRule(db, projectId, id);
  const r = await db.query<RoutingRuleRow>(
    `UPDATE routing_rules SET position = COALESCE($3, position), kind = $4, attribute = $5, match = $6, value = $7,
            enabled = $8, priority = $9,
            claim_order = CASE WHEN $10::boolean THEN nextval('routing_rules_claim_seq') ELSE claim_order END
      WHERE id = $1 AND project_id = $2 RETURNING ${RULE_COLUMNS}`,
    [
      id,
      projectId,
      input.position ?? null,
      input.kind,
      input.attribute ?? null,
      input.match,
      input.value,
      input.enabled,
      opts.priority,
      opts.renewClaim,
    ],
  );
  return r.rows[0];
}

/** Deletes a rule of a project; 404 when it is not there. */
export async function deleteRule(db: Queryable, projectId: string, id: string): Promise<void> {
  await getRule(db, projectId, id);
  await db.query('DELETE FROM routing_rules WHERE id = $1 AND project_id = $2', [id, projectId]);
}

/** Where a series arriving by one route goes: a project, or quarantine (null). */
export interface RouteDecision {
  projectId: string | null;
  ruleId: string | null;
}

/**
 * The decision for a series arriving by a route: the one already taken for this series and route if any (so later
 * instances follow the first), otherwise `decide()`'s, recorded. Concurrent callers agree on the first recorded one.
 */
export async function stickyDecision(
  db: Queryable,
  seriesUid: string,
  route: ArrivalRoute,
  decide: () => Promise<RouteDecision>,
): Promise<RouteDecision> {
  const key = [seriesUid, route.calledAet, route.callingAet, route.remoteIp];
  const select = `SELECT project_id, rule_id FROM routing_decisions
                   WHERE series_uid = $1 AND called_aet = $2 AND calling_aet = $3 AND remote_ip = $4`;
  const known = await db.query<{ project_id: string | null; rule_id: string | null }>(select, key);
  if (known.rows[0]) return { projectId: known.rows[0].project_id, ruleId: known.rows[0].rule_id };
  const d = await decide();
  const ins = await db.query(
    `INSERT INTO routing_decisions (series_uid, called_aet, calling_aet, remote_ip, project_id, rule_id)
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING`,
    [...key, d.projectId, d.ruleId],
  );
  if (ins.rowCount === 1) return d;
  const won = await db.query<{ project_id: string | null; rule_id: string | null }>(select, key);
  return won.rows[0] ? { projectId: won.rows[0].project_id, ruleId: won.rows[0].rule_id } : d;
}

/** Puts an indexed instance in quarantine (idempotent). */
export async function quarantineInstance(
  db: Queryable,
  q: { sopInstanceUid: string; studyUid: string; seriesUid: string; route: ArrivalRoute; reason: string },
): Promise<void> {
  await db.query(
    `INSERT INTO quarantine (sop_instance_uid, study_uid, series_uid, called_aet, calling_aet, remote_ip, reason)
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
    [
      q.sopInstanceUid,
      q.studyUid,
      q.seriesUid,
      q.route.calledAet || null,
      q.route.callingAet || null,
      q.route.remoteIp || null,
      q.reason,
    ],
  );
}

/** Whether an indexed instance is placed: visible in some project, or in quarantine. */
export async function isPlaced(db: Queryable, sopInstanceUid: string): Promise<boolean> {
  const r = await db.query(
    `SELECT 1 FROM project_instances WHERE sop_instance_uid = $1
     UNION ALL SELECT 1 FROM quarantine WHERE sop_instance_uid = $1 LIMIT 1`,
    [sopInstanceUid],
  );
  return (r.rowCount ?? 0) > 0;
}

/** One quarantined study as administrators see it: identifiers, routes, counts and dates, no PHI. */
export interface QuarantinedStudy {
  study_uid: string;
  series_uids: string[];
  num_series: number;
  num_instances: number;
  called_aets: string[];
  calling_aets: string[];
  remote_ips: string[];
  reasons: string[];
  first_received: Date;
  last_received: Date;
}

/** The quarantine grouped by study, most recently received first. */
export async function listQuarantine(
  db: Queryable,
  page: { limit: number; offset: number },
): Promise<{ total: number; studies: QuarantinedStudy[] }> {
  const total = await db.query<{ n: number }>('SELECT count(DISTINCT study_uid)::int AS n FROM quarantine');
  const r = await db.query<QuarantinedStudy>(
    `SELECT study_uid,
            array_agg(DISTINCT series_uid ORDER BY series_uid) AS series_uids,
            count(DISTINCT series_uid)::int AS num_series,
            count(*)::int AS num_instances,
            COALESCE(array_agg(DISTINCT called_aet) FILTER (WHERE called_aet IS NOT NULL), '{}') AS called_aets,
            COALESCE(array_agg(DISTINCT calling_aet) FILTER (WHERE calling_aet IS NOT NULL), '{}') AS calling_aets,
            COALESCE(array_agg(DISTINCT remote_ip) FILTER (WHERE remote_ip IS NOT NULL), '{}') AS remote_ips,
            array_agg(DISTINCT reason) AS reasons,
            min(received_at) AS first_received,
            max(received_at) AS last_received
       FROM quarantine GROUP BY study_uid
      ORDER BY max(received_at) DESC, study_uid LIMIT $1 OFFSET $2`,
    [page.limit, page.offset],
  );
  return { total: total.rows[0].n, studies: r.rows };
}

/** What to take out of quarantine: a study, a series, or listed instances. */
export type QuarantineSelector = { studyUid: string } | { seriesUid: string } | { sopInstanceUids: string[] };

const ASSIGN_CHUNK = 200;

/**
 * Moves quarantined instances into a project (membership source 'assign') and out of quarantine, in one transaction.
 * For a study or series, the routing decisions of its series move too, so instances still arriving follow.
 * 404 when the project does not exist or nothing quarantined matches.
 */
export async function assignQuarantined(
  db: Pool,
  selector: QuarantineSelector,
  projectId: string,
): Promise<{ assigned: number; series: number }> {
  return withTransaction(db, async (client) => {
    const project = await client.query('SELECT 1 FROM projects WHERE id = $1 FOR SHARE', [projectId]);
    if (!project.rows[0]) throw new NotFoundError('project not found');
    let where: string;
    let param: unknown;
    if ('studyUid' in selector) [where, param] = ['study_uid = $1', selector.studyUid];
    else if ('seriesUid' in selector) [where, param] = ['series_uid = $1', selector.seriesUid];
    else [where, param] = ['sop_instance_uid = ANY ($1::text[])', selector.sopInstanceUids];
    // Locked so that two administrators assigning the same study do not both count it.
    const picked = await client.query<{ sop_instance_uid: string; series_uid: string }>(
      `SELECT sop_instance_uid, series_uid FROM quarantine WHERE ${where}
        ORDER BY series_uid, sop_instance_uid FOR UPDATE`,
      [param],
    );
    if (picked.rows.length === 0) throw new NotFoundError('nothing in quarantine matches');
    const uids = picked.rows.map((r) => r.sop_instance_uid);
    for (let i = 0; i < uids.length; i += ASSIGN_CHUNK) {
      const chunk = await client.query<{
        sop_instance_uid: string;
        series_uid: string;
        study_uid: string;
        sop_class_uid: string;
        dicom_json: DicomJson;
      }>(
        `SELECT sop_instance_uid, series_uid, study_uid, sop_class_uid, dicom_json FROM instances
          WHERE sop_instance_uid = ANY ($1::text[]) ORDER BY series_uid, sop_instance_uid`,
        [uids.slice(i, i + ASSIGN_CHUNK)],
      );
      for (const row of chunk.rows) {
        await linkInstance(
          client,
          projectId,
          {
            sopInstanceUid: row.sop_instance_uid,
            seriesInstanceUid: row.series_uid,
            studyInstanceUid: row.study_uid,
            sopClassUid: row.sop_class_uid,
            json: row.dicom_json,
          },
          'assign',
        );
      }
    }
    await client.query('DELETE FROM quarantine WHERE sop_instance_uid = ANY ($1::text[])', [uids]);
    const series = [...new Set(picked.rows.map((r) => r.series_uid))];
    if (!('sopInstanceUids' in selector)) {
      await client.query(
        `UPDATE routing_decisions SET project_id = $1, rule_id = NULL, decided_at = now()
          WHERE project_id IS NULL AND series_uid = ANY ($2::text[])`,
        [projectId, series],
      );
    }
    return { assigned: uids.length, series: series.length };
  });
}

/** An archived object the index refused. */
export interface IndexFailure {
  orthanc_id: string;
  sop_instance_uid: string | null;
  series_uid: string | null;
  study_uid: string | null;
  reason: number;
  message: string;
  called_aet: string | null;
  calling_aet: string | null;
  remote_ip: string | null;
  received_at: Date;
}

/**
 * Records (or refreshes) why an archived object could not be indexed. Every string is made safe for PostgreSQL
 * first: a failure record must never fail for the same reason the object did.
 */
export async function recordFailure(
  db: Queryable,
  f: {
    orthancId: string;
    sopInstanceUid?: string;
    seriesUid?: string;
    studyUid?: string;
    reason: number;
    message: string;
    route: ArrivalRoute;
  },
): Promise<void> {
  const t = (v: string | undefined) => (v ? jsonbSafe(v) || null : null);
  await db.query(
    `INSERT INTO index_failures (orthanc_id, sop_instance_uid, series_uid, study_uid, reason, message, called_aet,
                                 calling_aet, remote_ip)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (orthanc_id) DO UPDATE SET reason = EXCLUDED.reason, message = EXCLUDED.message,
       sop_instance_uid = COALESCE(EXCLUDED.sop_instance_uid, index_failures.sop_instance_uid),
       series_uid = COALESCE(EXCLUDED.series_uid, index_failures.series_uid),
       study_uid = COALESCE(EXCLUDED.study_uid, index_failures.study_uid),
       called_aet = COALESCE(EXCLUDED.called_aet, index_failures.called_aet),
       calling_aet = COALESCE(EXCLUDED.calling_aet, index_failures.calling_aet),
       remote_ip = COALESCE(EXCLUDED.remote_ip, index_failures.remote_ip)`,
    [
      jsonbSafe(f.orthancId),
      t(f.sopInstanceUid),
      t(f.seriesUid),
      t(f.studyUid),
      f.reason,
      jsonbSafe(f.message),
      t(f.route.calledAet),
      t(f.route.callingAet),
      t(f.route.remoteIp),
    ],
  );
}

/** Forgets a failure (the object was indexed after all, or left the archive). */
export async function clearFailure(db: Queryable, orthancId: string): Promise<void> {
  await db.query('DELETE FROM index_failures WHERE orthanc_id = $1', [orthancId]);
}

/** Archived objects the index refused, most recent first. */
export async function listFailures(
  db: Queryable,
  page: { limit: number; offset: number },
): Promise<{ total: number; failures: IndexFailure[] }> {
  const total = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM index_failures');
  const r = await db.query<IndexFailure>(
    `SELECT orthanc_id, sop_instance_uid, series_uid, study_uid, reason, message, called_aet, calling_aet, remote_ip,
            received_at
       FROM index_failures ORDER BY received_at DESC, orthanc_id LIMIT $1 OFFSET $2`,
    [page.limit, page.offset],
  );
  return { total: total.rows[0].n, failures: r.rows };
}
