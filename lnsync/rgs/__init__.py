"""Rapid Gossip Sync: the store model, the delta engine and the v1/v2 binary format (pure code).

- :mod:`~lnsync.rgs.format` — constants and flag bits of the binary format
- :mod:`~lnsync.rgs.model` — the engine's input (per-channel/direction/node summaries) and output
- :mod:`~lnsync.rgs.history` — an in-memory store with the same semantics as PostgreSQL's
- :mod:`~lnsync.rgs.reminders` — when stable channels are re-sent so clients never lose them
- :mod:`~lnsync.rgs.delta` — the delta engine: what a client that synced at T needs at R
- :mod:`~lnsync.rgs.encode` / :mod:`~lnsync.rgs.decode` — bytes out and back in
"""
