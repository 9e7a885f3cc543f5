-- Audit export (issue 17): how far each destination (syslog, hec) has been sent. The audit trail itself is the
-- queue: events wait in audit_events, so a destination that is down holds no memory, and a restart resumes.
CREATE TABLE audit_export_cursor (
  destination text PRIMARY KEY,
  last_id     bigint NOT NULL,
  updated_at  timestamptz NOT NULL DEFAULT now()
);
