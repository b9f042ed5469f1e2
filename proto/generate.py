"""Generates the Python gRPC code for asyncrl.v1 from the .proto files (never edit the output)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grpc_tools import protoc

PROTO_ROOT = Path(__file__).resolve().parent


def generate(out_dir: Path = PROTO_ROOT) -> list[Path]:
    """Compiles every proto/asyncrl/**/*.proto into out_dir; returns the files written."""
    sources = sorted(PROTO_ROOT.glob("asyncrl/**/*.proto"))
    include = Path(protoc.__file__).resolve().parent / "_proto"
    args = [
        "grpc_tools.protoc",
        f"-I{PROTO_ROOT}",
        f"-I{include}",
        f"--python_out={out_dir}",
        f"--pyi_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        *(str(s) for s in sources),
    ]
    if protoc.main(args) != 0:
        raise RuntimeError(f"protoc failed on {', '.join(map(str, sources))}")
    return sorted(p for s in sources for p in out_dir.glob(f"{s.parent.relative_to(PROTO_ROOT)}/{s.stem}_pb2*"))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=PROTO_ROOT, help="output root (default: proto/)")
    for path in generate(parser.parse_args().out):
        print(path, file=sys.stderr)
