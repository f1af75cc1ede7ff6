#!/usr/bin/env python3
"""Checks an ONNX file that lowbit exported against ONNX itself and ONNX Runtime.

  check_export.py MODEL.onnx --data DIR --classes PRED.csv [--min-agreement 0.995] [--accuracy A --max-drop D]

Passes `onnx.checker.check_model(full_check=True)`, runs the model in ONNX Runtime (one thread) on
every test image of DIR (IDX files, as lowbit reads them) and compares its top-1 classes with
lowbit's (`lowbit predict --out PRED.csv`). Prints one JSON line; exits 1 when the agreement is
below --min-agreement or ORT's accuracy is more than --max-drop below --accuracy.
"""
import argparse
import gzip
import json
import pathlib
import sys

import numpy as np
import onnx
import onnxruntime as ort


def read_idx(folder, stem):
    for name in (stem, stem + ".gz"):
        path = pathlib.Path(folder) / name
        if path.exists():
            raw = (gzip.open if name.endswith(".gz") else open)(path, "rb").read()
            dims = raw[3]
            shape = [int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(dims)]
            return np.frombuffer(raw, np.uint8, offset=4 + 4 * dims).reshape(shape)
    raise SystemExit(f"check_export.py: no {stem} in {folder}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("model")
    p.add_argument("--data", required=True)
    p.add_argument("--classes", required=True)
    p.add_argument("--min-agreement", type=float, default=0.995)
    p.add_argument("--accuracy", type=float)
    p.add_argument("--max-drop", type=float, default=0.001)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--ort-optimization", choices=["all", "basic"], default="all",
                   help="basic: no fusion of QDQ groups into ORT's integer kernels")
    a = p.parse_args()

    onnx.checker.check_model(a.model, full_check=True)
    images = read_idx(a.data, "t10k-images-idx3-ubyte")
    labels = read_idx(a.data, "t10k-labels-idx1-ubyte").astype(np.int64)
    lowbit = np.loadtxt(a.classes, delimiter=",", skiprows=1, dtype=np.int64)[:, 1]

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.log_severity_level = 3
    if a.ort_optimization == "basic":
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    session = ort.InferenceSession(a.model, options, providers=["CPUExecutionProvider"])
    feed = session.get_inputs()[0]
    x = images if feed.type == "tensor(uint8)" else images.astype(np.float32) / 255.0
    x = x.reshape([len(images)] + [d if isinstance(d, int) else -1 for d in feed.shape[1:]]) if len(feed.shape) != 3 else x
    # The batches of `lowbit predict` (256): a dynamic layer's range is its batch's.
    classes = np.concatenate([session.run(None, {feed.name: x[i:i + a.batch]})[0].argmax(axis=1) for i in range(0, len(x), a.batch)])

    agreement = float((classes == lowbit).mean())
    accuracy = float((classes == labels).mean())
    ok = agreement >= a.min_agreement and (a.accuracy is None or accuracy >= a.accuracy - a.max_drop)
    print(json.dumps({"model": a.model, "ort_optimization": a.ort_optimization, "ort_accuracy": accuracy, "agreement_with_lowbit": agreement,
                      "lowbit_accuracy": float((lowbit == labels).mean()), "ok": ok}))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
