-- A source patient of a research project is a Patient ID under its Issuer of Patient ID (0010,0021) (issue 18):
-- two patients with the same ID from two hospitals get two pseudonyms. '' when the images carry no issuer, which
-- is every row made before this column, so their pseudonyms stay as they were.
ALTER TABLE research_pseudonyms ADD COLUMN source_issuer text NOT NULL DEFAULT '';
ALTER TABLE research_pseudonyms DROP CONSTRAINT research_pseudonyms_pkey;
ALTER TABLE research_pseudonyms ADD PRIMARY KEY (project_id, source_project_id, source_patient_key, source_issuer);
