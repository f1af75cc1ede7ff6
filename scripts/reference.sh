#!/usr/bin/env bash
# The main job (README): builds lowbit, runs the reference pipeline on Fashion-MNIST and prints
# results tables. The reference pipeline: MLP 784-64-32-10 (ReLU, ReLU, softmax), Glorot-uniform
# initialization, Adam 1e-3, batch 32, 10 epochs, images scaled to [0, 1]; then the first seed's
# model quantized in every mode (full int8, dynamic int8, 4-bit weights, a --max-drop 0.5 search,
# partial by sensitivity), each compared with the float model; then learning under compression for
# every seed: a teacher (trained once, seed 0), the reference MLP distilled from it, 4-bit QAT of the
# label-trained MLP, and 4-bit and 2-bit quantization-aware distillation of the distilled MLP.
# Settings (environment): SEEDS="0 1 2"  THREADS=2  DATA=<dataset dir>  OUT=out/reference
#   TEACHER=<arch or JSON description>  TEACHER_EPOCHS=10  DISTILL_EPOCHS=50  CNN_EPOCHS=10
#   SKIP_LEARN=1 (no learning-under-compression section)  SKIP_CNN=1 (no reference CNN section)
#   LOWBIT=<a lowbit binary> (run that one instead of building; e.g. to compare two versions)
set -euo pipefail
cd "$(dirname "$0")/.."
SEEDS=${SEEDS:-"0 1 2"}
THREADS=${THREADS:-2}
DATA=${DATA:-/usr/share/datasets/fashion-mnist}
OUT=${OUT:-out/reference}
scripts/install-deps.sh
if [[ -n "${LOWBIT:-}" ]]; then
  lowbit=$LOWBIT
else
  cmake -S . -B build/release -G Ninja -DCMAKE_BUILD_TYPE=Release >/dev/null
  cmake --build build/release --target lowbit_cli
  lowbit=build/release/tools/lowbit/lowbit
fi
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

if [[ -z "${SKIP_LEARN:-}" ]]; then
# Learning under compression (docs/qat.md), every seed; one teacher (seed 0) for all students.
# Distillation is compared with label training at the same budget: DISTILL_EPOCHS epochs, cosine
# learning-rate decay, for both.
TEACHER=${TEACHER:-examples/models/cnn-teacher-dropout.json}
TEACHER_EPOCHS=${TEACHER_EPOCHS:-10}
DISTILL_EPOCHS=${DISTILL_EPOCHS:-50}
learn="$OUT/learning.jsonl"
: >"$learn"
teacher="$OUT/teacher.lbm"
echo
echo "== teacher $TEACHER, $TEACHER_EPOCHS epochs"
"$lowbit" train --arch "$TEACHER" --data "$DATA" --epochs "$TEACHER_EPOCHS" --lr-schedule cosine --seed 0 --threads "$THREADS" \
  --out "$teacher" --json \
  | tee "$OUT/teacher.log" | tail -n 1 | jq -c '{"name": "teacher", "seed": .seed, "bits": "w32 a32", "file_bytes": .file_bytes,
      "test_accuracy": .test_accuracy, "epochs": .epochs, "seconds": .train_seconds}' >>"$learn"
distill=(--teacher "$teacher" --data "$DATA" --temperature "${TEMPERATURE:-2}" --alpha "${ALPHA:-0.5}" --lr-schedule cosine
         --threads "$THREADS" --json)
record() {  # record NAME BITS SEED < json line
  jq -c --arg name "$1" --arg bits "$2" --argjson seed "$3" \
    '{"name": $name, "seed": $seed, "bits": $bits, "file_bytes": .file_bytes, "test_accuracy": .test_accuracy,
      "epochs": ((.epochs // 0) + (.qat_epochs // 0)), "seconds": ((.train_seconds // 0) + (.qat_seconds // 0)),
      "agreement": .agreement}' >>"$learn"
}
for seed in $SEEDS; do
  fp32="$OUT/reference-mlp-seed$seed.lbm"
  grep "\"seed\":$seed," "$results" | tail -n 1 | record "reference MLP, labels" "w32 a32" "$seed"
  echo "== seed $seed: labels and distillation at $DISTILL_EPOCHS epochs (cosine), QAT"
  "$lowbit" train --arch examples/models/reference-mlp.json --data "$DATA" --epochs "$DISTILL_EPOCHS" --lr-schedule cosine \
    --seed "$seed" --threads "$THREADS" --out "$OUT/labels-cosine-seed$seed.lbm" --json | tail -n 1 \
    | record "reference MLP, labels, same budget" "w32 a32" "$seed"
  "$lowbit" distill "${distill[@]}" --student examples/models/reference-mlp.json --epochs "$DISTILL_EPOCHS" --seed "$seed" \
    --out "$OUT/distilled-seed$seed.lbm" | tee "$OUT/distilled-seed$seed.log" | tail -n 1 | record "reference MLP, distilled" "w32 a32" "$seed"
  "$lowbit" qat --model "$fp32" --data "$DATA" --bits 4 --epochs 3 --seed "$seed" --threads "$THREADS" --json \
    --out "$OUT/qat-w4-seed$seed.lbm" | tee "$OUT/qat-w4-seed$seed.log" | tail -n 1 | record "QAT, 4-bit" "w4 a8" "$seed"
  for bits in 4 2; do
    "$lowbit" distill "${distill[@]}" --student "$OUT/distilled-seed$seed.lbm" --epochs 0 --bits "$bits" --lsq --qat-epochs 5 \
      --seed "$seed" --out "$OUT/distilled-w$bits-seed$seed.lbm" | tee "$OUT/distilled-w$bits-seed$seed.log" | tail -n 1 \
      | record "distilled + QAT (LSQ), $bits-bit" "w$bits a8" "$seed"
  done
done

echo
echo "Learning under compression ($(basename "$DATA"), $THREADS threads; teacher $(basename "$TEACHER"); test accuracy per seed and mean;"
echo "'vs float MLP': against the mean of the reference MLP (10 epochs, labels)):"
jq -rs --arg seeds "$SEEDS" '
  ($seeds | split(" ") | map(tonumber)) as $seeds
  | (map(select(.name == "reference MLP, labels")) | map(.test_accuracy) | add / length) as $ref
  | group_by(.name) as $groups
  | (["model", "bits", "file bytes", "epochs"] + ($seeds | map("seed \(.)")) + ["mean", "vs float MLP (pts)", "int agrees"] | @tsv),
    ( ["teacher", "reference MLP, labels", "reference MLP, labels, same budget", "reference MLP, distilled", "QAT, 4-bit",
       "distilled + QAT (LSQ), 4-bit", "distilled + QAT (LSQ), 2-bit"][] as $n
      | ($groups[] | select(.[0].name == $n)) as $g
      | ([$n, $g[0].bits, $g[0].file_bytes, $g[0].epochs]
         + ($seeds | map(. as $s | ($g | map(select(.seed == $s)) | .[0].test_accuracy // null)
                          | if . == null then "" else (. * 10000 | round / 100 | tostring + " %") end))
         + [($g | map(.test_accuracy) | add / length * 10000 | round / 100 | tostring + " %"),
            ((($g | map(.test_accuracy) | add / length) - $ref) * 10000 | round / 100),
            (if $g[0].agreement then ($g | map(.agreement) | min * 10000 | round / 100 | tostring + " %") else "" end)]) | @tsv)
' "$learn" | column -t -s $'\t'
echo "(QAT rows are the converted integer models; 'int agrees': the lowest agreement of an integer model with its QAT model;"
echo " distilled rows: T = ${TEMPERATURE:-2}, alpha = ${ALPHA:-0.5}, cosine decay; 'same budget': labels only, $DISTILL_EPOCHS epochs, cosine)"
fi

# The reference CNN (examples/models/reference-cnn.json), first seed: float, full int8, 4-bit
# weights, dynamic int8, 4-bit QAT.
if [[ -z "${SKIP_CNN:-}" ]]; then
  CNN_EPOCHS=${CNN_EPOCHS:-10}
  cnn="$OUT/reference-cnn-seed$first.lbm"
  echo
  echo "== reference CNN, seed $first, $CNN_EPOCHS epochs"
  "$lowbit" train --arch examples/models/reference-cnn.json --data "$DATA" --epochs "$CNN_EPOCHS" --seed "$first" \
    --threads "$THREADS" --out "$cnn" --json | tee "$OUT/cnn-train.log" | tail -n 1 >"$OUT/cnn-train.json"
  for variant in full-8 full-4 dynamic-8; do
    "$lowbit" quantize --model "$cnn" --out "$OUT/reference-cnn-$variant.lbm" --mode "${variant%-*}" --bits "${variant#*-}" \
      --calib-data "$DATA" --threads "$THREADS" --json >"$OUT/cnn-$variant.log"
  done
  "$lowbit" qat --model "$cnn" --data "$DATA" --bits 4 --epochs 1 --threads "$THREADS" --out "$OUT/reference-cnn-qat-w4.lbm" \
    --json >"$OUT/cnn-qat-w4.log"
  echo
  echo "Reference CNN ($(basename "$DATA"), seed $first, $CNN_EPOCHS epochs, $THREADS threads):"
  {
    printf 'model\tbits (w, a)\tfile bytes\ttrain s\ttest accuracy\tdrop (pts)\n'
    jq -r '["reference CNN fp32", "32, 32", .file_bytes, (.train_seconds | round), (.test_accuracy * 10000 | round / 100 | tostring + " %"), ""] | @tsv' \
      "$OUT/cnn-train.json"
    for variant in full-8 full-4 dynamic-8; do
      bits="${variant#*-}, 8"
      [[ $variant == dynamic-* ]] && bits="$bits (run time)"
      tail -n 1 "$OUT/cnn-$variant.log" | jq -r --arg mode "${variant%-*}" --arg bits "$bits" \
        --argjson bytes "$(stat -c %s "$OUT/reference-cnn-$variant.lbm")" \
        '["reference CNN, " + $mode, $bits, $bytes, "", (.test_accuracy * 10000 | round / 100 | tostring + " %"),
          ((.float_test_accuracy - .test_accuracy) * 10000 | round / 100)] | @tsv'
    done
    tail -n 1 "$OUT/cnn-qat-w4.log" | jq -r '["reference CNN, QAT 1 epoch", "4, 8", .file_bytes, (.qat_seconds | round),
      (.test_accuracy * 10000 | round / 100 | tostring + " %"), ((.float_test_accuracy - .test_accuracy) * 10000 | round / 100)] | @tsv'
  } | column -t -s $'\t'
fi
