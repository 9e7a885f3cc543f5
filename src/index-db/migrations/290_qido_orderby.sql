-- QIDO-RS `orderby` (src/index-db/qido.ts STUDY_SORTS): one index per sortable text column of a project's studies, so
-- that a page in that order is read in index order (about offset + limit entries) instead of sorting every match.
-- Empty values sort first (NULLS FIRST, also on the NOT NULL columns, whose ORDER BY says NULLS FIRST like the
-- others: the planner matches the words), so a descending order is the exact backward scan. StudyDate uses project_studies_order_idx / project_studies_global_order_idx
-- (010_qido.sql), read forwards (newest first) or backwards (oldest first).
CREATE INDEX project_studies_sort_name_idx ON project_studies (project_id, patient_name_norm NULLS FIRST, study_uid);
CREATE INDEX project_studies_sort_patient_id_idx ON project_studies (project_id, patient_id NULLS FIRST, study_uid);
CREATE INDEX project_studies_sort_accession_idx
  ON project_studies (project_id, accession_number NULLS FIRST, study_uid);
CREATE INDEX project_studies_sort_description_idx
  ON project_studies (project_id, study_description NULLS FIRST, study_uid);
CREATE INDEX project_studies_sort_modalities_idx ON project_studies (project_id, modalities NULLS FIRST, study_uid);

-- Not indexed, on purpose: the two counts (every stored instance updates them, and an index on a column an UPDATE
-- changes costs that update an entry in every index of the table) and the orders across projects (the union root:
-- one more index per column on every write, for a page PostgreSQL can also get with a top-N sort of the matches).

-- The sort indexes above lead with the same columns, so equality matching on PatientID / AccessionNumber uses them;
-- these two of 001_index.sql would only cost writes.
DROP INDEX IF EXISTS project_studies_patient_id_idx;
DROP INDEX IF EXISTS project_studies_accession_idx;
