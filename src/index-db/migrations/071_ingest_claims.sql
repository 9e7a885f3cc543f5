-- STOW-RS claims the SOP Instance UID it is about to store in Orthanc and index. The change feed sees the same object
-- arrive over Orthanc's REST API a moment later; a live claim tells it the gateway's own writer will index it (into
-- the uploader's project), so the feed leaves it alone without a blind grace period, and indexes every other
-- REST-stored object at once. Indexing deletes the claim in the same transaction; a writer that dies leaves a claim
-- that expires (INDEXER_CLAIM_TTL_MS). Unlogged: a claim is worth nothing after a crash of PostgreSQL.
CREATE UNLOGGED TABLE ingest_claims (
  sop_instance_uid text PRIMARY KEY,
  claimed_at       timestamptz NOT NULL DEFAULT now()
);
