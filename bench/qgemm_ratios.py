#!/usr/bin/env python3
"""Runs lowbit_bench_qgemm and prints lowbit int8 GOP/s against its peers per shape and thread count.

usage: bench/qgemm_ratios.py [path/to/lowbit_bench_qgemm] [extra benchmark flags...]
e.g.   bench/qgemm_ratios.py build/bench/lowbit_bench_qgemm --benchmark_repetitions=3

Columns: lowbit s8 (qgemm_s8, s8 weights), lowbit s4 (4-bit weights; GEMV shape only), the best of
lowbit's fp32 gemm_f32 NN/NT, oneDNN u8s8s32 (capped at lowbit's instruction set unless
DNNL_MAX_CPU_ISA is set), and the ratios s8/f32, s8/oneDNN and s4/f32. With repetitions the best
(highest) GOP/s of each benchmark is used. On AVX-512 VNNI CPUs a last line gives the vpdpbusd peak
and the share of it that lowbit and oneDNN reach at 1024^3.
"""
import sys

from gbench import run_benchmarks


def gops(bench):
    """The GOPS counter in GOP/s (Google Benchmark reports a rate counter per second)."""
    return bench["GOPS"] / 1e9 if bench["GOPS"] > 1e6 else bench["GOPS"]


def main(argv):
    runs = run_benchmarks(argv, "build/bench/lowbit_bench_qgemm", "lowbit_bench_qgemm")
    results, order = {}, []  # (shape, threads) -> {variant: best GOP/s}
    peak = {}  # threads -> best vpdpbusd GOP/s
    for bench in runs:
        if "GOPS" not in bench:
            continue
        # name: <variant>/<M>x<N>x<K>/threads:<t>[/real_time], or peak_vpdpbusd/threads:<t>[/real_time]
        parts = bench.get("run_name", bench["name"]).split("/")
        if parts[0] == "peak_vpdpbusd":
            threads = int(parts[1].split(":")[1])
            peak[threads] = max(peak.get(threads, 0.0), gops(bench))
            continue
        variant, shape, threads = parts[0], parts[1], int(parts[2].split(":")[1])
        key = (shape, threads)
        if key not in results:
            results[key] = {}
            order.append(key)
        results[key][variant] = max(results[key].get(variant, 0.0), gops(bench))

    fmt = lambda v: f"{v:9.1f}" if v else "        -"
    ratio = lambda a, b: f"{a / b:7.2f}" if a and b else "      -"
    print(f"{'shape (MxNxK)':<16} {'thr':>3} {'lowbit s8':>9} {'lowbit s4':>9} {'f32 best':>9} {'oneDNN':>9}"
          f" {'s8/f32':>7} {'s8/dnnl':>7} {'s4/f32':>7}")
    for key in sorted(order, key=lambda k: (k[1], order.index(k))):
        r = results[key]
        s8, s4, dnnl = r.get("lowbit_s8"), r.get("lowbit_s4"), r.get("onednn_u8s8")
        f32 = max(r.get("lowbit_f32NN", 0.0), r.get("lowbit_f32NT", 0.0)) or None
        print(f"{key[0]:<16} {key[1]:>3} {fmt(s8)} {fmt(s4)} {fmt(f32)} {fmt(dnnl)}"
              f" {ratio(s8, f32)} {ratio(s8, dnnl)} {ratio(s4, f32)}")
    for threads in sorted(peak):
        line = f"vpdpbusd peak, {threads} thread{'s' if threads > 1 else ''}: {peak[threads]:.1f} GOP/s"
        r = results.get(("1024x1024x1024", threads), {})
        for name, variant in (("lowbit s8", "lowbit_s8"), ("oneDNN", "onednn_u8s8")):
            if r.get(variant):
                line += f"; {name} at 1024^3: {100 * r[variant] / peak[threads]:.1f} %"
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
