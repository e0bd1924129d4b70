"""lnsync: a Rapid Gossip Sync server for the Lightning Network, built as gRPC microservices.

This package holds the code the services share: pure protocol code (``gossip``, ``rgs``), the
configuration, the CLI, and small I/O helpers (gRPC servers, the embedded PostgreSQL).
The services themselves live in the top-level ``services`` package.
"""

__version__ = "0.1.0"
