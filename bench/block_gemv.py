#!/usr/bin/env python3
"""Block-quantized GEMV (batch 1), K = N = 4096 by default: lowbit's BlockQDense against ONNX
Runtime's MatMulNBits on the same block weights (4-bit blocks of 32, symmetric: the codes and fp16
scales lowbit stores, packed by hand in MatMulNBits' layout; accuracy level 4 = int8 activations
per block, as lowbit's, and level 0 = fp32 activations) and against OpenBLAS cblas_sgemv on the fp32 weights, at 1 and 2 threads, in
one process. Every variant is timed as the fastest of --calls calls; rounds interleave the
variants and thread counts; the best round counts (shared machines have noisy neighbours).

    scripts/install-deps.sh --bench      # OpenBLAS (libopenblas-dev)
    PY=build/py-venv/bin/python          # lowbit installed (pip install .), onnx and onnxruntime
    $PY bench/block_gemv.py [--k 4096] [--n 4096] [--rounds 5] [--calls 50] [--json]

Also prints each variant's error against the float product (relative RMS), so that a fast
wrong kernel shows.
"""
import argparse
import ctypes
import ctypes.util
import json
import os
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import lowbit


def float_model(w, path):
    """y = x W^T as ONNX MatMul (the weight stored [K, N], as exporters write it)."""
    n, k = w.shape
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemv",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(np.ascontiguousarray(w.T), "w")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


def block_quantize(w, block):
    """Symmetric 4-bit blocks as lowbit quantizes them: scale = max|w| / 7 rounded to fp16, codes
    round-half-even(w / scale) in [-7, 7], stored + 8. Returns (codes [N, K] uint8, scales [N, blocks])."""
    n, k = w.shape
    blocks = (k + block - 1) // block
    padded = np.zeros((n, blocks * block), np.float32)
    padded[:, :k] = w
    amax = np.abs(padded.reshape(n, blocks, block)).max(axis=2)
    scale = (amax / np.float32(7)).astype(np.float16).astype(np.float32)
    scale[scale == 0] = np.float32(np.float16(6e-8))
    q = np.clip(np.round(padded.reshape(n, blocks, block) / scale[:, :, None]), -7, 7) + 8
    return q.reshape(n, blocks * block).astype(np.uint8), scale


def matmul_nbits_model(w, out, accuracy_level, block=32):
    """ONNX Runtime's MatMulNBits (com.microsoft) with the block weights lowbit stores, packed by
    hand as its documentation lays them out: B [N, blocks, block / 2], two codes per byte, the
    first in the low nibble; fp32 scales [N * blocks]; no zero points (8)."""
    n, k = w.shape
    codes, scale = block_quantize(w, block)
    blocks = codes.shape[1] // block
    packed = (codes[:, 0::2] | (codes[:, 1::2] << 4)).astype(np.uint8).reshape(n, blocks, block // 2)
    node = helper.make_node("MatMulNBits", ["x", "b", "scales"], ["y"], domain="com.microsoft", K=k, N=n, bits=4,
                            block_size=block, accuracy_level=accuracy_level)
    graph = helper.make_graph(
        [node], "gemv_nbits", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, n])],
        [numpy_helper.from_array(packed, "b"), numpy_helper.from_array(scale.reshape(-1).astype(np.float32), "scales")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)]), out)


def openblas():
    name = ctypes.util.find_library("openblas") or "libopenblas.so.0"
    lib = ctypes.CDLL(name)
    lib.cblas_sgemv.restype = None
    f = ctypes.c_float
    p = ctypes.POINTER(ctypes.c_float)
    lib.cblas_sgemv.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, f, p, ctypes.c_int, p, ctypes.c_int, f,
                                p, ctypes.c_int]
    lib.openblas_set_num_threads.argtypes = [ctypes.c_int]
    return lib


def fastest(call, calls):
    best = 1e30
    for _ in range(calls):
        start = time.perf_counter()
        call()
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--k", type=int, default=4096)
    parser.add_argument("--n", type=int, default=4096)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((args.n, args.k)) * 0.02).astype(np.float32)
    x = rng.standard_normal((1, args.k)).astype(np.float32)
    exact = (x.astype(np.float64) @ w.T.astype(np.float64)).astype(np.float32)

    tmp = tempfile.mkdtemp(prefix="lowbit-gemv-")
    path = os.path.join(tmp, "float.onnx")
    float_model(w, path)
    variants = {}  # name -> {threads: callable}
    outputs = {}

    # lowbit: the float model imported, its MatMul (a Dense layer) quantized to block weights.
    imported = lowbit.import_onnx(path)
    for bits, group in ((4, 32), (3, 32), (4, 128)):
        model = lowbit.quantize(imported, mode="dynamic", bits=bits, group_size=group)
        name = f"lowbit_q{bits}_b{group}"
        outputs[name] = lowbit.predict(model, x)[0]
        variants[name] = {t: (lambda m=model: lowbit.predict(m, x)) for t in (1, 2)}

    # ONNX Runtime: MatMulNBits at accuracy levels 4 (int8 activations) and 0 (fp32), the same codes and scales.
    for level in (4, 0):
        q_path = os.path.join(tmp, f"nbits{level}.onnx")
        matmul_nbits_model(w, q_path, level)
        name = f"ort_matmulnbits_q4_b32_acc{level}"
        variants[name] = {}
        for t in (1, 2):
            so = ort.SessionOptions()
            so.intra_op_num_threads = t
            so.inter_op_num_threads = 1
            s = ort.InferenceSession(q_path, so, providers=["CPUExecutionProvider"])
            outputs[name] = s.run(None, {"x": x})[0]
            variants[name][t] = (lambda s=s: s.run(None, {"x": x}))

    # OpenBLAS sgemv on the fp32 weights.
    blas = openblas()
    y = np.zeros((1, args.n), np.float32)
    fp = ctypes.POINTER(ctypes.c_float)
    wp, xp, yp = w.ctypes.data_as(fp), x.ctypes.data_as(fp), y.ctypes.data_as(fp)
    sgemv = lambda: blas.cblas_sgemv(101, 111, args.n, args.k, 1.0, wp, args.k, xp, 1, 0.0, yp, 1)  # row-major, no transpose
    sgemv()
    outputs["openblas_sgemv_f32"] = y.copy()
    variants["openblas_sgemv_f32"] = {1: sgemv, 2: sgemv}

    best = {(name, t): 1e30 for name in variants for t in (1, 2)}
    for _ in range(args.rounds):
        for t in (1, 2):
            lowbit.set_num_threads(t)
            blas.openblas_set_num_threads(t)
            for name, calls in variants.items():
                best[(name, t)] = min(best[(name, t)], fastest(calls[t], args.calls))

    error = {name: float(np.sqrt(np.mean((out - exact) ** 2)) / np.sqrt(np.mean(exact.astype(np.float64) ** 2)))
             for name, out in outputs.items()}
    result = {"k": args.k, "n": args.n, "rounds": args.rounds, "calls": args.calls,
              "us": {f"{name}/threads:{t}": v * 1e6 for (name, t), v in best.items()}, "relative_rms_error": error}
    if args.json:
        print(json.dumps(result))
        return
    print(f"GEMV {args.n}x{args.k}, batch 1: fastest of {args.calls} calls, best of {args.rounds} interleaved rounds")
    print(f"{'variant':<34} {'1 thread us':>12} {'2 threads us':>13} {'rel. error':>11}")
    for name in variants:
        print(f"{name:<34} {best[(name, 1)] * 1e6:>12.1f} {best[(name, 2)] * 1e6:>13.1f} {error[name]:>11.2e}")
    print("\nratios (time of the peer / time of lowbit q4 b32; > 1: lowbit faster):")
    for t in (1, 2):
        lb = best[("lowbit_q4_b32", t)]
        parts = [f"{peer}: {best[(peer, t)] / lb:.2f}x" for peer in variants if not peer.startswith("lowbit")]
        parts.append(f"3-bit/4-bit time: {best[('lowbit_q3_b32', t)] / lb:.2f}")
        print(f"  {t} thread{'s' if t > 1 else ''}: " + ", ".join(parts))


if __name__ == "__main__":
    main()
