-- Research records beside the images (issue 18): subjects, record types as versioned JSON Schemas, records,
-- non-DICOM files (bytes in the FileStore, never here), and which cohorts carry their records.

-- A subject of a project: a patient (Patient ID + Issuer of Patient ID) or a phantom. Derived from the index's
-- patient columns on first use, or created by a record write before any image arrives. In research projects the
-- Patient ID of the copies is the pseudonym, so subjects there are keyed by the pseudonym.
CREATE TABLE record_subjects (
  id          uuid PRIMARY KEY,
  project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  patient_id  text NOT NULL,          -- PHI in clinical projects: never in URLs, logs or audit detail
  issuer      text NOT NULL DEFAULT '',
  kind        text NOT NULL DEFAULT 'patient' CHECK (kind IN ('patient', 'phantom')),
  created_at  timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, patient_id, issuer)
);

CREATE TABLE record_types (
  project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  name        text NOT NULL CHECK (name ~ '^[A-Za-z][A-Za-z0-9_]{0,63}$'),
  version     integer NOT NULL,
  schema      jsonb NOT NULL,          -- JSON Schema (draft 2020-12 subset) with x-unit, x-ref, x-time-to-event
  key_field   text,                    -- the field a re-import upserts by
  parent_type text,                    -- records of this type hang under a record of that type
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, name, version)
);

CREATE TABLE records (
  id           uuid PRIMARY KEY,
  project_id   text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  subject_id   uuid NOT NULL REFERENCES record_subjects (id) ON DELETE CASCADE,
  type_name    text NOT NULL,
  type_version integer NOT NULL,
  record_key   text NOT NULL,
  parent_id    uuid REFERENCES records (id) ON DELETE CASCADE,
  data         jsonb NOT NULL,
  revision     integer NOT NULL DEFAULT 1,
  created_by   text NOT NULL,
  created_at   timestamptz NOT NULL DEFAULT now(),
  updated_by   text NOT NULL,
  updated_at   timestamptz NOT NULL DEFAULT now(),
  UNIQUE (project_id, type_name, record_key)
);
CREATE INDEX records_subject_idx ON records (subject_id, type_name);
CREATE INDEX records_parent_idx ON records (parent_id);
CREATE INDEX records_data_idx ON records USING gin (data jsonb_path_ops);

-- Non-DICOM files: metadata only; the bytes live in the FileStore under their SHA-256.
CREATE TABLE record_files (
  id          uuid PRIMARY KEY,
  project_id  text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  subject_id  uuid NOT NULL REFERENCES record_subjects (id) ON DELETE CASCADE,
  record_id   uuid REFERENCES records (id) ON DELETE CASCADE,
  path        text NOT NULL,
  version     integer NOT NULL,
  sha256      text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  size        bigint NOT NULL,
  media_type  text NOT NULL,
  created_by  text NOT NULL,
  created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX record_files_version_idx
  ON record_files (subject_id, COALESCE(record_id, '00000000-0000-0000-0000-000000000000'::uuid), path, version);

-- Cohorts whose download carries the de-identified records of their subjects.
CREATE TABLE cohort_records (
  cohort_id uuid PRIMARY KEY REFERENCES cohorts (id) ON DELETE CASCADE
);
