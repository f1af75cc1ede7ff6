#!/usr/bin/env python3
"""What the Python layer costs: lowbit.predict from Python against the same C++ predict() call
timed in C++ (lowbit._lowbit._predict_seconds: same process, model and batch), on the reference MLP
(784-64-32-10, trained for one epoch on Fashion-MNIST), batch 1 (one 28x28 image) and batch 256.
Fastest call of each, rounds interleaved, best round. The overhead at batch 256 equals batch 1's
when the batch is passed without a copy (a copy of 256 images would add its own microseconds).

    PY=build/py-venv/bin/python   # after pip install . (scripts/test.sh makes it)
    $PY bench/python_overhead.py [--rounds 5] [--calls 2000] [--threads 1]
"""
import argparse
import json
import time

import lowbit


def python_seconds(model, x, calls):
    best = 1e30
    for _ in range(calls):
        start = time.perf_counter()
        lowbit.predict(model, x)
        best = min(best, time.perf_counter() - start)
    return best


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    lowbit.set_num_threads(args.threads)
    data = lowbit.Dataset(lowbit.default_dataset_dir())
    model = lowbit.train(data, "784-64-32-10", epochs=1, progress=False)
    x, _ = data.arrays("test")
    rows = {}
    for batch in (1, 256):
        xb = x[:batch]
        best_py, best_cpp = 1e30, 1e30
        for _ in range(args.rounds):
            best_cpp = min(best_cpp, lowbit._lowbit._predict_seconds(model, xb, args.calls))
            best_py = min(best_py, python_seconds(model, xb, args.calls))
        rows[batch] = {"cpp_us": best_cpp * 1e6, "python_us": best_py * 1e6, "overhead_us": (best_py - best_cpp) * 1e6}
    if args.json:
        print(json.dumps({"threads": args.threads, "batches": rows}))
        return
    print(f"lowbit.predict from Python vs the same C++ call, {args.threads} thread(s), fastest of {args.calls} calls x {args.rounds} rounds")
    print(f"{'batch':>6} {'C++ us':>10} {'Python us':>10} {'overhead us':>12}")
    for batch, r in rows.items():
        print(f"{batch:>6} {r['cpp_us']:>10.2f} {r['python_us']:>10.2f} {r['overhead_us']:>12.2f}")


if __name__ == "__main__":
    main()
