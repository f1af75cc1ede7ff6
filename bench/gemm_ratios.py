#!/usr/bin/env python3
"""Runs lowbit_bench_gemm and prints lowbit vs OpenBLAS GFLOP/s per shape and thread count.

usage: bench/gemm_ratios.py [path/to/lowbit_bench_gemm] [extra benchmark flags...]
e.g.   bench/gemm_ratios.py build/bench/lowbit_bench_gemm --benchmark_repetitions=5

With repetitions the best (highest) GFLOP/s of each benchmark is used: on a shared machine the
slow runs measure the neighbours, not the code. Exit status 0; the table is the result.
"""
import sys

from gbench import run_benchmarks


def main(argv):
    runs = run_benchmarks(argv, "build/bench/lowbit_bench_gemm", "lowbit_bench_gemm")
    results = {}  # (shape, trans, threads) -> {library: best GFLOP/s}
    order = []
    for bench in runs:
        if "GFLOPS" not in bench:
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
