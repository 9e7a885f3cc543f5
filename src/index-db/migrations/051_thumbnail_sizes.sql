-- Thumbnails are cached per size: viewers ask for their own square (OHIF asks viewport=256,256), the job fills
-- THUMBNAIL_SIZE. The gateway caches only a few square sizes (see rendered.ts), so this stays small.
ALTER TABLE thumbnails DROP CONSTRAINT thumbnails_pkey;
ALTER TABLE thumbnails ADD PRIMARY KEY (sop_instance_uid, size);
