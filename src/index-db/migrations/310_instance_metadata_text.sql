-- WADO-RS metadata answers are each instance's DICOM JSON as text. Turning jsonb back into text is most of a cold
-- series metadata request: about 27 us per instance of 3.7 KB, 2.7 ms of the 3.5 ms page query of a 100-instance
-- series (bench/REPORT.md, "Cold metadata"). This column keeps that text, computed by PostgreSQL from
-- dicom_json on every insert and update, so it can never differ from the jsonb QIDO matches on, and costs the writer
-- no more than the conversion once. lz4 where the server has it: faster to decompress than pglz, and about 1.4 KB per
-- instance on disk either way (the jsonb itself is about 1.7 KB).
DO $$
BEGIN
  ALTER TABLE instances
    ADD COLUMN metadata_text text COMPRESSION lz4 GENERATED ALWAYS AS (dicom_json::text) STORED;
EXCEPTION WHEN feature_not_supported OR invalid_parameter_value THEN
  ALTER TABLE instances ADD COLUMN metadata_text text GENERATED ALWAYS AS (dicom_json::text) STORED;
END
$$;
