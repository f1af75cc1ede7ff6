#!/usr/bin/env bash
# The test command (README, .ci/run): installs missing Debian packages, builds, runs the whole
# suite (unit, end-to-end on Fashion-MNIST, CLI, find_package consumer), then builds the unit
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer and runs them.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)

# PyPI's onnx and onnxruntime (with Debian's torch) in a virtual environment: the yardsticks of the
# ONNX export tests.
onnx_python=$(scripts/onnx-venv.sh build/onnx-venv | tail -n 1)

echo "== release build and full test suite"
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_ONNX_PYTHON="$onnx_python" >/dev/null
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DLOWBIT_BUILD_TESTS=ON \
  -DLOWBIT_BUILD_TOOLS=OFF -DLOWBIT_SANITIZE=address,undefined >/dev/null
cmake --build build/sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize -L unit --output-on-failure -j "$jobs"
