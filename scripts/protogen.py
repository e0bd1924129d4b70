"""Regenerate the gRPC/protobuf Python code in lnsync/v1/ from protos/ (run by `make proto`).

The generated files are checked in so that a runtime install needs no code generator;
tests/test_protos.py regenerates them into a temporary directory and fails if they differ.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"
PACKAGE = Path("lnsync") / "v1"
INIT = '"""Generated gRPC contracts (lnsync.v1). Do not edit: run `make proto`."""\n'


def generate(out_root: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over every .proto; return the generated files."""
    from grpc_tools import protoc  # dev dependency: only needed to regenerate

    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    include = Path(protoc.__file__).parent / "_proto"
    args = [
        "protoc",
        f"-I{PROTOS}",
        f"-I{include}",
        f"--python_out={out_root}",
        f"--pyi_out={out_root}",
        f"--grpc_python_out={out_root}",
        *sources,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed")
    (out_root / PACKAGE).mkdir(parents=True, exist_ok=True)
    (out_root / PACKAGE / "__init__.py").write_text(INIT)
    return sorted((out_root / PACKAGE).iterdir())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--check", action="store_true", help="fail if the checked-in code is stale")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generated = generate(Path(tmp))
        target = ROOT / PACKAGE
        stale = [
            p.name
            for p in generated
            if not (target / p.name).exists() or (target / p.name).read_bytes() != p.read_bytes()
        ]
        if args.check:
            if stale:
                print(f"stale generated code: {', '.join(stale)} (run `make proto`)", file=sys.stderr)
                return 1
            return 0
        target.mkdir(parents=True, exist_ok=True)
        for old in target.glob("*_pb2*.py*"):
            old.unlink()
        for p in generated:
            shutil.copyfile(p, target / p.name)
        print(f"generated {len(generated)} files in {target.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
