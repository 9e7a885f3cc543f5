-- Pipeline outputs as research-record files (issue 19): the non-DICOM outputs and logs of a succeeded run are
-- files of the subject(s) of its input series, their bytes in the same FileStore, and each such file names the run
-- that made it. Run artefacts keep their SHA-256 only: the bytes are the FileStore's.
ALTER TABLE record_files ADD COLUMN run_id uuid REFERENCES pipeline_runs (id) ON DELETE SET NULL;
CREATE INDEX record_files_run_idx ON record_files (run_id) WHERE run_id IS NOT NULL;
