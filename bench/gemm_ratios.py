#!/usr/bin/env python3
"""Runs lowbit_bench_gemm and prints lowbit vs OpenBLAS GFLOP/s per shape and thread count.

usage: bench/gemm_ratios.py [path/to/lowbit_bench_gemm] [extra benchmark flags...]
e.g.   bench/gemm_ratios.py build/bench/lowbit_bench_gemm --benchmark_repetitions=5

With repetitions the best (highest) GFLOP/s of each benchmark is used: on a shared machine the
slow runs measure the neighbours, not the code. Exit status 0; the table is the result.
"""
import json
import os
import subprocess
import sys


def main(argv):
    binary = "build/bench/lowbit_bench_gemm"
    extra = []
    if len(argv) > 1 and not argv[1].startswith("-"):
        binary = argv[1]
        extra = argv[2:]
    else:
        extra = argv[1:]
    if not os.path.exists(binary):
        sys.exit(f"gemm_ratios: no benchmark binary at {binary} (build the lowbit_bench_gemm target)")
    out = subprocess.run([binary, "--benchmark_format=json", *extra], check=True, stdout=subprocess.PIPE,
                         text=True).stdout
    results = {}  # (shape, trans, threads) -> {library: best GFLOP/s}
    order = []
    for bench in json.loads(out)["benchmarks"]:
        if bench.get("run_type") == "aggregate" or "GFLOPS" not in bench:
            continue
        # name: <library>/<M>x<N>x<K>/<ta><tb>/threads:<t>[/real_time]
        parts = bench["run_name"].split("/") if "run_name" in bench else bench["name"].split("/")
        library, shape, trans, threads = parts[0], parts[1], parts[2], parts[3].split(":")[1]
        key = (shape, trans, int(threads))
        if key not in results:
            results[key] = {}
            order.append(key)
        results[key][library] = max(results[key].get(library, 0.0), bench["GFLOPS"])  # already GFLOP/s

    print(f"{'shape (MxNxK)':<16} {'op':<3} {'thr':>3} {'lowbit':>8} {'OpenBLAS':>9} {'ratio':>6}")
    for key in sorted(order, key=lambda k: (k[2], order.index(k))):
        shape, trans, threads = key
        lb = results[key].get("lowbit")
        ob = results[key].get("openblas")
        ratio = f"{lb / ob:6.2f}" if lb and ob else "     -"
        fmt = lambda v: f"{v:8.1f}" if v else "       -"
        print(f"{shape:<16} {trans:<3} {threads:>3} {fmt(lb)} {fmt(ob):>9} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
