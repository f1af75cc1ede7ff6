#!/usr/bin/env python3
"""A BERT-style encoder exported from PyTorch (HF transformers' BertModel from a random BertConfig:
hidden 256, 4 layers, 4 heads, intermediate 1024, sequences of 128 tokens; no download), run by
lowbit and by ONNX Runtime, float and int8 dynamic (lowbit `quantize --mode dynamic`, ORT
`quantize_dynamic` with per-channel int8 weights), in one process:

  - fp32 agreement: lowbit's and ORT's last_hidden_state against PyTorch's (max |diff| / max |ref|);
  - int8 dynamic accuracy: the mean cosine similarity of each token's last_hidden_state to
    PyTorch's float one, lowbit's and ORT's, on the same file and inputs; and lowbit's static int8
    (calibrated on 64 other random sequences: `quantize --mode full --calib-data calib.npz`; the
    attention's q k^T and p v on int8 too, QAttention), without and with SmoothQuant
    (`--smooth 0.5`), and both with the attention kept float (`--float-layers '*/self/Reshape_3'`,
    the fused Attention nodes of this export); and lowbit's 4-bit weights in blocks of 32
    rounded by GPTQ on the same calibration sequences (`--bits 4 --group-size 32 --rounding gptq`);
  - latency, batch 1 x 128 and batch 32 x 128 tokens, at 1 and 2 threads: lowbit through
    `lowbit run --repeat`, ORT through InferenceSession.run, the fastest of --calls calls, rounds
    interleaved, best round kept.

    PY=$(scripts/onnx-venv.sh build/onnx-venv | tail -1)    # onnx, onnxruntime, Debian's torch
    $PY -m pip install "transformers==4.36.2"               # only for this benchmark
    $PY bench/bert_vs_onnxruntime.py --lowbit build/release/tools/lowbit/lowbit [--rounds 3] [--calls 10]
"""
import argparse
import json
import os
import shutil
import subprocess
import tempfile
import time

import numpy as np


def cosine(a, b):
    a = a.reshape(-1, a.shape[-1]).astype(np.float64)
    b = b.reshape(-1, b.shape[-1]).astype(np.float64)
    return float(np.mean((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))))


def relative(a, b):
    return float(np.abs(a - b).max() / np.abs(b).max())


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lowbit", default="build/release/tools/lowbit/lowbit")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--calls", type=int, default=10)
    p.add_argument("--threads", default="1,2")
    p.add_argument("--keep", help="write the models and inputs into this folder (kept) instead of a temporary one")
    p.add_argument("--json", action="store_true")
    args = p.parse_args()

    import onnxruntime as ort
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import BertConfig, BertModel

    work = args.keep or tempfile.mkdtemp(prefix="lowbit-bert-")
    os.makedirs(work, exist_ok=True)
    torch.manual_seed(0)
    config = BertConfig(vocab_size=8000, hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=1024, max_position_embeddings=128)
    model = BertModel(config).eval()
    names = ["input_ids", "attention_mask", "token_type_ids"]
    feeds = {}
    for batch in (1, 32):
        ids = torch.randint(0, config.vocab_size, (batch, 128))
        mask = torch.ones(batch, 128, dtype=torch.long)
        if batch > 1:
            mask[batch // 2:, 96:] = 0  # half the batch padded
        feeds[batch] = (ids, mask, torch.zeros(batch, 128, dtype=torch.long))
    fp32 = os.path.join(work, "bert.onnx")
    torch.onnx.export(model, feeds[1], fp32, opset_version=14, input_names=names,
                      output_names=["last_hidden_state", "pooler_output"],
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    reference = {}
    for batch, inputs in feeds.items():
        with torch.no_grad():
            reference[batch] = model(*inputs).last_hidden_state.numpy()
        np.savez(os.path.join(work, f"in{batch}.npz"), **{n: t.numpy() for n, t in zip(names, inputs)})
    ort_int8 = os.path.join(work, "bert_ort_int8.onnx")
    quantize_dynamic(fp32, ort_int8, weight_type=QuantType.QInt8, per_channel=True)
    lowbit_int8 = os.path.join(work, "bert_lowbit_int8.lbm")
    subprocess.run([args.lowbit, "quantize", "--model", fp32, "--mode", "dynamic", "--out", lowbit_int8], check=True,
                   capture_output=True)
    # Static int8 (activation ranges calibrated on 64 other random sequences, half of them padded),
    # without and with SmoothQuant.
    calib_ids = torch.randint(0, config.vocab_size, (64, 128), generator=torch.Generator().manual_seed(1))
    calib_mask = torch.ones(64, 128, dtype=torch.long)
    calib_mask[32:, 80:] = 0
    np.savez(os.path.join(work, "calib.npz"), input_ids=calib_ids.numpy(), attention_mask=calib_mask.numpy(),
             token_type_ids=np.zeros((64, 128), np.int64))
    # 4-bit weights in blocks of 32 (an fp16 scale each), rounded by GPTQ on the same calibration sequences.
    lowbit_int4 = os.path.join(work, "bert_lowbit_int4.lbm")
    subprocess.run([args.lowbit, "quantize", "--model", fp32, "--mode", "dynamic", "--bits", "4", "--group-size", "32",
                    "--rounding", "gptq", "--calib-data", os.path.join(work, "calib.npz"), "--calib-samples", "64",
                    "--out", lowbit_int4], check=True, capture_output=True)
    static = {}
    attention_float = ["--float-layers", "*/self/Reshape_3"]
    for label, extra in (("lowbit int8 static", []), ("lowbit int8 static + SmoothQuant 0.5", ["--smooth", "0.5"]),
                         ("lowbit int8 static, attention float", attention_float),
                         ("lowbit int8 static + SmoothQuant 0.5, attention float", ["--smooth", "0.5"] + attention_float)):
        path = os.path.join(work, f"bert_static{len(static)}.lbm")
        subprocess.run([args.lowbit, "quantize", "--model", fp32, "--mode", "full", "--calib-data", os.path.join(work, "calib.npz"),
                        "--calib-samples", "64", "--out", path] + extra, check=True, capture_output=True)
        static[label] = path

    def lowbit_run(path, batch, threads, repeat):
        out = os.path.join(work, "out.npz")
        line = subprocess.run([args.lowbit, "run", "--model", path, "--inputs", os.path.join(work, f"in{batch}.npz"), "--out", out,
                               "--threads", str(threads), "--repeat", str(repeat), "--json"],
                              check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        return json.loads(line)["best_seconds"], np.load(out)["last_hidden_state"]

    sessions = {}

    def ort_run(path, batch, threads, repeat):
        key = (path, threads)
        if key not in sessions:
            o = ort.SessionOptions()
            o.intra_op_num_threads = threads
            o.inter_op_num_threads = 1
            sessions[key] = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
        s = sessions[key]
        inputs = {n: t.numpy() for n, t in zip(names, feeds[batch])}
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            y = s.run(["last_hidden_state"], inputs)[0]
            best = min(best, time.perf_counter() - start)
        return best, y

    variants = {"lowbit fp32": (lowbit_run, fp32), "lowbit int8 dynamic": (lowbit_run, lowbit_int8),
                "lowbit 4-bit g32 GPTQ": (lowbit_run, lowbit_int4), "lowbit int8 static": (lowbit_run, static["lowbit int8 static"]),
                "ORT fp32": (ort_run, fp32), "ORT int8 dynamic": (ort_run, ort_int8)}
    quality = {}
    for name, (fn, path) in list(variants.items()) + [(label, (lowbit_run, path)) for label, path in static.items() if label not in variants]:
        _, y = fn(path, 32, 2, 1)
        quality[name] = {"relative_to_pytorch": relative(y, reference[32]), "mean_cosine": cosine(y, reference[32])}
    threads = [int(t) for t in args.threads.split(",")]
    times = {}
    for _ in range(args.rounds):
        for t in threads:
            for batch in (1, 32):
                for name, (fn, path) in variants.items():
                    seconds, _ = fn(path, batch, t, args.calls)
                    key = (name, batch, t)
                    times[key] = min(times.get(key, float("inf")), seconds)

    print(f"BERT-style encoder: hidden 256, 4 layers, 4 heads, 128 tokens; onnxruntime {ort.__version__}")
    print("| variant | max |diff| / max |PyTorch| | mean cosine to PyTorch fp32 |")
    print("|---|---|---|")
    for name, q in quality.items():
        print(f"| {name} | {q['relative_to_pytorch']:.2e} | {q['mean_cosine']:.7f} |")
    print("\n| ms (fastest) | " + " | ".join(f"batch {b}, {t} thr" for t in threads for b in (1, 32)) + " |")
    print("|---|" + "---|" * (2 * len(threads)))
    for name in variants:
        print(f"| {name} | " + " | ".join(f"{times[(name, b, t)] * 1e3:.2f}" for t in threads for b in (1, 32)) + " |")
    print("\nlowbit int8 dynamic speed-up over ORT int8 dynamic: " +
          ", ".join(f"batch {b} {t} thr {times[('ORT int8 dynamic', b, t)] / times[('lowbit int8 dynamic', b, t)]:.2f}x"
                    for t in threads for b in (1, 32)))
    if args.json:
        print(json.dumps({"quality": quality, "ms": {f"{n}|{b}|{t}": s * 1e3 for (n, b, t), s in times.items()}}))
    if not args.keep:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
