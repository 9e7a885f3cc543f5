-- The index: projects, and what each project can see of the archive.
--
-- Visibility is per instance (project_instances): a project sees exactly the instances stored into it,
-- routed to it or shared into it. Study- and series-level attributes are kept per project
-- (project_studies, project_series) and computed from that project's own instances, so an upload that
-- reuses another project's Study or Series Instance UID never reveals that project's attributes.
-- `instances` holds one row per SOP Instance UID, as Orthanc holds one copy; a different object under a known
-- SOP Instance UID is refused at ingest, so every project that lists an instance saw those exact bytes.

CREATE TABLE projects (
  id          text PRIMARY KEY CHECK (id ~ '^[a-z0-9]([a-z0-9-]{0,62}[a-z0-9])?$'),
  name        text NOT NULL,
  description text NOT NULL DEFAULT '',
  created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE instances (
  sop_instance_uid   text PRIMARY KEY,
  study_uid          text NOT NULL,
  series_uid         text NOT NULL,
  sop_class_uid      text NOT NULL,
  instance_number    integer,
  transfer_syntax    text NOT NULL,
  rows               integer,
  columns            integer,
  number_of_frames   integer,
  bits_allocated     integer,
  orthanc_id         text NOT NULL UNIQUE,
  file_size          bigint NOT NULL,
  md5                text,
  -- The whole data set (no File Meta) as DICOM JSON (PS3.18 Annex F); bulk data as relative BulkDataURIs.
  dicom_json         jsonb NOT NULL,
  indexed_at         timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX instances_series_idx ON instances (series_uid, instance_number);
CREATE INDEX instances_study_idx ON instances (study_uid);
CREATE INDEX instances_sop_class_idx ON instances (sop_class_uid);

CREATE TABLE project_instances (
  project_id       text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  sop_instance_uid text NOT NULL REFERENCES instances (sop_instance_uid) ON DELETE CASCADE,
  series_uid       text NOT NULL,
  study_uid        text NOT NULL,
  source           text NOT NULL DEFAULT 'stow', -- stow | route | share | assign
  added_at         timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, sop_instance_uid)
);
CREATE INDEX project_instances_series_idx ON project_instances (project_id, series_uid);
CREATE INDEX project_instances_study_idx ON project_instances (project_id, study_uid);
CREATE INDEX project_instances_sop_idx ON project_instances (sop_instance_uid);

CREATE TABLE project_series (
  project_id          text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  series_uid          text NOT NULL,
  study_uid           text NOT NULL,
  modality            text,
  series_number       integer,
  series_description  text,
  series_date         text, -- DA as YYYYMMDD
  series_time         text, -- TM normalised to HHMMSS.FFFFFF
  body_part_examined  text,
  performed_procedure_step_start_date text,
  performed_procedure_step_start_time text,
  num_instances       integer NOT NULL DEFAULT 0,
  series_json         jsonb NOT NULL, -- series-level attributes as DICOM JSON
  updated_at          timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, series_uid)
);
CREATE INDEX project_series_study_idx ON project_series (project_id, study_uid);
CREATE INDEX project_series_modality_idx ON project_series (project_id, modality);
CREATE INDEX project_series_uid_idx ON project_series (series_uid);

CREATE TABLE project_studies (
  project_id              text NOT NULL REFERENCES projects (id) ON DELETE CASCADE,
  study_uid               text NOT NULL,
  patient_name            text,
  patient_name_norm       text, -- upper case, accents removed, for fuzzy matching
  patient_id              text,
  patient_birth_date      text,
  patient_sex             text,
  study_date              text, -- DA as YYYYMMDD
  study_time              text, -- TM normalised to HHMMSS.FFFFFF
  accession_number        text,
  study_id                text,
  study_description       text,
  referring_physician_name      text,
  referring_physician_name_norm text,
  modalities              text[] NOT NULL DEFAULT '{}',
  sop_classes             text[] NOT NULL DEFAULT '{}',
  num_series              integer NOT NULL DEFAULT 0,
  num_instances           integer NOT NULL DEFAULT 0,
  study_json              jsonb NOT NULL, -- patient- and study-level attributes as DICOM JSON
  created_at              timestamptz NOT NULL DEFAULT now(),
  updated_at              timestamptz NOT NULL DEFAULT now(),
  PRIMARY KEY (project_id, study_uid)
);
CREATE INDEX project_studies_date_idx ON project_studies (project_id, study_date DESC, study_time DESC);
CREATE INDEX project_studies_uid_idx ON project_studies (study_uid);
CREATE INDEX project_studies_patient_id_idx ON project_studies (project_id, patient_id);
CREATE INDEX project_studies_accession_idx ON project_studies (project_id, accession_number);
CREATE INDEX project_studies_modalities_idx ON project_studies USING gin (modalities);
