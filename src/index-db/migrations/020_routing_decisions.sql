-- Change-feed indexing: sticky routing per series and arrival route, and archived objects the index cannot take.

-- The first instance of a series that arrives through a route (called AE title, calling AE title, source IP) decides
-- where the series goes; later instances of that series arriving the same way follow the decision, even when an
-- attribute rule would judge them differently, so a series is never split between projects by accident.
-- Orthanc 1.10 does not record association ids, so the route stands for the association.
-- project_id NULL means quarantine; assigning a quarantined series updates its decisions, so late arrivals follow.
CREATE TABLE routing_decisions (
  series_uid  text NOT NULL,
  called_aet  text NOT NULL DEFAULT '',
  calling_aet text NOT NULL DEFAULT '',
  remote_ip   text NOT NULL DEFAULT '',
  project_id  text REFERENCES projects (id) ON DELETE CASCADE,
  rule_id     bigint,
  decided_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (series_uid, called_aet, calling_aet, remote_ip)
);

-- Objects Orthanc archived (by C-STORE) that the index refused: unreadable, missing UIDs, absurd image headers, or a
-- second object under a SOP Instance UID that is already indexed. Nothing is dropped silently: administrators see
-- them next to the quarantine. message holds no PHI.
CREATE TABLE index_failures (
  orthanc_id       text PRIMARY KEY,
  sop_instance_uid text,
  study_uid        text,
  reason           integer NOT NULL, -- Failure Reason (0008,1197), PS3.18 Table I.2-2
  message          text NOT NULL,
  called_aet       text,
  calling_aet      text,
  remote_ip        text,
  received_at      timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX quarantine_series_idx ON quarantine (series_uid);
CREATE INDEX routing_rules_project_idx ON routing_rules (project_id, position);
