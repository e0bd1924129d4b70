"""The Ingest client's tests run against a real persistence service: its fixtures."""

from tests.persistence.conftest import persistence, persistence_factory

__all__ = ["persistence", "persistence_factory"]
