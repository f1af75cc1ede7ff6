#!/usr/bin/env bash
# The test command (README, .ci/run): installs missing Debian packages, builds, runs the whole
# suite (unit, end-to-end on Fashion-MNIST, CLI, find_package consumer), then installs the Python
# package with `pip install .` into a fresh virtual environment and runs its pytest suite, then
# builds the unit tests again under AddressSanitizer + UndefinedBehaviorSanitizer and runs them,
# then the thread-safety tests under ThreadSanitizer, then fuzzes every loader (libFuzzer, clang,
# ASan + UBSan: the model file and checkpoints, IDX, model descriptions, ranges, plans, ONNX) for
# LOWBIT_FUZZ_SECONDS in all (default 180, shared by the targets) after their regression corpora.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
jobs=$(nproc)

# PyPI's onnx and onnxruntime (with Debian's torch) in a virtual environment: the yardsticks of the
# ONNX export tests.
onnx_python=$(scripts/onnx-venv.sh build/onnx-venv | tail -n 1)

echo "== release build and full test suite"
# ccache: the Python package's build (pip install . below) compiles the library with the same flags
# and takes its objects from the cache instead of compiling them a second time.
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_ONNX_PYTHON="$onnx_python" \
  -DCMAKE_CXX_COMPILER_LAUNCHER=ccache >/dev/null
cmake --build build/release -j "$jobs"
ctest --test-dir build/release --output-on-failure -j "$jobs"

echo "== Python package: pip install . in a fresh virtual environment, then its pytest suite"
scripts/python-venv.sh build/py-venv
CMAKE_CXX_COMPILER_LAUNCHER=ccache build/py-venv/bin/python -m pip install -q --disable-pip-version-check .
(cd build && py-venv/bin/python -c 'import lowbit; print("installed lowbit", lowbit.__version__, "from", lowbit.__file__)')
LOWBIT_CLI="$PWD/build/release/tools/lowbit/lowbit" build/py-venv/bin/python -m pytest -q -p no:cacheprovider tests/python

# The sanitizer builds keep line tables only (-g1): stack traces still name file and line, and the
# builds skip full debug information (faster to compile and link on a CI machine without a cache).
debug_flags="-O2 -g1 -DNDEBUG"

echo "== unit tests under AddressSanitizer + UndefinedBehaviorSanitizer"
cmake -S . -B build/sanitize -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$debug_flags" -DLOWBIT_BUILD_TESTS=ON \
  -DLOWBIT_BUILD_TOOLS=OFF -DLOWBIT_WITH_MPI=OFF -DLOWBIT_SANITIZE=address,undefined >/dev/null
cmake --build build/sanitize -j "$jobs"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build/sanitize -L unit --output-on-failure -j "$jobs"

echo "== the thread-safety tests under ThreadSanitizer"
# Only what they need: the library without ONNX, and one test program. One kernel thread per call
# (LOWBIT_NUM_THREADS=1): libgomp is not built for TSan, so its teams would only add false reports.
cmake -S . -B build/tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$debug_flags" -DLOWBIT_BUILD_TESTS=ON -DLOWBIT_BUILD_TOOLS=OFF \
  -DLOWBIT_ONNX=OFF -DLOWBIT_WITH_MPI=OFF -DLOWBIT_SANITIZE=thread >/dev/null
cmake --build build/tsan -j "$jobs" --target lowbit_thread_tests
LOWBIT_NUM_THREADS=1 TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1 build/tsan/tests/lowbit_thread_tests

echo "== fuzzing every loader (libFuzzer with ASan + UBSan, ${LOWBIT_FUZZ_SECONDS:-180} s in all)"
cmake -S . -B build/fuzz -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="$debug_flags" -DCMAKE_CXX_COMPILER=clang++ -DLOWBIT_FUZZ=ON \
  -DLOWBIT_SANITIZE=address,undefined -DLOWBIT_BUILD_TOOLS=OFF -DLOWBIT_BUILD_TESTS=OFF -DLOWBIT_WITH_MPI=OFF >/dev/null
cmake --build build/fuzz -j "$jobs" --target lowbit_fuzzers
tests/fuzz/run_fuzzers.sh build/fuzz "${LOWBIT_FUZZ_SECONDS:-180}"
