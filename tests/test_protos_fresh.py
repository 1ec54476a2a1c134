"""The committed protobuf modules are what protos/dcfs.proto generates."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ["dcfs_pb2.py", "dcfs_pb2.pyi", "dcfs_pb2_grpc.py", "dcfs_pb2_grpc.pyi"]


def test_generated_modules_are_fresh(tmp_path: Path) -> None:
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "gen_protos.sh"), str(tmp_path)],
        check=True,
        capture_output=True,
        env={**os.environ, "PYTHON": sys.executable},
    )
    for name in GENERATED:
        fresh = (tmp_path / "protos" / name).read_text()
        committed = (ROOT / "protos" / name).read_text()
        assert fresh == committed, f"protos/{name} is stale: run scripts/gen_protos.sh"
