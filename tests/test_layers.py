"""The module map holds (docs/architecture.md, "Where does X live"): the core library imports no
service; no service package imports another's modules except through the seams listed here; and no
import cycle exists (function-local imports count: they are how cycles hide). Read from the source
with ``ast``; nothing is imported."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import ROOT

# (importing service package, imported module): the deliberate seams between service packages.
SEAMS: dict[tuple[str, str], str] = {
    ("observer", "services.downloader.downloader"): "the random peer set runs downloaders in-process",
    ("observer", "services.downloader.forward"): "each with its own persistence sink",
    ("observer", "services.downloader.options"): "and the downloader's options",
    ("observer", "services.downloader.sink"): "behind the sink interface",
    ("persistence", "services.observer.job"): "the observer's aggregation runs inside persistence",
    ("persistence", "services.observer.queries"): "retention keeps what the observer has not folded",
    (
        "peer_controller",
        "services.observer.random_peers",
    ): "the controller keeps the random set",
}


def _modules(top: str) -> dict[str, Path]:
    out = {}
    for path in sorted((ROOT / top).rglob("*.py")):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


def _imports(module: str, path: Path) -> set[str]:
    """Modules ``module`` imports anywhere in it, function-local imports included (``from a import
    b`` counts as ``a`` and ``a.b``)."""
    found: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                kept = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*kept, base]).strip(".")
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_core_library_imports_no_service() -> None:
    """Only the CLI (lnsync/commands: it starts services) may reach into services/."""
    bad = []
    for module, path in _modules("lnsync").items():
        if module.startswith("lnsync.commands"):
            continue
        bad += [(module, m) for m in _imports(module, path) if m.startswith("services")]
    assert not bad, bad


def test_services_import_each_other_only_through_seams() -> None:
    used: set[tuple[str, str]] = set()
    bad = []
    for module, path in _modules("services").items():
        package = module.split(".")[1] if module.count(".") else ""
        for imported in _imports(module, path):
            parts = imported.split(".")
            if parts[0] == "lnsync" and len(parts) > 1 and parts[1] == "commands":
                bad.append((module, imported))  # CLI helpers are not for services
            if parts[0] != "services" or len(parts) < 3 or parts[1] == package:
                continue
            if (package, imported) in SEAMS:
                used.add((package, imported))
            elif not any(imported.startswith(seam + ".") for (p, seam) in SEAMS if p == package):
                bad.append((module, imported))
    assert not bad, f"cross-service imports outside the seams (tests/test_layers.py SEAMS): {bad}"
    assert used == set(SEAMS), f"seams no longer used: {set(SEAMS) - used}"


def test_seams_are_documented() -> None:
    doc = (ROOT / "docs" / "architecture.md").read_text()
    for _package, module in SEAMS:
        assert f"`{module.replace('.', '/')}.py`" in doc, module


def test_no_import_cycles() -> None:
    modules = {**_modules("lnsync"), **_modules("services")}
    graph = {
        name: {m for m in _imports(name, path) if m in modules and m != name}
        for name, path in modules.items()
    }
    # A package's __init__ importing its own submodules is not a cycle worth reporting.
    for name in graph:
        graph[name] = {m for m in graph[name] if not name.startswith(m + ".")}
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    assert not cycles, cycles


def test_the_module_map_names_every_core_module() -> None:
    """docs/architecture.md, "Where things live", names every module and package of lnsync/, so
    that it stays the map of the tree (services are one rule there: ``services/<name>/``)."""
    text = (ROOT / "docs" / "architecture.md").read_text()
    section = text.split("## Where things live")[1].split("\n## ")[0]
    entries = [
        p.name + ("/" if p.is_dir() else "")
        for p in sorted((ROOT / "lnsync").iterdir())
        if not p.name.startswith(("_", ".")) and (p.is_dir() or p.suffix == ".py")
    ]
    missing = [e for e in entries if e not in section]
    assert not missing, f"lnsync/ entries the module map does not name: {missing}"
