#!/usr/bin/env bash
# Runs the libFuzzer targets built in BUILD_DIR (configure: -DCMAKE_CXX_COMPILER=clang++
# -DLOWBIT_FUZZ=ON -DLOWBIT_SANITIZE=address,undefined): first every input of the regression corpus
# (tests/fuzz/regressions/<target>, inputs that once crashed), then SECONDS of fuzzing per target from
# seeds (the repository's models and a few of ONNX's node tests), in a scratch corpus.
# Usage: run_fuzzers.sh BUILD_DIR SECONDS. A crash leaves its input in BUILD_DIR/fuzz-artifacts:
# fix the bug, then add the input to the regression corpus.
set -euo pipefail
build=$1 seconds=$2
here=$(cd "$(dirname "$0")" && pwd)
artifacts="$build/fuzz-artifacts"
mkdir -p "$artifacts"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1

target="$build/tests/fuzz/lowbit_fuzz_onnx_import"
regressions=("$here/regressions/onnx_import"/*)
"$target" "${regressions[@]}" >/dev/null 2>"$work/regress.log" || { cat "$work/regress.log"; exit 1; }
echo "fuzz: onnx_import: ${#regressions[@]} regression inputs pass"
mkdir -p "$work/corpus"
cp "$here"/../data/onnx/*.onnx "$work/corpus/"
nodes=/usr/share/libonnx-testdata/data/node
for t in relu gemm_default_no_bias conv_with_strides_padding reshape_negative_dim slice maxpool_2d_pads qlinearconv \
         dequantizelinear_axis concat_1d_axis_0 averagepool_2d_ceil; do
  [[ -f "$nodes/test_$t/model.onnx" ]] && cp "$nodes/test_$t/model.onnx" "$work/corpus/node_$t.onnx"
done
"$target" "$work/corpus" -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=1000000 \
  -artifact_prefix="$artifacts/" -print_final_stats=1 >"$work/fuzz.log" 2>&1 || { tail -n 60 "$work/fuzz.log"; exit 1; }
echo "fuzz: onnx_import: $(grep -o 'Done [0-9]* runs in [0-9]* second(s)' "$work/fuzz.log"), no crash, hang or sanitizer report"
