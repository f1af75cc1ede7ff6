#!/usr/bin/env python3
"""ONNX files run by lowbit (imported: `lowbit compare --model F.onnx`) and by ONNX Runtime, the same
file in both, batch-256 throughput at the same thread counts, in one run (--rounds rounds,
interleaved, best kept). The files are tests/data/onnx's: PyTorch's float exports and ONNX
Runtime's own quantize_static (QDQ and QOperator) and quantize_dynamic models, which lowbit runs on its
integer layers.

    PY=$(scripts/onnx-venv.sh build/onnx-venv | tail -1)
    $PY bench/onnx_import_vs_onnxruntime.py --lowbit build/release/tools/lowbit/lowbit
"""
import argparse
import json
import os
import subprocess
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from int8_vs_onnxruntime import ort_session, throughput  # noqa: E402  (best of 15 x 20 batches, as lowbit times itself)
from lbm import dataset_file, read_idx  # noqa: E402


def lowbit_speed(binary, model, data, threads):
    out = subprocess.run([binary, "compare", "--model", model, "--against", model, "--data", data, "--threads", str(threads),
                          "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["model_batch256_images_per_second"]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowbit", default="build/release/tools/lowbit/lowbit")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--models", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "onnx"))
    p.add_argument("--files", default="mlp_op13,mlp_qdq,mlp_qop,mlp_dynamic,cnn_op13,cnn_qdq,cnn_qop,cnn_dynamic")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    images = read_idx(dataset_file(args.data, "t10k-images-idx3-ubyte"))
    batch = (images[:256].astype(np.float32) / 255.0).reshape(256, 1, 28, 28)
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        best = {}
        for _ in range(args.rounds):
            for f in args.files.split(","):
                path = os.path.join(args.models, f + ".onnx")
                ort_ips = throughput(ort_session(path, threads), batch)
                lowbit_ips = lowbit_speed(args.lowbit, path, args.data, threads)
                best[(f, "ort")] = max(best.get((f, "ort"), 0), ort_ips)
                best[(f, "lowbit")] = max(best.get((f, "lowbit"), 0), lowbit_ips)
        rows += [(f, threads, best[(f, "lowbit")], best[(f, "ort")]) for f in args.files.split(",")]
    import onnxruntime
    print(f"\nbatch-256 inference of the same ONNX file, ONNX Runtime {onnxruntime.__version__}")
    print("| file | threads | lowbit images/s | ONNX Runtime images/s | lowbit / ORT |")
    print("|---|---|---|---|---|")
    for f, threads, ours, theirs in rows:
        print(f"| {f} | {threads} | {ours / 1e3:.1f} k | {theirs / 1e3:.1f} k | {ours / theirs:.2f}x |")


if __name__ == "__main__":
    main()
