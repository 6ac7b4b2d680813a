#!/usr/bin/env bash
# Creates .venv/ in the repo root and installs the verified stack into it.
# Idempotent: a stamp holding the hash of this script, setup.py and the
# constraints makes a second run return in seconds without touching pip.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=.venv
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
STAMP=$VENV/.mmdet3d_vitis-installed
want=$(cat tools/setup_env.sh setup.py tools/constraints.txt | sha256sum | cut -d' ' -f1)

if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
  exit 0
fi

[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# Every install below is held to the versions verified together.
PIP="$VENV/bin/pip --disable-pip-version-check -q"
CONSTRAINTS="-c tools/constraints.txt"

# torch 2.13 needs setuptools >= 77; mmcv 2.1.0's setup.py imports
# pkg_resources, which setuptools 81 drops: hence the window.
$PIP install 'pip>=24' 'setuptools>=77,<81' wheel ninja
$PIP install $CONSTRAINTS numpy torch

# mmcv 2.1.0 has no wheel for torch 2.13: compile it with ops against the
# installed torch (~20 min on 2 cores, once; pip's wheel cache keeps it).
if ! "$VENV/bin/python" -c 'import mmcv, mmcv.ops; assert mmcv.__version__ == "2.1.0"' 2>/dev/null; then
  echo "Installing mmcv 2.1.0 with ops (compiled the first time, about 20 minutes)..."
  MMCV_WITH_OPS=1 MAX_JOBS=${MAX_JOBS:-2} $PIP install $CONSTRAINTS --no-build-isolation mmcv
fi

$PIP install $CONSTRAINTS -e '.[tests]'
"$VENV/bin/python" -c 'import mmcv.ops, mmdet3d, spconv.pytorch, brevitas, onnxruntime, mmdet3d_vitis' >/dev/null
echo "$want" > "$STAMP"
echo "Environment ready in $VENV"
