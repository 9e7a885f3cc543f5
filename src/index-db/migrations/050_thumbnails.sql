-- Thumbnail cache (PS3.18 thumbnail resources), written by the thumbnail job and by on-demand renders.
--
-- Keyed by SOP Instance UID, never by series or study: what a project may see of a series is per instance, so a
-- series thumbnail is the thumbnail of one instance the caller can see. Kept in PostgreSQL rather than on disk so that
-- gateway and worker processes on different hosts share it without a shared volume, and so that removing an
-- instance removes its thumbnail (ON DELETE CASCADE). Entries are a few kilobytes each.
CREATE TABLE thumbnails (
  sop_instance_uid text PRIMARY KEY REFERENCES instances (sop_instance_uid) ON DELETE CASCADE,
  frame        integer NOT NULL DEFAULT 1,
  size         integer NOT NULL,      -- the square the image fits in, in pixels (THUMBNAIL_SIZE when written)
  content_type text NOT NULL,
  bytes        bytea NOT NULL,
  source_md5   text,                  -- md5 of the object rendered; a replaced object makes the entry stale
  created_at   timestamptz NOT NULL DEFAULT now()
);
