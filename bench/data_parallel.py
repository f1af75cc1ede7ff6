#!/usr/bin/env python3
"""Data-parallel training on one machine: mpirun ranks against threads, interleaved.

For the reference MLP (3 epochs of Fashion-MNIST at batch 32; and 4 epochs at batch 512, where
a step's fixed costs weigh less) and the reference CNN (one epoch of its first --cnn-samples
samples), each round runs, in turn:
  1 rank x 2 threads, 1 rank x 1 thread,
  2 ranks x 1 thread (mpirun; gradients and weights shared in memory, each rank updating its piece),
  2 ranks x 1 thread sending gradients by MPI (--no-shared-memory: 1 MiB buckets sent while the
  backward pass runs), and the same with every gradient sent after the backward pass (--bucket-mb 1e6),
and prints lowbit's own `train time` (best and median of the rounds), the ratio to 1 rank x 2
threads, and rank 0's time in communication calls per step (waiting at the barriers, when shared).
The share of communication hidden behind the backward pass is 1 - (time with buckets) / (time
without).

    python3 bench/data_parallel.py build/release/tools/lowbit/lowbit [--rounds 5] [--data DIR]

Needs Open MPI's mpirun (Debian openmpi-bin). Standard library only.
"""
import argparse
import json
import math
import os
import re
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(cmd, env):
    out = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"failed ({out.returncode}): {' '.join(cmd)}\n{out.stderr}")
    seconds = json.loads(out.stdout.strip().splitlines()[-1])["train_seconds"]  # (--json: to the nanosecond)
    comm = re.search(r"(?:(\d+) gradient bucket\(s\) per step|shared in memory[^;]*); rank 0 spent ([0-9.]+) s communicating", out.stdout)
    return seconds, (int(comm.group(1) or 0), float(comm.group(2))) if comm else None


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("lowbit")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--data", default="/usr/share/datasets/fashion-mnist")
    ap.add_argument("--cnn-samples", type=int, default=12000)
    ap.add_argument("--mpirun", default="mpirun")
    a = ap.parse_args()
    env = dict(os.environ, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    out = "/tmp/lowbit-data-parallel.lbm"
    # (name, arguments, samples per epoch, batch, epochs)
    models = [("reference MLP, batch 32, 3 epochs", ["--arch", "784-64-32-10"], 60000, 32, 3),
              ("reference MLP, batch 512, 4 epochs", ["--arch", "784-64-32-10", "--batch", "512"], 60000, 512, 4),
              (f"reference CNN, 1 epoch of {a.cnn_samples}",
               ["--arch", os.path.join(ROOT, "examples/models/reference-cnn.json"), "--train-samples", str(a.cnn_samples)],
               a.cnn_samples, 32, 1)]
    configs = [("1 rank x 2 threads", 1, 2, []), ("1 rank x 1 thread", 1, 1, []),
               ("2 ranks x 1 thread, shared memory", 2, 1, []),
               ("2 ranks x 1 thread, sent in buckets", 2, 1, ["--no-shared-memory"]),
               ("2 ranks x 1 thread, sent after the backward pass", 2, 1, ["--no-shared-memory", "--bucket-mb", "1e6"])]
    times = {(m[0], c[0]): [] for m in models for c in configs}
    comms = {(m[0], c[0]): [] for m in models for c in configs}
    buckets = {}
    for r in range(a.rounds):
        for name, args, _, _, epochs in models:
            for label, ranks, threads, extra in configs:
                cmd = [a.lowbit, "train", "--data", a.data, "--epochs", str(epochs), "--threads", str(threads), "--out", out,
                       "--json"] + args + extra
                if ranks > 1:
                    cmd = [a.mpirun, "--oversubscribe", "-np", str(ranks)] + cmd
                seconds, comm = run(cmd, env)
                times[(name, label)].append(seconds)
                if comm is not None:
                    buckets[(name, label)] = comm[0]
                    comms[(name, label)].append(comm[1])
        print(f"round {r + 1}/{a.rounds} done", file=sys.stderr)
    print(f"| model | configuration | train time, best | median | best vs 1 rank x 2 threads | communication per step (rank 0, median) |")
    print("|---|---|---|---|---|---|")
    for name, _, samples, batch, epochs in models:
        steps = math.ceil(samples / batch) * epochs
        base = min(times[(name, configs[0][0])])
        for label, *_ in configs:
            t = times[(name, label)]
            c = comms[(name, label)]
            per_step = f"{statistics.median(c) / steps * 1e6:.0f} us" if c else "-"
            print(f"| {name} | {label} | {min(t):.3f} s | {statistics.median(t):.3f} s | {base / min(t):.2f}x | {per_step} |")
        with_buckets, without = comms[(name, configs[3][0])], comms[(name, configs[4][0])]
        if buckets.get((name, configs[3][0])) == 1:
            print(f"| {name} | share of communication hidden by buckets | | | | none: one bucket per step |")
        elif with_buckets and without and statistics.median(without) > 0:
            hidden = 1 - statistics.median(with_buckets) / statistics.median(without)
            print(f"| {name} | share of communication hidden by buckets | | | | {100 * hidden:.0f}% |")


if __name__ == "__main__":
    main()
