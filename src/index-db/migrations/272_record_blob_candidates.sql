-- Collection of non-DICOM file bytes (issue 18): when a record_files row goes (a file version, its record, its
-- subject or its project deleted; cascades fire row triggers too) or a pipeline artefact row goes, its blob becomes
-- a candidate. The sweep (src/records/blob-gc.ts) removes a candidate's bytes only after a grace period and only if
-- no row of any project still names them; otherwise the candidate is dropped and the bytes stay.
CREATE TABLE record_blob_candidates (
  sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  since  timestamptz NOT NULL DEFAULT now()
);

CREATE FUNCTION record_blob_candidate() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.sha256 ~ '^[0-9a-f]{64}$' THEN
    INSERT INTO record_blob_candidates (sha256) VALUES (OLD.sha256)
      ON CONFLICT (sha256) DO UPDATE SET since = now();
  END IF;
  RETURN NULL;
END $$;

CREATE TRIGGER record_files_blob_candidate AFTER DELETE ON record_files
  FOR EACH ROW EXECUTE FUNCTION record_blob_candidate();
CREATE TRIGGER pipeline_artefacts_blob_candidate AFTER DELETE ON pipeline_artefacts
  FOR EACH ROW EXECUTE FUNCTION record_blob_candidate();

CREATE INDEX pipeline_artefacts_sha256_idx ON pipeline_artefacts (sha256);
CREATE INDEX record_files_sha256_idx ON record_files (sha256);
