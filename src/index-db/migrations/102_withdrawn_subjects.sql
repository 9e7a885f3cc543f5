-- deid (issue 10): a subject withdrawn from a research project stays withdrawn. The mark sits on the pseudonym,
-- which is per source patient per research project, so every later cohort into that research project (and a retry
-- of an earlier one) skips the subject's instances instead of re-adding them.
ALTER TABLE research_pseudonyms ADD COLUMN withdrawn_at timestamptz;
