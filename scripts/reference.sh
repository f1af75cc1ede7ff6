#!/usr/bin/env bash
# The main job (README): builds lowbit, runs the reference pipeline on Fashion-MNIST and prints a
# results table. The reference pipeline: MLP 784-64-32-10 (ReLU, ReLU, softmax), Glorot-uniform
# initialization, Adam 1e-3, batch 32, 10 epochs, images scaled to [0, 1].
# Settings (environment): SEEDS="0 1 2"  THREADS=2  DATA=<dataset dir>  OUT=out/reference
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
THREADS=${THREADS:-2}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-out/reference}
scripts/install-deps.sh
cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build build/release --target lowbit_cli
lowbit=build/release/tools/lowbit/lowbit
mkdir -p "$OUT"

results="$OUT/results.jsonl"
: >"$results"
for seed in $SEEDS; do
  echo "== reference MLP, seed $seed"
  "$lowbit" train --arch examples/models/reference-mlp.json --data "$DATA" --epochs 10 --batch 32 --lr 0.001 \
    --optimizer adam --seed "$seed" --threads "$THREADS" --out "$OUT/reference-mlp-seed$seed.lbm" --json \
    | tee "$OUT/train-seed$seed.log" | tail -n 1 >>"$results"
  tail -n 2 "$OUT/train-seed$seed.log" | head -n 1
done

echo
echo "Results ($(basename "$DATA"), $THREADS threads):"
jq -rs '
  (["model", "seed", "params", "file bytes", "train s", "test accuracy"] | @tsv),
  (.[] | ["reference MLP fp32", .seed, .parameters, .file_bytes, (.train_seconds * 100 | round / 100),
          (.test_accuracy * 10000 | round / 100 | tostring + " %")] | @tsv),
  (if length > 1 then ["mean", "", "", "", (map(.train_seconds) | add / length * 100 | round / 100),
          ((map(.test_accuracy) | add / length) * 10000 | round / 100 | tostring + " %")] | @tsv else empty end)
' "$results" | column -t -s $'\t'
