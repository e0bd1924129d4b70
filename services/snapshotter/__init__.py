"""The snapshotter service."""
