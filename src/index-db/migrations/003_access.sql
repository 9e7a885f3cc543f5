-- Share links and the audit trail.

CREATE TABLE share_links (
  id          uuid PRIMARY KEY,
  token_hash  bytea NOT NULL UNIQUE, -- SHA-256 of the token; the token itself is shown once
  project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  study_uid   text,
  series_uid  text,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  expires_at  timestamptz NOT NULL,
  revoked_at  timestamptz,
  description text NOT NULL DEFAULT ''
);
CREATE INDEX share_links_project_idx ON share_links (project_id);

CREATE TABLE audit_events (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL DEFAULT now(),
  principal   text NOT NULL,          -- token subject / client id / share link id; never a name
  principal_kind text NOT NULL,       -- user | service | share | anonymous
  action      text NOT NULL,          -- e.g. qido.studies, wado.instance, stow, share.create
  project_id  text,
  study_uid   text,
  series_uid  text,
  sop_instance_uid text,
  outcome     integer NOT NULL,       -- HTTP status
  bytes       bigint NOT NULL DEFAULT 0,
  client_ip   text,
  method      text,
  route       text,                   -- route pattern, not the raw URL (query strings may hold names)
  detail      jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_project_at_idx ON audit_events (project_id, at DESC);
CREATE INDEX audit_events_study_idx ON audit_events (study_uid);
CREATE INDEX audit_events_principal_idx ON audit_events (principal, at DESC);
