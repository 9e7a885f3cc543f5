-- ingest_claims is unlogged, so crash recovery of PostgreSQL (kill -9, power loss, a promoted standby) empties it: the
-- claims of STOW writers that stored an object in Orthanc but had not indexed it yet are gone, and the change feed
-- would take their objects for REST stores nobody indexes, and place them (no AE title: quarantine) while the writer,
-- once PostgreSQL is back, indexes them into the uploader's project too. One object placed twice.
--
-- This one-row table is unlogged too, so it is emptied by the same crash recovery, and only by it (a clean shutdown
-- keeps unlogged tables). A missing row therefore means "claims may have been lost": the first check that finds it
-- missing writes the time it found so, and until INDEXER_CLAIM_TTL_MS after that time every REST-stored object that
-- is not claimed is treated as claimed (the feed waits for it), the time in which any writer that had claimed before
-- the crash indexes its objects or is taken for dead. Writers pay nothing for it: only the feed reads it. A fresh
-- database starts with claims known to be complete ('-infinity').
CREATE UNLOGGED TABLE ingest_claims_epoch (
  one   boolean PRIMARY KEY DEFAULT true CHECK (one),
  since timestamptz NOT NULL
);
INSERT INTO ingest_claims_epoch (one, since) VALUES (true, '-infinity');
