-- QIDO-RS (src/index-db/qido.ts): indexes for matching, ordering and paging.
--
-- The database collation is not C, so prefix LIKE needs text_pattern_ops; infix wildcards (*DOE*) and fuzzy
-- person-name matching (a regex anchored at name components) use trigrams. pg_trgm is a trusted extension: the
-- database owner may create it.
CREATE EXTENSION IF NOT EXISTS pg_trgm;

-- Studies are listed newest first with the UID as tie-break, so offset paging is stable. For one project this
-- index yields that order directly: a limit=100 page reads about 100 index entries, whatever the project's size.
CREATE INDEX project_studies_order_idx
  ON project_studies (project_id, study_date DESC NULLS LAST, study_time DESC NULLS LAST, study_uid);

-- Person names match on their folded form (case- and accent-insensitive).
CREATE INDEX project_studies_name_prefix_idx ON project_studies (project_id, patient_name_norm text_pattern_ops);
CREATE INDEX project_studies_name_trgm_idx ON project_studies USING gin (patient_name_norm gin_trgm_ops);
CREATE INDEX project_studies_referring_trgm_idx
  ON project_studies USING gin (referring_physician_name_norm gin_trgm_ops);

CREATE INDEX project_studies_patient_id_prefix_idx ON project_studies (project_id, patient_id text_pattern_ops);
CREATE INDEX project_studies_accession_prefix_idx
  ON project_studies (project_id, accession_number text_pattern_ops);
CREATE INDEX project_studies_description_trgm_idx ON project_studies USING gin (study_description gin_trgm_ops);
CREATE INDEX project_studies_birth_date_idx ON project_studies (project_id, patient_birth_date);
CREATE INDEX project_studies_sop_classes_idx ON project_studies USING gin (sop_classes);

-- Series are listed by SeriesNumber within their study.
CREATE INDEX project_series_order_idx ON project_series (project_id, study_uid, series_number, series_uid);
CREATE INDEX project_series_date_idx ON project_series (project_id, series_date);
CREATE INDEX project_series_description_trgm_idx ON project_series USING gin (series_description gin_trgm_ops);

-- The union root (/dicom-web) reads several projects at once: these orders span projects, so a page is still
-- read in order instead of sorting every match.
CREATE INDEX project_studies_global_order_idx
  ON project_studies (study_date DESC NULLS LAST, study_time DESC NULLS LAST, study_uid, project_id);
CREATE INDEX project_series_global_order_idx ON project_series (study_uid, series_number, series_uid, project_id);
