#!/usr/bin/env python3
"""The reference pipeline in lowbit and in PyTorch, back to back on the same machine.

Same architecture (MLP 784-64-32-10, ReLU, ReLU, softmax), initialization (Glorot uniform weights,
zero biases), optimizer (Adam, lr 1e-3, betas 0.9/0.999, eps 1e-7), batch 32 with shuffling,
epochs and data (IDX files scaled to [0, 1]). Training time is the training loop alone for both
(data loading excluded). Prints both times, the ratio, both accuracies and lowbit's peak RSS.

Run with Debian's PyTorch:  /usr/bin/python3 bench/reference_vs_pytorch.py --lowbit build/release/tools/lowbit/lowbit
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lbm import torch_splits  # noqa: E402


def run_lowbit(binary, data_dir, seed, threads, epochs):
    out = f"/tmp/lowbit-bench-seed{seed}.lbm"
    cmd = [binary, "train", "--data", data_dir, "--arch", "784-64-32-10", "--epochs", str(epochs), "--batch", "32",
           "--lr", "0.001", "--optimizer", "adam", "--seed", str(seed), "--threads", str(threads), "--out", out, "--json"]
    # GNU time reports the peak RSS of lowbit itself (this Python process, with PyTorch loaded,
    # would inflate a fork-based measurement).
    result = subprocess.run(["/usr/bin/time", "-f", "peak_rss_kib %M"] + cmd, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"lowbit train failed ({result.returncode}):\n{result.stdout}{result.stderr}")
    os.remove(out)
    parsed = json.loads(result.stdout.strip().splitlines()[-1])
    rss = [line for line in result.stderr.splitlines() if line.startswith("peak_rss_kib")]
    parsed["peak_rss_mib"] = int(rss[-1].split()[1]) / 1024
    return parsed


def run_pytorch(data_dir, seed, threads, epochs):
    import torch
    from torch import nn
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    x_train, y_train, x_test, y_test = torch_splits(data_dir)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    for layer in model:
        if isinstance(layer, nn.Linear):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999), eps=1e-7)
    loss_fn = nn.CrossEntropyLoss()  # softmax + cross-entropy on the logits, as lowbit trains
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x_train, y_train), batch_size=32, shuffle=True)
    start = time.perf_counter()
    for _ in range(epochs):
        for xb, yb in loader:
            optimizer.zero_grad()
            loss_fn(model(xb), yb).backward()
            optimizer.step()
    seconds = time.perf_counter() - start
    with torch.no_grad():
        accuracy = (model(x_test).argmax(1) == y_test).float().mean().item()
    return {"train_seconds": seconds, "test_accuracy": accuracy, "torch": torch.__version__}


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lowbit", default="build/release/tools/lowbit/lowbit")
    p.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--json", help="also write the rows to this file")
    args = p.parse_args()
    # Debian's PyTorch runs its float GEMMs in OpenBLAS, whose pool torch.set_num_threads does not
    # control: pin it so the two pools do not oversubscribe the cores (see shared BASELINES.md).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    rows = []
    seeds = [int(s) for s in args.seeds.split(",")]
    # All lowbit runs first, then all PyTorch runs: once PyTorch is loaded in this process its
    # thread pools would compete with the lowbit child for the two cores.
    lowbit = {seed: run_lowbit(args.lowbit, args.data, seed, args.threads, args.epochs) for seed in seeds}
    for seed in seeds:
        lb = lowbit[seed]
        peak_mib = lb["peak_rss_mib"]
        pt = run_pytorch(args.data, seed, args.threads, args.epochs)
        rows.append({"seed": seed, "threads": args.threads, "lowbit_seconds": lb["train_seconds"],
                     "lowbit_accuracy": lb["test_accuracy"], "lowbit_peak_rss_mib": peak_mib,
                     "pytorch_seconds": pt["train_seconds"], "pytorch_accuracy": pt["test_accuracy"],
                     "speedup": pt["train_seconds"] / lb["train_seconds"], "torch": pt["torch"]})
        r = rows[-1]
        print(f"seed {seed}: lowbit {r['lowbit_seconds']:.2f} s acc {r['lowbit_accuracy']:.4f} | "
              f"PyTorch {r['torch']} {r['pytorch_seconds']:.2f} s acc {r['pytorch_accuracy']:.4f} | "
              f"speedup {r['speedup']:.2f}x | lowbit peak RSS {peak_mib:.0f} MiB", flush=True)
    print(f"\n| seed | threads | lowbit s | PyTorch s | PyTorch/lowbit | lowbit acc | PyTorch acc |")
    print(f"|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['seed']} | {r['threads']} | {r['lowbit_seconds']:.2f} | {r['pytorch_seconds']:.2f} | "
              f"{r['speedup']:.2f}x | {r['lowbit_accuracy']:.4f} | {r['pytorch_accuracy']:.4f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
