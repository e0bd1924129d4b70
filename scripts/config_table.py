"""Write the configuration table of README.md from ``lnsync/config.py``.

usage: python scripts/config_table.py [--check]

One row per setting of :class:`lnsync.config.Settings`, in declaration order: its key, its default
(from the model) and its meaning (the ``#`` comment right above the field in config.py; a field
without one inherits its base class's). Settings every gRPC service has (``address``,
``metrics_listen``) get one row each. The table sits between ``<!-- config:start -->`` and
``<!-- config:end -->``; with ``--check`` nothing is written and the exit code says whether the
README is up to date (tests/test_config.py checks the same).
"""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from lnsync import config  # noqa: E402 - after the path fix

START, END = "<!-- config:start -->", "<!-- config:end -->"
SOURCE = ROOT / "lnsync" / "config.py"
# Defaults that depend on the machine or on another setting, in words.
_DEFAULT_TEXT = {
    "data_dir": "`$XDG_DATA_HOME/lnsync` (root: `/var/lib/lnsync`)",
}
# Fields of ServiceEndpoint that every gRPC service section shares: one row each, not one per section.
_SHARED = ("address", "metrics_listen")


def field_comments(source: str) -> dict[tuple[str, str], str]:
    """(class name, field name) -> the comment lines directly above the field, joined."""
    lines = source.splitlines()
    out: dict[tuple[str, str], str] = {}
    for node in ast.parse(source).body:
        if not isinstance(node, ast.ClassDef):
            continue
        for item in node.body:
            if isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name):
                text: list[str] = []
                i = item.lineno - 2
                while i >= 0 and lines[i].strip().startswith("#"):
                    text.insert(0, lines[i].strip().lstrip("#").strip())
                    i -= 1
                if text:
                    out[(node.name, item.target.id)] = " ".join(text)
    return out


def _meaning(model: type[BaseModel], name: str, comments: dict[tuple[str, str], str]) -> str:
    for cls in model.__mro__:
        if (cls.__name__, name) in comments:
            return comments[(cls.__name__, name)]
    return ""


def _default(name: str, field: Any) -> str:
    if name in _DEFAULT_TEXT:
        return _DEFAULT_TEXT[name]
    value = field.get_default(call_default_factory=True)
    if isinstance(value, str):
        return f"`{value}`" if value else "empty"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return f"`{json.dumps(value)}`"


def _row(key: str, default: str, meaning: str) -> str:
    return f"| `{key}` | {default} | {meaning.replace('|', '/')} |"


def table(source: str | None = None) -> str:
    comments = field_comments(source if source is not None else SOURCE.read_text())
    rows = ["| setting | default | meaning |", "|---|---|---|"]
    endpoints: list[str] = []
    for name, field in config.Settings.model_fields.items():
        model = field.annotation
        if isinstance(model, type) and issubclass(model, BaseModel):
            is_endpoint = issubclass(model, config.ServiceEndpoint)
            if is_endpoint:
                endpoints.append(name)
            for sub, subfield in model.model_fields.items():
                if is_endpoint and sub in _SHARED:
                    continue
                rows.append(_row(f"{name}.{sub}", _default(sub, subfield), _meaning(model, sub, comments)))
        else:
            rows.append(_row(name, _default(name, field), _meaning(config.Settings, name, comments)))
    for sub in _SHARED:
        subfield = config.ServiceEndpoint.model_fields[sub]
        meaning = _meaning(config.ServiceEndpoint, sub, comments)
        meaning += f" (<service>: {', '.join(endpoints)})"
        rows.append(_row(f"<service>.{sub}", _default(sub, subfield), meaning))
    return "\n".join(rows) + "\n"


def updated_readme(readme: str, source: str | None = None) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table(source)}{END}{tail}"


def main(argv: list[str]) -> int:
    path = ROOT / "README.md"
    readme = path.read_text()
    new = updated_readme(readme)
    if "--check" in argv:
        if new != readme:
            print("README.md configuration table is stale: run python scripts/config_table.py")
            return 1
        return 0
    path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
