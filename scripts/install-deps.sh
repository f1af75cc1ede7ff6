#!/usr/bin/env bash
# Installs the Debian packages lowbit needs, only those that are missing.
#   scripts/install-deps.sh          build + test + data (+ Python: pytest, scikit-learn, torch; Chromium)
#   scripts/install-deps.sh --bench  also the benchmark peers (OpenBLAS, oneDNN, Google Benchmark)
set -euo pipefail
packages=(cmake ninja-build g++ pkg-config zlib1g-dev libzip-dev libcli11-dev nlohmann-json3-dev libfmt-dev
          libgtest-dev libgmock-dev dataset-fashion-mnist jq bsdextrautils python3
          libonnx-dev libprotobuf-dev protobuf-compiler libonnx-testdata clang libclang-rt-14-dev
          python3-venv python3-dev python3-numpy python3-pytest python3-sklearn python3-torch ccache
          chromium openmpi-bin libopenmpi-dev)  # chromium: the sweep report's test renders it headless; Open MPI: mpirun lowbit
if [[ "${1:-}" == "--bench" ]]; then
  packages+=(python3-torch libbenchmark-dev libopenblas-dev libdnnl-dev python3-torch python3-numpy time)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
  echo "install-deps: installing ${missing[*]}"
  if [[ $(id -u) -ne 0 ]]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
