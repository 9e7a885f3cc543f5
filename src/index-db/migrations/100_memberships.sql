-- Project memberships kept in Aperture (issue 10, item 9), in addition to the roles of Keycloak groups, and
-- research projects: projects whose content only cohort jobs may write (readers see de-identified data only).

ALTER TABLE projects ADD COLUMN kind text NOT NULL DEFAULT 'clinical' CHECK (kind IN ('clinical', 'research'));

CREATE TABLE project_members (
  project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  -- 'sub' matches the token's subject; 'username' its preferred_username (a Keycloak username is unique and
  -- immutable by default, so granting by name before the person's first login works).
  subject_kind text NOT NULL CHECK (subject_kind IN ('sub', 'username')),
  subject      text NOT NULL CHECK (length(subject) BETWEEN 1 AND 255),
  role         text NOT NULL CHECK (role IN ('reader', 'contributor', 'curator', 'admin')),
  granted_by   text NOT NULL,
  granted_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, subject_kind, subject)
);
CREATE INDEX project_members_subject_idx ON project_members (subject_kind, subject);
