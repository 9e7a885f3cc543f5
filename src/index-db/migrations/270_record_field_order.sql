-- The order a record type's fields were written in (issue 18). jsonb keeps object keys by length and then name, so
-- the stored schema alone loses it; forms, tables and exports follow this array instead. NULL for versions defined
-- before this column existed (they keep jsonb's order).
ALTER TABLE record_types ADD COLUMN field_order text[];
