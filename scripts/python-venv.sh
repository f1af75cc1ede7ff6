#!/usr/bin/env bash
# Makes a fresh virtual environment for the Python package's tests (removing DIR first): Debian's
# Python with its system packages (numpy, pytest, scikit-learn, torch), plus PyPI's onnx and
# onnxruntime (the yardsticks of the ONNX tests and examples; pip's cache makes them quick after
# the first time). The package itself is installed by the caller (`pip install .`).
#   scripts/python-venv.sh DIR
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
/usr/bin/python3 -c 'import numpy, venv, ensurepip, pytest' 2>/dev/null || {
  echo "python-venv: Debian's python3 lacks numpy, venv or pytest: run scripts/install-deps.sh" >&2
  exit 1
}
rm -rf "$dir"
/usr/bin/python3 -m venv --system-site-packages "$dir"
"$dir/bin/python" -m pip install -q --disable-pip-version-check onnx==1.23.2 onnxruntime==1.32.0 "numpy<2"
