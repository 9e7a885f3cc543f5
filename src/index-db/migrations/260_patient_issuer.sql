-- Issuer of Patient ID (0010,0021) of a project's study as a column (issue 18): a research subject is a Patient ID
-- under its issuer, so two patients with the same ID from two hospitals are two subjects, each linked to its own
-- studies. Generated from the study-level DICOM JSON the indexer already writes, so no ingest path changes; ''
-- when the images carry no issuer, like record_subjects.issuer.
ALTER TABLE project_studies
  ADD COLUMN patient_issuer text NOT NULL
  GENERATED ALWAYS AS (COALESCE(study_json->'00100021'->'Value'->>0, '')) STORED;

CREATE INDEX project_studies_patient_issuer_idx ON project_studies (project_id, patient_id, patient_issuer);
