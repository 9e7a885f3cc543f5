-- Processing pipelines (issue 19): Boutiques descriptors registered by global administrators, runs of them on a
-- project's series, and the non-DICOM artefacts a run leaves (NIfTI, logs). No PHI here: UIDs and ids only.

CREATE TABLE pipelines (
  name        text NOT NULL CHECK (name ~ '^[a-z0-9][a-z0-9._-]{0,63}$'),
  version     integer NOT NULL CHECK (version >= 1),
  descriptor  jsonb NOT NULL,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (name, version)
);

CREATE TABLE pipeline_runs (
  id                uuid PRIMARY KEY,
  project_id        text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  pipeline_name     text NOT NULL,
  pipeline_version  integer NOT NULL,
  params            jsonb NOT NULL,
  input_series      text[] NOT NULL,
  state             text NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed', 'cancelled')),
  cancel_requested  boolean NOT NULL DEFAULT false,
  phase             text NOT NULL DEFAULT 'queued',
  progress          integer NOT NULL DEFAULT 0 CHECK (progress BETWEEN 0 AND 100),
  attempts          integer NOT NULL DEFAULT 0,
  exit_code         integer,
  error             text,
  output_series     text[] NOT NULL DEFAULT '{}',
  created_by        text NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  started_at        timestamptz,
  finished_at       timestamptz,
  FOREIGN KEY (pipeline_name, pipeline_version) REFERENCES pipelines (name, version)
);
CREATE INDEX pipeline_runs_project ON pipeline_runs (project_id, created_at DESC);

CREATE TABLE pipeline_artefacts (
  run_id      uuid NOT NULL REFERENCES pipeline_runs (id) ON DELETE CASCADE,
  name        text NOT NULL,
  kind        text NOT NULL CHECK (kind IN ('output', 'log')),
  bytes       bigint NOT NULL,
  sha256      text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (run_id, name)
);
