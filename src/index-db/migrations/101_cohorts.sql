-- Cohorts (issue 10): de-identified copies of a clinical project's studies in a research project.
-- Everything here that links a research identifier to a source one is readable through the API by the source
-- project's curators only.

-- One secret per research project: replaced UIDs are HMAC(secret, source UID), so re-exports are identical and
-- two research projects can never be joined on UIDs.
CREATE TABLE research_keys (
  project_id  text PRIMARY KEY REFERENCES projects (id) ON DELETE CASCADE,
  uid_secret  bytea NOT NULL CHECK (length(uid_secret) = 32),
  created_at  timestamptz NOT NULL DEFAULT now()
);

-- One pseudonym and one date offset per source patient per research project, the same in every cohort and
-- study, so that intervals survive and a patient's studies stay together.
CREATE TABLE research_pseudonyms (
  project_id        text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  source_project_id text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  source_patient_key text NOT NULL, -- the source Patient ID (or, without one, the Patient Name), PHI
  pseudonym         text NOT NULL,  -- becomes Patient ID and Patient Name of the copies
  date_offset_days  integer NOT NULL,
  created_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, source_project_id, source_patient_key),
  UNIQUE (project_id, pseudonym)
);

CREATE TABLE cohorts (
  id                  uuid PRIMARY KEY,
  name                text NOT NULL,
  source_project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  research_project_id text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  created_by          text NOT NULL,
  created_at          timestamptz NOT NULL DEFAULT now(),
  state               text NOT NULL DEFAULT 'queued'
                      CHECK (state IN ('queued', 'running', 'done', 'cancelled')),
  -- Frozen provenance: profile name, version, Table E.1-1 edition and options, as used.
  profile             jsonb NOT NULL,
  options             jsonb NOT NULL,
  source_studies      text[] NOT NULL,
  finished_at         timestamptz
);
CREATE INDEX cohorts_source_idx ON cohorts (source_project_id, created_at DESC);
CREATE INDEX cohorts_research_idx ON cohorts (research_project_id);

-- One row per source instance: the unit of idempotent work and the manifest source → output.
CREATE TABLE cohort_instances (
  cohort_id         uuid NOT NULL REFERENCES cohorts (id) ON DELETE CASCADE,
  source_sop_uid    text NOT NULL,
  source_series_uid text NOT NULL,
  source_study_uid  text NOT NULL,
  state             text NOT NULL DEFAULT 'pending'
                    CHECK (state IN ('pending', 'done', 'withheld', 'failed', 'withdrawn')),
  reason            text,           -- a reason code, never a value from the object
  pseudonym         text,
  output_sop_uid    text,
  output_series_uid text,
  output_study_uid  text,
  bytes             bigint NOT NULL DEFAULT 0,
  attempts          integer NOT NULL DEFAULT 0,
  updated_at        timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (cohort_id, source_sop_uid)
);
CREATE INDEX cohort_instances_state_idx ON cohort_instances (cohort_id, state);
CREATE INDEX cohort_instances_pseudonym_idx ON cohort_instances (cohort_id, pseudonym);
CREATE INDEX cohort_instances_output_idx ON cohort_instances (output_sop_uid);
