"""Small helpers shared by CLI commands."""

from __future__ import annotations

from lnsync.config import ConfigError, Settings


def require_database_url(settings: Settings) -> str:
    if not settings.database_url:
        raise ConfigError(
            "database_url is not set: give --database-url or LNSYNC_DATABASE_URL "
            "(`lnsync up` starts an embedded PostgreSQL and sets it for its services)"
        )
    return settings.database_url
