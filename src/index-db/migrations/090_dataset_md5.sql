-- Identity of an archived object is judged on its data set (transfer syntax + everything after the File Meta
-- group), not on the whole file: a C-STORE re-wraps the same data set in another File Meta. Rows indexed before this
-- migration have none; ingest computes it from the archived file the first time it needs it and stores it.
ALTER TABLE instances ADD COLUMN dataset_md5 text;
