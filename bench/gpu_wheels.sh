#!/usr/bin/env bash
# Wheels of the project's dependencies but torch and torchvision (which a GPU machine has), for a
# machine without a package index: run here, where pip reaches one, then carry build/gpu-wheels
# with the repository (the device tool's `carry`; about 50 MB) and bench/gpu_check.sh installs
# from it what that machine lacks.
#
#   bash bench/gpu_wheels.sh [PYTHON_VERSION]     # default: this Python's, e.g. 3.11
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
VERSION=${1:-$($PY -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')}
OUT=build/gpu-wheels
rm -rf "$OUT" && mkdir -p "$OUT"
# What the check imports (the CLI, the scheduler, the worker, the tests marked gpu): not the
# report's pandas and matplotlib, not statsmodels (compare and ablation), not grad-cam (opencv).
# numpy and pillow come with the machine's torch and torchvision: removed after the download, so
# the folder stays under the 64 MB a device run carries.
"$PY" -m pip download --quiet --dest "$OUT" --only-binary=:all: --python-version "$VERSION" \
    "textual>=1.0" "textual-plotext>=1.0" "rich>=13" "sqlalchemy>=2.0" "alembic>=1.13" "scikit-learn>=1.4" "scipy>=1.15" \
    "psutil>=5.9" "filelock>=3.12" "nvidia-ml-py>=12.535" "pytest>=8" "pytest-asyncio>=0.23"
rm -f "$OUT"/numpy-*.whl "$OUT"/pillow-*.whl
du -sh "$OUT"
