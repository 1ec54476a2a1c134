#!/usr/bin/env bash
# Regenerate protos/dcfs_pb2*.py{,i} from protos/dcfs.proto.
# Usage: scripts/gen_protos.sh [OUTDIR]   (default: the repo itself)
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-.}"
mkdir -p "$out/protos"
py="${PYTHON:-$(command -v python)}"   # the venv's python: protoc-gen-mypy lives beside it
PATH="$(dirname "$py"):$PATH" "$py" -m grpc_tools.protoc -I. \
    --python_out="$out" --grpc_python_out="$out" \
    --mypy_out="$out" --mypy_grpc_out="$out" protos/dcfs.proto 2>/dev/null
