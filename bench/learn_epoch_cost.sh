#!/usr/bin/env bash
# Cost of an epoch of quantization-aware training and of distillation, relative to a plain training
# epoch of the same model, measured in one run (issue: "a QAT or distillation epoch costs at most
# 1.5x a plain training epoch, teacher logits cached").
# Usage: bench/learn_epoch_cost.sh [lowbit binary] [data dir]   (THREADS=2 EPOCHS=3 ROUNDS=3)
# Each configuration runs ROUNDS times, interleaved; per-epoch time = the median epoch of the
# fastest round (the first epoch includes no setup: timing starts at the first batch).
set -euo pipefail
cd "$(dirname "$0")/.."
lowbit=${1:-build/release/tools/lowbit/lowbit}
data=${2:-/usr/share/datasets/fashion-mnist}
THREADS=${THREADS:-2}
EPOCHS=${EPOCHS:-3}
ROUNDS=${ROUNDS:-3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
common=(--data "$data" --threads "$THREADS" --json)
"$lowbit" train --epochs 2 --seed 0 --out "$tmp/model.lbm" "${common[@]}" >/dev/null
"$lowbit" train --arch 784-256-10 --epochs 1 --seed 1 --out "$tmp/teacher.lbm" "${common[@]}" >/dev/null
"$lowbit" distill --teacher "$tmp/teacher.lbm" --epochs 1 --out "$tmp/warm.lbm" "${common[@]}" >/dev/null  # builds the logit cache
for round in $(seq "$ROUNDS"); do
  "$lowbit" train --epochs "$EPOCHS" --seed 0 --out "$tmp/t.lbm" "${common[@]}" | tail -n 1 >>"$tmp/plain.jsonl"
  "$lowbit" qat --model "$tmp/model.lbm" --bits 4 --epochs "$EPOCHS" --out "$tmp/q.lbm" "${common[@]}" | tail -n 1 >>"$tmp/qat.jsonl"
  "$lowbit" qat --model "$tmp/model.lbm" --bits 4 --lsq --epochs "$EPOCHS" --out "$tmp/q.lbm" "${common[@]}" | tail -n 1 >>"$tmp/lsq.jsonl"
  "$lowbit" distill --teacher "$tmp/teacher.lbm" --epochs "$EPOCHS" --out "$tmp/d.lbm" "${common[@]}" | tail -n 1 >>"$tmp/distill.jsonl"
  "$lowbit" qat --model "$tmp/model.lbm" --bits 4 --teacher "$tmp/teacher.lbm" --epochs "$EPOCHS" --out "$tmp/q.lbm" "${common[@]}" \
    | tail -n 1 >>"$tmp/qatdistill.jsonl"
done
# Median epoch of each run, then the fastest run.
epoch() { jq -s '[.[] | [(.history // .qat_history)[].seconds] | sort | .[length / 2 | floor]] | min' "$1"; }
plain=$(epoch "$tmp/plain.jsonl")
printf '%-34s %10s %8s\n' "epoch of (reference MLP, $THREADS threads)" "seconds" "ratio"
for kind in plain qat lsq distill qatdistill; do
  case $kind in
    plain) label="plain training" ;; qat) label="QAT 4-bit (min-max observers)" ;; lsq) label="QAT 4-bit --lsq" ;;
    distill) label="distillation (cached logits)" ;; qatdistill) label="QAT 4-bit + distillation" ;;
  esac
  s=$(epoch "$tmp/$kind.jsonl")
  printf '%-34s %10.3f %7.2fx\n' "$label" "$s" "$(awk -v a="$s" -v b="$plain" 'BEGIN { print a / b }')"
done
