#!/usr/bin/env bash
# The test command (README, .ci/run): installs missing Debian packages, builds, runs the whole
# suite (unit, end-to-end on Fashion-MNIST, CLI, find_package consumer), then builds the unit
# tests again under AddressSanitizer + UndefinedBehaviorSanitizer and runs them, then fuzzes the
# ONNX importer (libFuzzer, clang, ASan + UBSan) for LOWBIT_FUZZ_SECONDS (default 60) after its
# regression corpus.
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

echo "== fuzzing the ONNX importer (libFuzzer with ASan + UBSan, ${LOWBIT_FUZZ_SECONDS:-60} s)"
cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_COMPILER=clang++ -DLOWBIT_FUZZ=ON \
  -DLOWBIT_SANITIZE=address,undefined -DLOWBIT_BUILD_TOOLS=OFF -DLOWBIT_BUILD_TESTS=OFF >/dev/null
cmake --build build/fuzz -j "$jobs" --target lowbit_fuzz_onnx_import
tests/fuzz/run_fuzzers.sh build/fuzz "${LOWBIT_FUZZ_SECONDS:-60}"
