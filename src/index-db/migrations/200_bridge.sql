-- PACS bridge (issue 14): remote DICOM nodes, retrieves from them into projects, watchers (saved queries).
-- No PHI here: node addresses, UIDs, counts and DIMSE statuses only. Query keys of watchers may hold a patient
-- identifier a curator typed; they are shown to that project's curators only.

CREATE TABLE remote_nodes (
  id               text PRIMARY KEY CHECK (id ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$'),
  aet              text NOT NULL,
  host             text NOT NULL,
  port             integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
  allow_find       boolean NOT NULL DEFAULT true,
  allow_move       boolean NOT NULL DEFAULT true,
  allow_get        boolean NOT NULL DEFAULT false,
  allow_store      boolean NOT NULL DEFAULT true,
  retrieve_method  text NOT NULL DEFAULT 'move' CHECK (retrieve_method IN ('move', 'get')),
  max_associations integer NOT NULL DEFAULT 2 CHECK (max_associations BETWEEN 1 AND 64),
  created_at       timestamptz NOT NULL DEFAULT now(),
  updated_at       timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bridge_retrieves (
  id                  uuid PRIMARY KEY,
  node_id             text NOT NULL REFERENCES remote_nodes (id) ON DELETE CASCADE,
  -- Where the retrieved (identified) instances are linked: a clinical project, never a research one.
  project_id          text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  -- Anonymise on import: a cohort from project_id into this research project once the retrieve is complete.
  research_project_id text REFERENCES projects (id) ON DELETE SET NULL,
  deid_options        jsonb,
  cohort_id           uuid,
  watcher_id          uuid,
  method              text NOT NULL CHECK (method IN ('move', 'get')),
  state               text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'partial', 'failed', 'cancelled')),
  -- What went wrong, in words (node unreachable, association rejected, DIMSE status), never a value of an object.
  error               text,
  dimse_status        text,
  attempts            integer NOT NULL DEFAULT 0,
  created_by          text NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  started_at          timestamptz,
  finished_at         timestamptz
);
CREATE INDEX bridge_retrieves_project_idx ON bridge_retrieves (project_id, created_at DESC);

-- One row per study of a retrieve: the unit of resumable work, and what the change feed expects to arrive.
CREATE TABLE bridge_retrieve_studies (
  retrieve_id  uuid NOT NULL REFERENCES bridge_retrieves (id) ON DELETE CASCADE,
  study_uid    text NOT NULL,
  -- The node's AE title: C-STORE sub-operations of its C-MOVE arrive with it as calling AE.
  calling_aet  text NOT NULL,
  state        text NOT NULL DEFAULT 'pending' CHECK (state IN ('pending', 'done', 'partial', 'failed')),
  -- NumberOfStudyRelatedInstances as the node answered it, when it did.
  expected     integer,
  error        text,
  dimse_status text,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (retrieve_id, study_uid)
);
CREATE INDEX bridge_retrieve_studies_expect_idx ON bridge_retrieve_studies (study_uid, calling_aet);

CREATE TABLE bridge_watchers (
  id                  uuid PRIMARY KEY,
  name                text NOT NULL,
  node_id             text NOT NULL REFERENCES remote_nodes (id) ON DELETE CASCADE,
  project_id          text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  research_project_id text REFERENCES projects (id) ON DELETE SET NULL,
  deid_options        jsonb,
  query               jsonb NOT NULL,
  interval_s          integer NOT NULL CHECK (interval_s > 0),
  enabled             boolean NOT NULL DEFAULT true,
  created_by          text NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE bridge_watcher_runs (
  id          bigserial PRIMARY KEY,
  watcher_id  uuid NOT NULL REFERENCES bridge_watchers (id) ON DELETE CASCADE,
  started_at  timestamptz NOT NULL DEFAULT now(),
  finished_at timestamptz,
  matched     integer,
  new_studies integer,
  retrieve_id uuid,
  error       text
);
CREATE INDEX bridge_watcher_runs_idx ON bridge_watcher_runs (watcher_id, id DESC);

-- Every study a watcher has ever queued: it never imports the same study twice.
CREATE TABLE bridge_watcher_seen (
  watcher_id  uuid NOT NULL REFERENCES bridge_watchers (id) ON DELETE CASCADE,
  study_uid   text NOT NULL,
  retrieve_id uuid,
  seen_at     timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (watcher_id, study_uid)
);
