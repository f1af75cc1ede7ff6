#!/usr/bin/env bash
# Runs every benchmark of the README back to back on this machine and keeps the outputs in
# out/bench/. Needs an idle machine: other work on the two cores distorts every figure.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --bench
python3 -c "import onnxruntime, onnx" 2>/dev/null || pip install -q onnxruntime onnx numpy
cmake -S . -B build/bench -G Ninja -DCMAKE_BUILD_TYPE=Release -DLOWBIT_BUILD_BENCH=ON -DLOWBIT_BUILD_TESTS=OFF >/dev/null
cmake --build build/bench
lowbit=build/bench/tools/lowbit/lowbit
out=out/bench
mkdir -p "$out"
/usr/bin/python3 bench/reference_vs_pytorch.py --lowbit "$lowbit" --seeds 0,1,2 --threads 2 --json "$out/pytorch.json" | tee "$out/pytorch.txt"
python3 bench/gemm_ratios.py build/bench/bench/lowbit_bench_gemm --benchmark_repetitions=3 | tee "$out/gemm.txt"
python3 bench/qgemm_ratios.py build/bench/bench/lowbit_bench_qgemm | tee "$out/qgemm.txt"
python3 bench/conv_ratios.py build/bench/bench/lowbit_bench_conv --benchmark_repetitions=3 | tee "$out/conv.txt"
"$lowbit" train --seed 0 --threads 2 --out "$out/fp32.lbm" >/dev/null
python3 bench/int8_vs_onnxruntime.py --lowbit "$lowbit" --model "$out/fp32.lbm" | tee "$out/onnxruntime.txt"
python3 bench/onnx_import_vs_onnxruntime.py --lowbit "$lowbit" | tee "$out/onnx_import.txt"
bench/learn_epoch_cost.sh "$lowbit" | tee "$out/learn_epoch_cost.txt"
/usr/bin/python3 bench/cnn_vs_pytorch.py --lowbit "$lowbit" --arch examples/models/cnn-teacher.json --epochs 2 | tee "$out/cnn_pytorch.txt"
scripts/python-venv.sh build/bench-py-venv >/dev/null
CMAKE_CXX_COMPILER_LAUNCHER=ccache build/bench-py-venv/bin/python -m pip install -q --disable-pip-version-check .
build/bench-py-venv/bin/python bench/python_overhead.py --threads 1 | tee "$out/python_overhead.txt"
