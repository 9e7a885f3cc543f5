-- Cross-project precedence of routing rules (issue 8, defect 3). A project administrator's `position` orders rules
-- within their own project only. Across projects, the rule that claimed its arrivals first wins: claim_order is
-- taken from a sequence when a rule is created, and taken anew whenever its matching criteria change or it is
-- enabled again, so an old rule cannot be bent or woken onto arrivals another project claimed in the meantime.
-- Only a global administrator sets `priority`, which overrides claim order (lower first; rules without one after
-- every rule with one).
CREATE SEQUENCE routing_rules_claim_seq;
ALTER TABLE routing_rules ADD COLUMN claim_order bigint;
ALTER TABLE routing_rules ADD COLUMN priority integer;
-- Existing rules keep the order they were created in (not their positions, which any project administrator could
-- set); a global administrator restores a deliberate cross-project order with priority.
UPDATE routing_rules r SET claim_order = o.n
  FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM routing_rules) o
 WHERE r.id = o.id;
SELECT setval('routing_rules_claim_seq', COALESCE((SELECT max(claim_order) FROM routing_rules), 0) + 1, false);
ALTER TABLE routing_rules ALTER COLUMN claim_order SET DEFAULT nextval('routing_rules_claim_seq');
ALTER TABLE routing_rules ALTER COLUMN claim_order SET NOT NULL;
ALTER SEQUENCE routing_rules_claim_seq OWNED BY routing_rules.claim_order;
CREATE INDEX routing_rules_claim_idx ON routing_rules (priority, claim_order) WHERE enabled;
