#!/usr/bin/env python3
"""What a hostile file of at most 1 MiB can make lowbit do (the hardening issue's bound: no more than
64 MiB above the command's baseline memory, no more than 1 second before it refuses). Each input
of the fuzz corpora (tests/fuzz/run_fuzzers.sh with LOWBIT_FUZZ_KEEP=DIR) goes through the lowbit
command that reads that kind of file, its peak resident memory taken from its own rusage
(wait4); the baseline is the same command on an empty file. Prints, per kind, the inputs run, how many were refused (non-zero exit) and the
largest peak-memory increase and wall time of the refused ones (the bound) and of the accepted
ones (inputs that are valid do real work: a plan that asks for GPTQ loads the default dataset).

    hostile_inputs.py LOWBIT CORPUS_DIR DATASET_DIR [--max-files N]
"""
import argparse
import os
import shutil
import struct
import subprocess
import tempfile
import time

ap = argparse.ArgumentParser()
ap.add_argument("lowbit")
ap.add_argument("corpus")
ap.add_argument("data")
ap.add_argument("--max-files", type=int, default=400, help="per kind, the largest first")
args = ap.parse_args()
work = tempfile.mkdtemp(prefix="lowbit-hostile-")


def run(cmd):
    """(exit code, peak RSS in KiB, wall seconds) of cmd (wait4: that process's own rusage)."""
    start = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=dict(os.environ, LOWBIT_NUM_THREADS="1"))
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, usage.ru_maxrss, time.monotonic() - start


# A small valid model, ranges and dataset for the commands that need them beside the hostile file.
model, ranges = f"{work}/m.lbm", f"{work}/ranges.json"
subprocess.run([args.lowbit, "train", "--data", args.data, "--arch", "784-32-10", "--train-samples", "200", "--epochs", "1",
                "--out", model], check=True, capture_output=True)
subprocess.run([args.lowbit, "calibrate", "--model", model, "--data", args.data, "--samples", "100", "--out", ranges],
               check=True, capture_output=True)
tiny = f"{work}/tiny"
os.makedirs(tiny)


def idx(path, dims, payload):
    with open(path, "wb") as f:
        f.write(struct.pack(">BBBB", 0, 0, 8, len(dims)) + b"".join(struct.pack(">I", d) for d in dims) + payload)


for split in ("train", "t10k"):
    idx(f"{tiny}/{split}-images-idx3-ubyte", [4, 28, 28], bytes(4 * 784))
    idx(f"{tiny}/{split}-labels-idx1-ubyte", [4], bytes([0, 1, 2, 9]))  # 10 classes
hostile_data = f"{work}/hostile-data"


def idx_command(path):
    shutil.rmtree(hostile_data, ignore_errors=True)
    shutil.copytree(tiny, hostile_data)
    os.remove(f"{hostile_data}/train-images-idx3-ubyte")
    shutil.copy(path, f"{hostile_data}/train-images-idx3-ubyte" + (".gz" if open(path, "rb").read(2) == b"\x1f\x8b" else ""))
    return [args.lowbit, "eval", "--model", model, "--data", hostile_data]


commands = {
    "model_file": lambda f: [args.lowbit, "eval", "--model", f, "--data", tiny],
    "idx": idx_command,
    "model_description": lambda f: [args.lowbit, "train", "--arch", f, "--data", tiny, "--epochs", "1", "--out", f"{work}/x.lbm"],
    "ranges": lambda f: [args.lowbit, "quantize", "--model", model, "--ranges", f, "--out", f"{work}/x.lbm"],
    "plan": lambda f: [args.lowbit, "quantize", "--model", model, "--plan", f, "--ranges", ranges, "--out", f"{work}/x.lbm"],
    "onnx_import": lambda f: [args.lowbit, "import", f, "--out", f"{work}/x.lbm"],
}
print("| kind | inputs (<= 1 MiB) | refused | baseline peak | refused: max increase, max seconds (input) | accepted: max increase, max seconds |")
print("|---|---|---|---|---|---|")
worst_rss, worst_time = 0, 0.0
for kind, command in commands.items():
    folder = os.path.join(args.corpus, kind)
    if not os.path.isdir(folder):
        continue
    files = [os.path.join(folder, f) for f in os.listdir(folder)]
    files = [f for f in files if os.path.isfile(f) and os.path.getsize(f) <= 1 << 20]
    files.sort(key=os.path.getsize, reverse=True)
    files = files[: args.max_files]
    empty = f"{work}/empty"
    open(empty, "wb").close()
    _, base, _ = run(command(empty))
    refused = accepted = 0
    top = {True: [0, 0.0, ""], False: [0, 0.0, ""]}  # by refused: max RSS increase, max seconds, the input of the larger
    for f in files:
        code, rss, seconds = run(command(f))
        t = top[code != 0]
        refused += code != 0
        accepted += code == 0
        if rss - base > t[0]:
            t[0], t[2] = rss - base, os.path.basename(f)[:16]
        t[1] = max(t[1], seconds)
    worst_rss, worst_time = max(worst_rss, top[True][0]), max(worst_time, top[True][1])
    print(f"| {kind} | {len(files)} | {refused} | {base / 1024:.1f} MiB | {top[True][0] / 1024:.1f} MiB, {top[True][1]:.2f} s "
          f"({top[True][2]}) | {top[False][0] / 1024:.1f} MiB, {top[False][1]:.2f} s ({accepted} inputs) |")
print(f"refused inputs, worst: {worst_rss / 1024:.1f} MiB above the baseline, {worst_time:.2f} s")
shutil.rmtree(work, ignore_errors=True)
