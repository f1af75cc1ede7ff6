#!/usr/bin/env bash
# Makes the Python environment of the ONNX tests (the yardsticks: PyPI's onnx and onnxruntime,
# pinned) and of tests/onnx/make_models.py (which also needs Debian's torch: install-deps.sh
# --bench): a virtual environment on Debian's Python that sees Debian's numpy and torch (system
# site packages; PyPI's torch would bring GBs of CUDA).
# numpy stays below 2 so that Debian's torch 1.13 keeps working.
#   scripts/onnx-venv.sh DIR            creates DIR (once; later runs only check it)
#   PY=$(scripts/onnx-venv.sh build/onnx-venv | tail -1)    the last line is DIR's python
# Needs python3-venv and python3-numpy (scripts/install-deps.sh installs them).
set -euo pipefail
if [[ $# -ne 1 ]]; then
  echo "usage: $0 DIR" >&2
  exit 2
fi
dir=$1
requirements=(onnx==1.23.2 onnxruntime==1.32.0 "numpy<2")
stamp="$dir/lowbit-requirements.txt"  # written last: the environment is complete when it matches

if [[ ! -f "$stamp" || "$(cat "$stamp")" != "${requirements[*]}" ]]; then
  /usr/bin/python3 -c 'import numpy, venv, ensurepip' 2>/dev/null || {
    echo "onnx-venv: Debian's python3 lacks numpy or venv: run scripts/install-deps.sh" >&2
    exit 1
  }
  echo "onnx-venv: creating $dir with ${requirements[*]}"
  /usr/bin/python3 -m venv --system-site-packages "$dir"
  "$dir/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}"
  "$dir/bin/python" -c 'import onnx, onnxruntime, onnxruntime.quantization'
  echo "${requirements[*]}" >"$stamp"
fi
# An absolute path, so that callers can use it from any directory.
echo "$(cd "$dir" && pwd)/bin/python"
