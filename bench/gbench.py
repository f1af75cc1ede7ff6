"""Shared by the *_ratios.py scripts: runs one Google Benchmark binary and returns its runs.

    from gbench import run_benchmarks
    for bench in run_benchmarks(sys.argv, "build/bench/lowbit_bench_conv", "lowbit_bench_conv"):
        ...  # one dict per run (aggregates skipped), as in --benchmark_format=json

argv: [script, optional binary path, extra Google Benchmark flags...].
"""
import json
import os
import subprocess
import sys


def run_benchmarks(argv, default_binary, target):
    binary, extra = default_binary, argv[1:]
    if len(argv) > 1 and not argv[1].startswith("-"):
        binary, extra = argv[1], argv[2:]
    script = os.path.basename(argv[0]).removesuffix(".py")
    if not os.path.exists(binary):
        sys.exit(f"{script}: no benchmark binary at {binary} (build the {target} target)")
    out = subprocess.run([binary, "--benchmark_format=json", *extra], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    return [bench for bench in json.loads(out)["benchmarks"] if bench.get("run_type") != "aggregate"]
