#!/usr/bin/env bash
# Runs the libFuzzer targets built in BUILD_DIR (configure: -DCMAKE_CXX_COMPILER=clang++
# -DLOWBIT_FUZZ=ON -DLOWBIT_SANITIZE=address,undefined; build the target lowbit_fuzzers): for each
# loader, first every input of its regression corpus (tests/fuzz/regressions/<target>, inputs that
# once crashed), then its share of TOTAL_SECONDS (shared evenly by the targets run) of fuzzing
# from seeds (the repository's files of that kind) in a scratch corpus, with -rss_limit_mb=2048, no single allocation above 64 MiB (but IDX: see below;
# loaders refuse claimed sizes before allocating them) and a 10 s timeout per input.
# Usage: run_fuzzers.sh BUILD_DIR TOTAL_SECONDS [TARGET...] (default: every target built). A crash leaves
# its input in BUILD_DIR/fuzz-artifacts: fix the bug, then add the input to the regression corpus.
set -euo pipefail
build=$1 total=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export TMPDIR="$work"  # the targets' scratch files

# Seeds per target, written into $work/seeds/<target>.
seeds() {
  local t=$1 dir="$work/seeds/$1"
  mkdir -p "$dir"
  case $t in
    onnx_import)
      cp "$repo"/tests/data/onnx/*.onnx "$dir/"
      local nodes=/usr/share/libonnx-testdata/data/node
      for n in relu gemm_default_no_bias conv_with_strides_padding reshape_negative_dim slice maxpool_2d_pads qlinearconv \
               dequantizelinear_axis concat_1d_axis_0 averagepool_2d_ceil; do
        [[ -f "$nodes/test_$n/model.onnx" ]] && cp "$nodes/test_$n/model.onnx" "$dir/node_$n.onnx"
      done ;;
    model_file)  # today's format (seeds/model_file: f32, int8, 4-bit blocks, a dynamic BERT, a training checkpoint) and version 1
      cp "$here"/seeds/model_file/*.lbm "$dir/"
      find "$repo/tests/data/format-v1" -name '*.lbm' -exec cp {} "$dir/" \; ;;
    idx)  # 2 images of 3x4 and their labels, plain and gzipped
      printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x03\x00\x00\x00\x04abcdefghijklmnopqrstuvwx' >"$dir/images.idx"
      printf '\x00\x00\x08\x01\x00\x00\x00\x02\x01\x09' >"$dir/labels.idx"
      gzip -c "$dir/images.idx" >"$dir/images.idx.gz"
      gzip -c "$dir/labels.idx" >"$dir/labels.idx.gz" ;;
    model_description)
      cp "$repo"/examples/models/*.json "$dir/"
      printf '784-64-32-10' >"$dir/mlp.txt" ;;
    ranges)
      printf '{"format": "lowbit-calibration", "version": 1, "method": "minmax", "samples": 1000,\n "ranges": {"image": {"min": 0.0, "max": 1.0}, "dense_1": {"min": -3.5, "max": 7.25}}}\n' >"$dir/ranges.json" ;;
    plan)
      printf '{"format": "lowbit-quantization-plan", "version": 1, "mode": "full",\n "defaults": {"quantize": true, "weight_bits": 8, "granularity": "per_channel", "weight_scheme": "symmetric", "calibration": "minmax"},\n "layers": {"dense_1": {"quantize": true, "weight_bits": 4, "rounding": "gptq", "group_size": 32}, "dense_3": {"quantize": false}}}\n' >"$dir/plan.json"
      printf '{"format": "lowbit-quantization-plan", "version": 1, "mode": "dynamic", "dynamic_granularity": "row", "defaults": {"weight_bits": 8}, "layers": {}}\n' >"$dir/dynamic.json" ;;
  esac
}

targets=("$@")
if (( ${#targets[@]} == 0 )); then
  for exe in "$build"/tests/fuzz/lowbit_fuzz_*; do targets+=("${exe##*/lowbit_fuzz_}"); done
fi
seconds=$(( total / ${#targets[@]} ))
(( seconds >= 1 )) || seconds=1
echo "fuzz: ${#targets[@]} targets, $seconds s each (total budget $total s)"
for t in "${targets[@]}"; do
  target="$build/tests/fuzz/lowbit_fuzz_$t"
  if [[ -d "$here/regressions/$t" ]]; then
    regressions=("$here/regressions/$t"/*)
    "$target" "${regressions[@]}" >/dev/null 2>"$work/regress.log" || { cat "$work/regress.log"; exit 1; }
    echo "fuzz: $t: ${#regressions[@]} regression inputs pass"
  fi
  seeds "$t"
  dict=()
  [[ -f "$here/dict/$t.dict" ]] && dict=(-dict="$here/dict/$t.dict")
  # No single allocation above 64 MiB from an input of at most 1 MB: claimed sizes are checked
  # against what the file holds. (Not for IDX: a gzip stream of 1 MB may hold a valid file of
  # 1 GB, whose data is allocated as it is read.)
  limit=(-malloc_limit_mb=64)
  [[ $t == idx ]] && limit=()
  mkdir -p "$work/corpus/$t"
  "$target" "$work/corpus/$t" "$work/seeds/$t" "${dict[@]}" "${limit[@]}" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 \
    -max_len=1000000 -artifact_prefix="$artifacts/$t-" -print_final_stats=1 >"$work/fuzz.log" 2>&1 || { tail -n 60 "$work/fuzz.log"; exit 1; }
  runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$work/fuzz.log" | grep -o '[0-9]*$' || echo 0)
  cov=$(grep -o 'cov: [0-9]*' "$work/fuzz.log" | tail -n 1 | grep -o '[0-9]*' || echo 0)
  echo "fuzz: $t: $runs runs in $seconds s ($((runs / seconds))/s), coverage $cov edges, no crash, hang or sanitizer report"
  # Inputs of at most 100 bytes never make a loader allocate more than 4 MiB at once (model
  # descriptions excepted: a few bytes may describe a large model, bounded by LOWBIT_MAX_MODEL_BYTES).
  if [[ $t != model_description ]]; then
    small=()
    while IFS= read -r -d '' f; do small+=("$f"); done < <(find "$work/corpus/$t" "$here/regressions/$t" -type f -size -101c -print0 2>/dev/null)
    if (( ${#small[@]} > 0 )); then
      "$target" -malloc_limit_mb=4 -rss_limit_mb=2048 "${small[@]}" >"$work/small.log" 2>&1 || { tail -n 40 "$work/small.log"; exit 1; }
      echo "fuzz: $t: ${#small[@]} corpus inputs of at most 100 bytes, none allocates 4 MiB at once"
    fi
  fi
  # LOWBIT_FUZZ_KEEP=DIR keeps each corpus (DIR/<target>: bench/hostile_inputs.py measures the CLI on it).
  if [[ -n ${LOWBIT_FUZZ_KEEP:-} ]]; then mkdir -p "$LOWBIT_FUZZ_KEEP/$t" && cp -r "$work/corpus/$t/." "$work/seeds/$t/." "$LOWBIT_FUZZ_KEEP/$t/"; fi
done
