#!/usr/bin/env python3
"""Generate the Python gRPC stubs for shared/proto into shared/proto_generated.

The one way stubs are made: `python scripts/gen-proto.py [--out DIR]`.
tests/unit/test_proto_stubs.py runs it into a temporary directory and fails
when the committed stubs differ, so edit the .proto files, then run this.
"""

from __future__ import annotations

import argparse
import sys
from importlib.resources import files
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "shared" / "proto"
DEFAULT_OUT = ROOT / "shared" / "proto_generated"


def proto_files() -> list[Path]:
    return sorted(PROTO_DIR.rglob("*.proto"))


def generate(out: Path) -> list[Path]:
    """Run protoc (from grpcio-tools) over every .proto; return the files written."""
    from grpc_tools import protoc  # imported here so --help works without grpcio-tools

    include = str(files("grpc_tools") / "_proto")
    protos = [str(p.relative_to(PROTO_DIR)) for p in proto_files()]
    out.mkdir(parents=True, exist_ok=True)
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_DIR}",
        f"-I{include}",
        f"--python_out={out}",
        f"--pyi_out={out}",
        f"--grpc_python_out={out}",
        *protos,
    ]
    if protoc.main(args) != 0:
        raise SystemExit("protoc failed (see the message above)")
    # Every directory on the way to a stub is a regular package.
    written: list[Path] = []
    for stub in sorted(out.rglob("*_pb2*.py*")):
        written.append(stub)
        parent = stub.parent
        while parent != out:
            init = parent / "__init__.py"
            if not init.exists():
                init.write_text("")
            if init not in written:
                written.append(init)
            parent = parent.parent
    return sorted(written)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="output directory")
    args = parser.parse_args(argv)
    for path in generate(args.out):
        print(path.relative_to(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
