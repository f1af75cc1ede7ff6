#!/usr/bin/env bash
# End-to-end checks of the lowbit command line: results on stdout, one clear error line on
# stderr with a non-zero exit for bad input, and no half-written files.
# Usage: cli_test.sh LOWBIT_BINARY DATASET_DIR
set -uo pipefail
lowbit=$1
data=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0
passed=0

check() {  # check NAME CONDITION...
  local name=$1; shift
  if "$@"; then passed=$((passed + 1)); else echo "FAIL: $name"; failures=$((failures + 1)); fi
}
# fails NAME EXPECTED_STDERR_SUBSTRING COMMAND...: must exit non-zero with one stderr line containing it.
fails() {
  local name=$1 expected=$2; shift 2
  "$@" >"$work/out" 2>"$work/err"
  local rc=$?
  if [[ $rc -eq 0 ]]; then echo "FAIL: $name: exit code 0"; failures=$((failures + 1)); return; fi
  if ! grep -qF -- "$expected" "$work/err"; then
    echo "FAIL: $name: stderr lacks '$expected':"; cat "$work/err"; failures=$((failures + 1)); return
  fi
  if [[ $(grep -c . "$work/err") -ne 1 ]]; then
    echo "FAIL: $name: expected one line on stderr:"; cat "$work/err"; failures=$((failures + 1)); return
  fi
  passed=$((passed + 1))
}

# A short real run: 600 samples, 1 epoch.
"$lowbit" train --data "$data" --train-samples 600 --epochs 1 --seed 1 --threads 2 --out "$work/m.lbm" --json >"$work/train.out"
check "train exits 0" test $? -eq 0
last=$(tail -n 1 "$work/train.out")
check "train --json last line has test_accuracy" grep -q '"test_accuracy":0\.[0-9]' <<<"$last"
check "train --json last line has train_seconds" grep -q '"train_seconds":' <<<"$last"
check "no terminal escapes when stdout is not a terminal" test "$(grep -c $'\033' "$work/train.out")" -eq 0
check "model file written" test -s "$work/m.lbm"

"$lowbit" eval --model "$work/m.lbm" --data "$data" --json >"$work/eval.out"
check "eval exits 0" test $? -eq 0
check "eval --json has test_accuracy" grep -q '"test_accuracy":0\.[0-9]' <(tail -n 1 "$work/eval.out")
"$lowbit" info --model "$work/m.lbm" --json >"$work/info.out"
check "info --json reports parameters" grep -q '"parameters":52650' "$work/info.out"
"$lowbit" info --model "$work/m.lbm" >"$work/info.txt"
check "info table lists dense_1" grep -q 'dense_1 .*Dense .*\[N, 64\]' "$work/info.txt"

# Bad input: a clear line, non-zero exit, nothing written.
fails "missing model file" "cannot open '$work/absent.lbm'" "$lowbit" eval --model "$work/absent.lbm" --data "$data"
head -c 300 "$work/m.lbm" >"$work/truncated.lbm"
fails "truncated model" "truncated.lbm': " "$lowbit" eval --model "$work/truncated.lbm" --data "$data"
printf 'hello, not a model' >"$work/foreign.lbm"
fails "foreign file" "is not a lowbit model file" "$lowbit" info --model "$work/foreign.lbm"
fails "missing dataset" "does not exist" "$lowbit" train --data "$work/nodata" --out "$work/x.lbm"
fails "bad arch" "neither layer sizes" "$lowbit" train --data "$data" --arch nonsense --out "$work/x.lbm"
fails "arch/data mismatch" "does not match the data" "$lowbit" train --data "$data" --arch 100-10 --out "$work/x.lbm"
fails "missing --out" "--out is required" "$lowbit" train --data "$data"
fails "bad thread count" "--threads" "$lowbit" train --data "$data" --threads 0 --out "$work/x.lbm"
fails "unwritable output" "cannot write" "$lowbit" train --data "$data" --train-samples 64 --epochs 1 --out "$work/no/dir/x.lbm"
check "nothing half-written" test ! -e "$work/x.lbm"
check "no temporary files left" test "$(ls -A "$work" | grep -c tmp)" -eq 0

echo "cli: $passed passed, $failures failed"
[[ $failures -eq 0 ]]
