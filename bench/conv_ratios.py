#!/usr/bin/env python3
"""Runs lowbit_bench_conv and prints lowbit's integer convolution against its fp32 convolution.

usage: bench/conv_ratios.py [path/to/lowbit_bench_conv] [extra benchmark flags...]
e.g.   bench/conv_ratios.py build/bench/lowbit_bench_conv --benchmark_repetitions=3

One row per layer shape and thread count: milliseconds per batch of fp32 (Conv2D), int8 (QConv2D,
s8 weights) and 4-bit weights, and the throughput ratios int8/fp32 and 4-bit/fp32. The rows
"reference CNN (conv1 + conv2)" add the two convolutions of examples/models/reference-cnn.json.
With repetitions the fastest run of each benchmark is used.
"""
import sys

from gbench import run_benchmarks


def main(argv):
    runs = run_benchmarks(argv, "build/bench/lowbit_bench_conv", "lowbit_bench_conv")
    results, order = {}, []  # (layer, threads) -> {variant: best ms}
    for bench in runs:
        # name: <variant>/<layer>/batch:<n>/threads:<t>/real_time
        parts = bench.get("run_name", bench["name"]).split("/")
        variant, layer = parts[0], parts[1]
        threads = int(next(p for p in parts if p.startswith("threads:")).split(":")[1])
        key = (layer, threads)
        if key not in results:
            results[key] = {}
            order.append(key)
        ms = bench["real_time"] * {"ns": 1e-6, "us": 1e-3, "ms": 1.0, "s": 1e3}[bench["time_unit"]]
        results[key][variant] = min(results[key].get(variant, float("inf")), ms)
    for threads in sorted({t for _, t in order}):
        layers = [results.get((layer, threads), {}) for layer in ("conv1_1x28x28_to32", "conv2_32x14x14_to64")]
        total = {v: layers[0][v] + layers[1][v] for v in ("lowbit_f32", "lowbit_s8", "lowbit_s4")
                 if v in layers[0] and v in layers[1]}
        if len(total) == 3:
            key = ("reference CNN (conv1 + conv2)", threads)
            results[key] = total
            order.append(key)

    fmt = lambda v: f"{v:9.2f}" if v else "        -"
    ratio = lambda a, b: f"{b / a:8.2f}" if a and b else "       -"
    print(f"{'layer (batch 256)':<30} {'thr':>3} {'fp32 ms':>9} {'int8 ms':>9} {'4-bit ms':>9} {'int8/fp32':>8} {'4b/fp32':>8}")
    for key in sorted(order, key=lambda k: (k[1], order.index(k))):
        r = results[key]
        f32, s8, s4 = r.get("lowbit_f32"), r.get("lowbit_s8"), r.get("lowbit_s4")
        print(f"{key[0]:<30} {key[1]:>3} {fmt(f32)} {fmt(s8)} {fmt(s4)} {ratio(s8, f32)} {ratio(s4, f32)}")
    print("(ratios are throughput: fp32 time / integer time; > 1 means the integer convolution is faster)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
