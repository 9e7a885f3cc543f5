-- Index failures name the series too: an object set aside by the change feed is recorded with every UID Orthanc's own
-- database holds for it (SOP Instance, Series, Study), so administrators can find and fix it without opening the file.
ALTER TABLE index_failures ADD COLUMN series_uid text;
