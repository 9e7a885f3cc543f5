-- Change-feed indexing (Orthanc /changes), routing rules and quarantine.

CREATE TABLE indexer_state (
  name        text PRIMARY KEY,
  last_change bigint NOT NULL DEFAULT 0,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO indexer_state (name) VALUES ('orthanc-changes');

-- Rules are checked in order of position; the first match decides the project.
CREATE TABLE routing_rules (
  id          bigserial PRIMARY KEY,
  project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  position    integer NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('called_aet', 'calling_aet', 'source_ip', 'attribute')),
  -- For kind = 'attribute': the DICOM keyword or tag to look at, and how to match.
  attribute   text,
  match       text NOT NULL DEFAULT 'equals' CHECK (match IN ('equals', 'prefix', 'contains', 'regex')),
  value       text NOT NULL,
  enabled     boolean NOT NULL DEFAULT true,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX routing_rules_order_idx ON routing_rules (position, id);

-- Instances that matched no rule. They are indexed (so nothing is lost) but visible to no project until assigned.
CREATE TABLE quarantine (
  sop_instance_uid text PRIMARY KEY REFERENCES instances (sop_instance_uid) ON DELETE CASCADE,
  study_uid        text NOT NULL,
  series_uid       text NOT NULL,
  called_aet       text,
  calling_aet      text,
  remote_ip        text,
  reason           text NOT NULL,
  received_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX quarantine_study_idx ON quarantine (study_uid);
