#!/usr/bin/env python3
"""Batch-256 inference of the reference MLP: lowbit fp32 / int8 (static, dynamic) / 4-bit against
ONNX Runtime fp32 / int8 dynamic (quantize_dynamic) / int8 static (quantize_static, QDQ) on the
same trained weights, at the same thread counts, in one run (each variant measured --rounds times,
interleaved, best kept). Prints images/s, ratios and accuracy.

    pip install onnxruntime onnx numpy
    python3 bench/int8_vs_onnxruntime.py --lowbit build/release/tools/lowbit/lowbit --model out/reference/reference-mlp-seed0.lbm
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbm import dataset_file, read_idx, read_lbm  # noqa: E402


def load(data_dir, name):
    return read_idx(dataset_file(data_dir, name))


def onnx_mlp(graph, tensors, path):
    """The float lowbit MLP (its input scaling, Flatten, Dense..., Softmax) as an ONNX model with
    Gemm(transB=1). A model that takes the image bytes (u8) scales them with a Constant and a
    DequantizeLinear; ONNX Runtime's model then does the same, so both compute bytes -> classes."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []
    for node in graph["nodes"]:
        if node["op"] == "Constant":
            value = np.array(node["attributes"]["value_float"], dtype=np.float32)
            inits.append(numpy_helper.from_array(value, node["outputs"][0]))
        elif node["op"] == "DequantizeLinear":
            nodes.append(helper.make_node("DequantizeLinear", node["inputs"], node["outputs"]))
        elif node["op"] == "Flatten":
            nodes.append(helper.make_node("Flatten", node["inputs"], node["outputs"], axis=1))
        elif node["op"] == "Dense":
            for name in node["inputs"][1:]:
                inits.append(numpy_helper.from_array(tensors[name].astype(np.float32), name))
            if node["attributes"].get("activation") == "relu":
                nodes.append(helper.make_node("Gemm", node["inputs"], [node["name"] + "_pre"], transB=1))
                nodes.append(helper.make_node("Relu", [node["name"] + "_pre"], node["outputs"]))
            else:
                nodes.append(helper.make_node("Gemm", node["inputs"], node["outputs"], transB=1))
        elif node["op"] == "Softmax":
            nodes.append(helper.make_node("Softmax", node["inputs"], node["outputs"], axis=-1))
        else:
            sys.exit(f"unsupported op {node['op']}")
    inp = graph["inputs"][0]
    dtype = TensorProto.UINT8 if inp["dtype"] == "u8" else TensorProto.FLOAT
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info(inp["name"], dtype, ["N", 28, 28])],
                          [helper.make_tensor_value_info(graph["outputs"][0], TensorProto.FLOAT, ["N", 10])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, path)


def ort_session(path, threads):
    import onnxruntime as ort
    o = ort.SessionOptions()
    o.intra_op_num_threads = threads
    o.inter_op_num_threads = 1
    o.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])


def throughput(sess, x):
    name = sess.get_inputs()[0].name
    for _ in range(5):
        sess.run(None, {name: x})
    best = 1e30
    for _ in range(15):  # best of 15 x 20 batches, as `lowbit compare` times lowbit
        t = time.perf_counter()
        for _ in range(20):
            sess.run(None, {name: x})
        best = min(best, (time.perf_counter() - t) / 20)
    return x.shape[0] / best


def accuracy(sess, x, y):
    name = sess.get_inputs()[0].name
    pred = np.concatenate([sess.run(None, {name: x[i:i + 1000]})[0].argmax(1) for i in range(0, len(x), 1000)])
    return float((pred == y).mean())


def lowbit_compare(binary, model, against, data, threads):
    out = subprocess.run([binary, "compare", "--model", model, "--against", against, "--data", data, "--threads",
                          str(threads), "--json"], check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowbit", default="build/release/tools/lowbit/lowbit")
    p.add_argument("--model", required=True, help="trained float lowbit model (.lbm)")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--rounds", type=int, default=3, help="times each variant is measured (interleaved); the best counts")
    args = p.parse_args()
    from onnxruntime.quantization import CalibrationDataReader, QuantType, quantize_dynamic, quantize_static

    work = tempfile.mkdtemp(prefix="lowbit-ort-")
    graph, tensors = read_lbm(args.model)
    fp32_onnx = os.path.join(work, "fp32.onnx")
    onnx_mlp(graph, tensors, fp32_onnx)
    # The images as the model takes them: the bytes, or (a float-input model) the bytes scaled.
    def images(name):
        x = load(args.data, name)
        return x if graph["inputs"][0]["dtype"] == "u8" else x.astype(np.float32) / 255.0
    x_train = images("train-images-idx3-ubyte")[:1000]
    x_test = images("t10k-images-idx3-ubyte")
    y_test = load(args.data, "t10k-labels-idx1-ubyte").astype(np.int64)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{graph["inputs"][0]["name"]: x_train[i:i + 100]} for i in range(0, 1000, 100)])

        def get_next(self):
            return next(self.batches, None)

    dyn_onnx, static_onnx = os.path.join(work, "dynamic.onnx"), os.path.join(work, "static.onnx")
    quantize_dynamic(fp32_onnx, dyn_onnx, weight_type=QuantType.QInt8, per_channel=True)
    quantize_static(fp32_onnx, static_onnx, Reader(), per_channel=True)

    # lowbit variants from the same float model, calibrated on the same 1000 training images.
    variants = {}
    for name, extra in [("int8 static", ["--mode", "full"]), ("int8 dynamic", ["--mode", "dynamic"]),
                        ("4-bit weights, int8 act.", ["--mode", "full", "--bits", "4"])]:
        out = os.path.join(work, name.split()[0] + name.split()[1].strip(",") + ".lbm")
        subprocess.run([args.lowbit, "quantize", "--model", args.model, "--out", out, "--calib-data", args.data,
                        "--calib-samples", "1000"] + extra, check=True, capture_output=True)
        variants[name] = out

    batch = x_test[:256]
    rows = []
    for threads in [int(t) for t in args.threads.split(",")]:
        # Every variant measured `rounds` times, lowbit and ONNX Runtime alternating, the best kept:
        # a few seconds of load from elsewhere on the machine then cannot decide a comparison.
        best = {}  # (system, variant) -> (images/s, accuracy)

        def keep(key, ips, acc):
            if key not in best or ips > best[key][0]:
                best[key] = (ips, acc)

        ort = [("fp32", fp32_onnx), ("int8 dynamic", dyn_onnx), ("int8 static QDQ", static_onnx)]
        sessions = {name: ort_session(path, threads) for name, path in ort}
        ort_accuracy = {name: accuracy(sess, x_test, y_test) for name, sess in sessions.items()}
        for _ in range(args.rounds):
            for name, sess in sessions.items():
                keep(("ONNX Runtime", name), throughput(sess, batch), ort_accuracy[name])
            for name, path in variants.items():
                c = lowbit_compare(args.lowbit, path, args.model, args.data, threads)
                keep(("lowbit", name), c["model_batch256_images_per_second"], c["model_accuracy"])
                keep(("lowbit", "fp32"), c["against_batch256_images_per_second"], c["against_accuracy"])
        keys = [("lowbit", name) for name in variants] + [("lowbit", "fp32")] + [("ONNX Runtime", name) for name, _ in ort]
        rows += [(system, variant, threads) + best[(system, variant)] for system, variant in keys]
    import onnxruntime
    print(f"\nbatch-256 inference, reference MLP, ONNX Runtime {onnxruntime.__version__}")
    print("| system | variant | threads | images/s | vs lowbit fp32 | vs ORT int8 static | accuracy |")
    print("|---|---|---|---|---|---|---|")
    for system, variant, threads, ips, acc in rows:
        base = next(r[3] for r in rows if r[0] == "lowbit" and r[1] == "fp32" and r[2] == threads)
        ort8 = next(r[3] for r in rows if r[0] == "ONNX Runtime" and r[1] == "int8 static QDQ" and r[2] == threads)
        print(f"| {system} | {variant} | {threads} | {ips / 1e6:.3f} M | {ips / base:.2f}x | {ips / ort8:.2f}x | {acc:.4f} |")


if __name__ == "__main__":
    main()
