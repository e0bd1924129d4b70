"""Write the parameters table of helm/lnsync/README.md from the ``## @param`` comments in values.yaml.

usage: python scripts/helm_params_table.py [--check]

The table sits between the markers ``<!-- params:start -->`` and ``<!-- params:end -->``; with
``--check`` nothing is written and the exit code says whether the README is up to date
(tests/test_helm.py checks the same).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

CHART = Path(__file__).resolve().parent.parent / "helm" / "lnsync"
START, END = "<!-- params:start -->", "<!-- params:end -->"
_PARAM = re.compile(r"^\s*## @param (\S+) (.+)$")
_SECTION = re.compile(r"^\s*## @section (.+)$")


def params(values_text: str) -> list[tuple[str, str, str]]:
    """(section, dotted key, description) in file order."""
    out: list[tuple[str, str, str]] = []
    section = ""
    for line in values_text.splitlines():
        if m := _SECTION.match(line):
            section = m[1].strip()
        elif m := _PARAM.match(line):
            out.append((section, m[1], m[2].strip()))
    return out


def lookup(values: dict[str, Any], key: str) -> Any:
    node: Any = values
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _cell(value: Any) -> str:
    text = json.dumps(value, separators=(",", ":")) if not isinstance(value, str) else value
    if len(text) > 60:
        return "see values.yaml"
    return f"`{text}`" if text else '`""`'


def table(values_text: str) -> str:
    values = yaml.safe_load(values_text)
    lines: list[str] = []
    current = None
    for section, key, description in params(values_text):
        if section != current:
            lines += ["", f"### {section} parameters", "", "| Name | Description | Value |", "|---|---|---|"]
            current = section
        lines.append(f"| `{key}` | {description.replace('|', '/')} | {_cell(lookup(values, key))} |")
    return "\n".join(lines).strip() + "\n"


def updated_readme(readme: str, values_text: str) -> str:
    head, _, rest = readme.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table(values_text)}{END}{tail}"


def main(argv: list[str]) -> int:
    readme_path = CHART / "README.md"
    readme = readme_path.read_text()
    new = updated_readme(readme, (CHART / "values.yaml").read_text())
    if "--check" in argv:
        if new != readme:
            print("helm/lnsync/README.md parameters are stale: run python scripts/helm_params_table.py")
            return 1
        return 0
    readme_path.write_text(new)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
