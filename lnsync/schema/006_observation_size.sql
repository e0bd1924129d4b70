-- Each delivery's message size in bytes, for the observer's reconciliation estimate
-- (services/observer/recon.py: what flooding spent, duplicates included). NULL for deliveries
-- recorded before this migration; the estimate counts those at their kind's smallest size.
ALTER TABLE observations ADD COLUMN size integer;
