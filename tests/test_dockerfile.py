"""The container image, checked without a Docker engine (none runs here): the Dockerfile is parsed
with dockerfile-parse and held to the rules the chart relies on, and the files it copies are shown
to build a complete lnsync package."""

from __future__ import annotations

import fnmatch
import json
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from lnsync.commands.serve import SERVICES
from tests.helm_tools import ROOT

SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|DATABASE_URL", re.I)


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def _final_stage(parser: DockerfileParser) -> list[dict[str, str]]:
    structure = parser.structure
    last_from = max(i for i, ins in enumerate(structure) if ins["instruction"] == "FROM")
    return structure[last_from:]


def test_base_image_is_slim_python_311(dockerfile):
    first_from = next(i for i, ins in enumerate(dockerfile.structure) if ins["instruction"] == "FROM")
    global_args = [ins["value"] for ins in dockerfile.structure[:first_from] if ins["instruction"] == "ARG"]
    args = dict(a.split("=", 1) for a in global_args)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS build", "${PYTHON_IMAGE}"]  # multi-stage, same base


def test_runs_as_numeric_non_root_user(dockerfile):
    users = [ins["value"] for ins in _final_stage(dockerfile) if ins["instruction"] == "USER"]
    assert len(users) == 1
    uid, _, gid = users[0].partition(":")
    assert uid.isdigit()
    assert int(uid) > 0
    assert gid.isdigit()
    assert int(gid) > 0
    # The chart's default user is the image's.
    values = (ROOT / "helm" / "lnsync" / "values.yaml").read_text()
    assert f"runAsUser: {uid}\n" in values


def test_entrypoint_is_lnsync_and_no_healthcheck(dockerfile):
    final = _final_stage(dockerfile)
    entrypoints = [ins["value"] for ins in final if ins["instruction"] == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["lnsync"]]  # exec form, so signals reach lnsync
    assert not [ins for ins in dockerfile.structure if ins["instruction"] == "HEALTHCHECK"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lnsync"] == "lnsync.cli:main"


def test_writes_only_under_tmp(dockerfile):
    env = dockerfile.envs  # the final stage's environment
    for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        assert env[key] == "/tmp" or env[key].startswith("/tmp/"), key
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/lnsync/bin:")
    workdirs = [ins["value"] for ins in _final_stage(dockerfile) if ins["instruction"] == "WORKDIR"]
    assert workdirs == ["/tmp"]


def test_no_secrets_baked_in(dockerfile):
    for ins in dockerfile.structure:
        if ins["instruction"] in ("ENV", "ARG", "LABEL"):
            names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_.]*)=", ins["value"])
            assert names, ins
            assert not [n for n in names if SECRETISH.search(n)], ins["content"]
        if ins["instruction"] in ("COPY", "ADD"):
            assert not re.search(r"\.env\b|\.pem\b|\.key\b|id_rsa|kubeconfig", ins["value"]), ins["content"]
        assert ins["instruction"] != "ADD", "use COPY: ADD fetches URLs and unpacks archives"


def _ignored(path: str, rules: list[str]) -> bool:
    """Docker's .dockerignore semantics for the patterns used here: the last matching rule wins,
    a rule on a directory covers everything below it."""
    ignored = False
    for rule in rules:
        negate = rule.startswith("!")
        pattern = rule.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        if any(fnmatch.fnmatchcase(p, pattern) for p in prefixes) or (
            pattern.startswith("**/") and fnmatch.fnmatchcase(parts[-1], pattern[3:])
        ):
            ignored = not negate
    return ignored


def _copied_sources(dockerfile) -> list[str]:
    sources = []
    for ins in dockerfile.structure:
        if ins["instruction"] == "COPY" and "--from=" not in ins["value"]:
            *src, _dest = ins["value"].split()
            sources += src
    return sources


def test_build_context_holds_what_the_image_copies(dockerfile):
    rules = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = _copied_sources(dockerfile)
    assert set(sources) == {"pyproject.toml", "README.md", "lnsync", "services"}
    for src in sources:
        assert (ROOT / src).exists(), src
        assert not _ignored(src, rules), f"{src} is excluded by .dockerignore"
    # Everything else stays out of the context (tests, .venv with its 60 MB helm, .git, node_modules).
    for path in (
        ".venv/bin/python",
        "tests/test_helm.py",
        ".git/HEAD",
        "tools/ldk/package.json",
        "helm/lnsync",
    ):
        assert _ignored(path, rules), path
    assert _ignored("lnsync/__pycache__/cli.cpython-311.pyc", rules)
    assert not _ignored("lnsync/schema/001_graph.sql", rules)


@pytest.mark.slow
def test_copied_files_build_a_complete_package(dockerfile, tmp_path):
    """Build a wheel from exactly the files the Dockerfile copies: every service the image can
    `lnsync serve` and the SQL migrations must be inside."""
    context = tmp_path / "src"
    context.mkdir()
    for src in _copied_sources(dockerfile):
        if (ROOT / src).is_dir():
            shutil.copytree(ROOT / src, context / src, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / src, context / src)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            ".",
        ],
        cwd=context,
        check=True,
        capture_output=True,
        timeout=120,
    )
    (wheel,) = tmp_path.glob("lnsync-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in SERVICES.values():
        assert module.replace(".", "/") + ".py" in names, module
    assert "lnsync/commands/healthcheck.py" in names
    assert "lnsync/schema/001_graph.sql" in names
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "lnsync = lnsync.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_pip_pin_matches_the_makefile(dockerfile):
    makefile = (ROOT / "Makefile").read_text()
    pins = set(re.findall(r'"pip==([\d.]+)"', makefile))
    assert pins
    assert set(re.findall(r'"pip==([\d.]+)"', Path(ROOT / "Dockerfile").read_text())) == pins
