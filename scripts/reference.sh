#!/usr/bin/env bash
# The main job (README): builds lowbit, runs the reference pipeline on Fashion-MNIST and prints
# results tables. The reference pipeline: MLP 784-64-32-10 (ReLU, ReLU, softmax), Glorot-uniform
# initialization, Adam 1e-3, batch 32, 10 epochs, images scaled to [0, 1]; then the first seed's
# model quantized in every mode (full int8, dynamic int8, 4-bit weights, a --max-drop 0.5 search,
# partial by sensitivity), each compared with the float model.
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
echo "Training ($(basename "$DATA"), $THREADS threads):"
jq -rs '
  (["model", "seed", "params", "file bytes", "train s", "test accuracy"] | @tsv),
  (.[] | ["reference MLP fp32", .seed, .parameters, .file_bytes, (.train_seconds * 100 | round / 100),
          (.test_accuracy * 10000 | round / 100 | tostring + " %")] | @tsv),
  (if length > 1 then ["mean", "", "", "", (map(.train_seconds) | add / length * 100 | round / 100),
          ((map(.test_accuracy) | add / length) * 10000 | round / 100 | tostring + " %")] | @tsv else empty end)
' "$results" | column -t -s $'\t'

# Quantization of the first seed's model, every mode, each compared with the float model.
first=${SEEDS%% *}
fp32="$OUT/reference-mlp-seed$first.lbm"
quant="$OUT/quantization.jsonl"
: >"$quant"
quantize() {  # quantize LABEL BITS NAME ARGS...
  local label=$1 bits=$2 name=$3; shift 3
  echo "== quantize: $label"
  local rc=0
  "$lowbit" quantize --model "$fp32" --out "$OUT/$name.lbm" --calib-data "$DATA" --threads "$THREADS" --json "$@" \
    >"$OUT/$name.log" || rc=$?
  [[ $rc -eq 0 || $rc -eq 3 ]] || { cat "$OUT/$name.log"; exit $rc; }
  "$lowbit" compare --model "$OUT/$name.lbm" --against "$fp32" --data "$DATA" --threads "$THREADS" --json >"$OUT/$name.compare"
  jq -c --arg name "$label" --arg bits "$bits" --argjson q "$(tail -n 1 "$OUT/$name.log")" \
    '{"name": $name, "bits": $bits, "q": $q, "c": .}' <(tail -n 1 "$OUT/$name.compare") >>"$quant"
}
quantize "full int8 (per-channel, minmax)" "w8 a8" int8-full --mode full
quantize "dynamic int8" "w8 a8*" int8-dynamic --mode dynamic
quantize "full, 4-bit weights" "w4 a8" int4-full --mode full --bits 4
quantize "search --max-drop 0.5 (size)" "mixed" search --max-drop 0.5 --objective size
quantize "partial (most sensitive layer float)" "w8 a8 / fp32" partial --mode partial --keep-float 1

echo
echo "Quantization of seed $first ($(basename "$DATA"), $THREADS threads; latency batch 1, throughput batch 256):"
{
  jq -rs '["model", "mode", "bits", "file bytes", "% of fp32", "accuracy", "drop (pts)", "latency us", "images/s", "speed vs fp32"] | @tsv' "$quant"
  jq -rs '.[0] | ["fp32", "float", "w32 a32", .c.against_file_bytes, "100.0", .c.against_accuracy,
      "0.00", (.c.against_batch1_latency_us * 10 | round / 10), (.c.against_batch256_images_per_second | round), "1.00x"] | @tsv' "$quant"
  jq -rs '.[] | ["reference MLP", .name, .bits, .c.model_file_bytes, (.c.model_file_bytes / .c.against_file_bytes * 1000 | round / 10),
      .c.model_accuracy, ((.c.against_accuracy - .c.model_accuracy) * 10000 | round / 100),
      (.c.model_batch1_latency_us * 10 | round / 10), (.c.model_batch256_images_per_second | round),
      ((.c.model_batch256_images_per_second / .c.against_batch256_images_per_second * 100 | round / 100 | tostring) + "x")] | @tsv' "$quant"
} | column -t -s $'\t'
echo "(a8*: activations quantized per row at run time)"
