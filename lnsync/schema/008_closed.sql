-- Funding checks (lnsync/chain, issue 20): when persistence's recheck found a stored channel no
-- longer funded on chain (its funding output spent, or no matching output at all). A channel closed
-- at or before a reference time R is not part of R's live graph (no updates, reminders or
-- announcements for it); NULL: not known to be closed.
ALTER TABLE channel_announcements ADD COLUMN IF NOT EXISTS closed_at timestamptz;
