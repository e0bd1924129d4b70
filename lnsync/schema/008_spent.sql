-- Funding checks (lnsync/chain, issue 20): when a channel's funding output was found spent. A
-- channel spent at or before a reference time R is not part of R's live graph (no updates,
-- reminders or announcements for it); NULL: not known to be spent.
ALTER TABLE channel_announcements ADD COLUMN IF NOT EXISTS spent_at timestamptz;
