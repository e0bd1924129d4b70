-- How far each downloader's peer is known to be held completely: after the initial sync, and
-- while a connection stays live, the downloader reports "everything this peer sent before T is
-- committed" (ReportSyncComplete.caught_up_to). A restarted downloader asks its peer for gossip
-- from this time (less a margin), not from its last delivery: a downloader killed while catching
-- up after downtime has recent deliveries but not everything older, and must ask again from the
-- point it had really reached. Only moves forward (GREATEST); NULL for stores written before 005.
ALTER TABLE peers ADD COLUMN caught_up_to timestamptz;
