#!/usr/bin/env python3
"""Post-training weight quantization of the reference MLP, seeds 0, 1, 2: the test-accuracy drop
(float minus quantized, percentage points) for every bit width, grid and rounding, through the CLI
as a user would run it:

    lowbit train --seed S --out mlpS.lbm                    (10 epochs, Fashion-MNIST)
    lowbit quantize --model mlpS.lbm --bits B [--group-size G] [--affine] --rounding R --json

usage: bench/ptq_table.py [--lowbit build/release/tools/lowbit/lowbit] [--work DIR] [--seeds 0,1,2]
                          [--bits 4,3,2] [--groups 0,32,128] [--schemes symmetric,affine]
                          [--model examples/models/cnn.json]   (another architecture, e.g. the CNN)
Prints a table of "drop per seed (mean)" and the seconds each quantize call took (GPTQ included).
Models already trained in --work are reused.
"""
import argparse
import json
import os
import subprocess
import sys
import time


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lowbit", default="build/release/tools/lowbit/lowbit")
    p.add_argument("--work", default="/tmp/lowbit-ptq")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--bits", default="4,3,2")
    p.add_argument("--groups", default="0,32,128")
    p.add_argument("--schemes", default="symmetric,affine")
    p.add_argument("--roundings", default="nearest,gptq")
    p.add_argument("--arch", default="", help="train --arch (default: the reference MLP)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    os.makedirs(args.work, exist_ok=True)
    seeds = [int(s) for s in args.seeds.split(",")]
    models = {}
    for s in seeds:
        path = os.path.join(args.work, f"model{s}.lbm")
        if not os.path.exists(path):
            cmd = [args.lowbit, "train", "--seed", str(s), "--out", path, "--threads", str(args.threads), "--json"]
            if args.arch:
                cmd += ["--arch", args.arch]
            run(cmd)
        models[s] = path
    rows = []
    for bits in [int(b) for b in args.bits.split(",")]:
        for group in [int(g) for g in args.groups.split(",")]:
            for scheme in args.schemes.split(","):
                row = {"bits": bits, "group": group, "scheme": scheme}
                for rounding in args.roundings.split(","):
                    drops, seconds = [], []
                    for s in seeds:
                        out = os.path.join(args.work, "q.lbm")
                        cmd = [args.lowbit, "quantize", "--model", models[s], "--out", out, "--bits", str(bits),
                               "--rounding", rounding, "--threads", str(args.threads), "--json"]
                        if group:
                            cmd += ["--group-size", str(group)]
                        if scheme == "affine":
                            cmd += ["--affine"]
                        start = time.perf_counter()
                        r = run(cmd)
                        seconds.append(time.perf_counter() - start)
                        drops.append(r["drop_points"])
                    row[rounding] = drops
                    row[rounding + "_seconds"] = max(seconds)
                rows.append(row)
                cells = " | ".join(f"{' / '.join(f'{d:.2f}' for d in row[r])} ({sum(row[r]) / len(row[r]):.2f}), {row[r + '_seconds']:.1f} s"
                                   for r in args.roundings.split(","))
                grid = f"blocks of {group}" if group else "per-channel"
                print(f"| {bits}-bit {scheme}, {grid} | {cells} |", flush=True)
    print(json.dumps(rows), file=sys.stderr)


if __name__ == "__main__":
    main()
