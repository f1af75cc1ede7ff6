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
"$lowbit" predict --model "$work/m.lbm" --data "$data" --out "$work/pred.csv" --json >"$work/pred.out"
check "predict exits 0" test $? -eq 0
check "predict writes a header and one line per test sample" test "$(wc -l <"$work/pred.csv")" -eq 10001
check "predict's lines are index,class,label" test "$(sed -n 1p "$work/pred.csv"; sed -n 2p "$work/pred.csv" | cut -d, -f1,3)" = $'index,class,label\n0,9'
eval_accuracy=$(grep -o '"test_accuracy":[0-9.]*' <(tail -n 1 "$work/eval.out"))
check "predict's accuracy is eval's" grep -qF "$eval_accuracy," <(tail -n 1 "$work/pred.out")
"$lowbit" predict --model "$work/m.lbm" --data "$data" --limit 5 --out "$work/pred5.csv" >/dev/null
check "predict --limit 5 writes 5 predictions" test "$(wc -l <"$work/pred5.csv")" -eq 6
check "predict --limit 5 writes the same first lines" test "$(cat "$work/pred5.csv")" = "$(head -n 6 "$work/pred.csv")"
fails "predict to an unwritable file" "cannot write" "$lowbit" predict --model "$work/m.lbm" --data "$data" --limit 5 --out "$work/no/dir/p.csv"
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

# Quantization commands.
"$lowbit" calibrate --model "$work/m.lbm" --data "$data" --method kl --samples 200 --out "$work/ranges.json" >/dev/null
check "calibrate writes ranges" grep -q '"format": "lowbit-calibration"' "$work/ranges.json"
"$lowbit" quantize --model "$work/m.lbm" --out "$work/q.lbm" --ranges "$work/ranges.json" --calib-data "$data" --json >"$work/q.out"
check "quantize --ranges works" grep -q '"test_accuracy":0\.[0-9]' <(tail -n 1 "$work/q.out")
check "quantize writes its plan" test -s "$work/q.lbm.plan.json"
"$lowbit" info --model "$work/q.lbm" >"$work/qinfo.txt"
check "info shows packed low-bit and int8 tensors" grep -q 'QDense' "$work/qinfo.txt"
"$lowbit" quantize --model "$work/m.lbm" --out "$work/q4.lbm" --bits 4 --calib-data "$data" --calib-samples 200 >/dev/null
check "4-bit weights are stored as s4" grep -q 's4\[' <("$lowbit" info --model "$work/q4.lbm")
"$lowbit" quantize --model "$work/m.lbm" --out "$work/q3.lbm" --bits 3 --calib-data "$data" --calib-samples 200 >"$work/q3.out"
check "quantize --bits 3 says which defaults it chose" grep -q 'defaults for 3-bit weights: affine weights (--symmetric to change), gptq rounding' "$work/q3.out"
check "the plan records them" grep -q '"rounding": "gptq"' "$work/q3.lbm.plan.json"
"$lowbit" quantize --model "$work/m.lbm" --out "$work/q4a.lbm" --bits 4 --rounding gptq --act-order --calib-data "$data" --calib-samples 200 >/dev/null
check "quantize --act-order is recorded in the plan" grep -q '"act_order": true' "$work/q4a.lbm.plan.json"
"$lowbit" quantize --model "$work/m.lbm" --out "$work/q4b.lbm" --plan "$work/q4a.lbm.plan.json" --calib-data "$data" --calib-samples 200 >/dev/null
check "the plan reproduces the act-order model byte for byte" cmp -s "$work/q4a.lbm" "$work/q4b.lbm"
"$lowbit" quantize --model "$work/m.lbm" --out "$work/q3n.lbm" --bits 3 --symmetric --rounding nearest --calib-data "$data" --calib-samples 200 >"$work/q3n.out"
check "given options are not defaulted" test "$(grep -c 'defaults for' "$work/q3n.out")" -eq 0
"$lowbit" quantize --model "$work/m.lbm" --out "$work/qb.lbm" --bits 4 --group-size 32 --calib-data "$data" --calib-samples 200 --json >"$work/qb.out"
check "quantize --group-size 32 reports its accuracy" grep -q '"test_accuracy":0\.[0-9]' <(tail -n 1 "$work/qb.out")
"$lowbit" info --model "$work/qb.lbm" >"$work/qbinfo.txt"
# dense_1: 784 inputs in 25 blocks of 32 (the last one padded): 400 code bytes + 25 fp16 scales per row = 4.59 bits per weight
check "block weights are BlockQDense layers at 4.59 bits per weight" grep -q 'dense_1 .*BlockQDense .* 4\.59 ' "$work/qbinfo.txt"
check "info --json reports bits per weight" grep -q '"bits_per_weight":4\.5' <("$lowbit" info --model "$work/qb.lbm" --json)
fails "group size 48" "--group-size" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --bits 4 --group-size 48 --ranges "$work/ranges.json"
printf '{"format": "lowbit-quantization-plan", "version": 1, "defaults": {"weight_bits": 4, "group_size": 0}}' >"$work/bad-plan3.json"
fails "plan with group size 0" "'group_size' must be 32, 64 or 128" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --plan "$work/bad-plan3.json" --ranges "$work/ranges.json"
printf '{"format": "lowbit-quantization-plan", "version": 1, "defaults": {"weight_bits": 5, "group_size": 32}}' >"$work/bad-plan4.json"
fails "plan with 5-bit blocks" "have 2, 3 or 4 bits" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --plan "$work/bad-plan4.json" --ranges "$work/ranges.json"
"$lowbit" quantize --model "$work/m.lbm" --out "$work/qf.lbm" --ranges "$work/ranges.json" --float-layers 'dense_3' >"$work/qf.out"
check "quantize --float-layers keeps the layer float" grep -qE '^  dense_3 +float$' "$work/qf.out"
fails "--float-layers beside --plan" "float layers are chosen here or by the plan" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --float-layers dense_3 --plan "$work/q.lbm.plan.json" --ranges "$work/ranges.json"
fails "--float-layers naming no layer" "matches no quantizable layer" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --float-layers 'conv*' --ranges "$work/ranges.json"
"$lowbit" dequantize --model "$work/q.lbm" --out "$work/dq.lbm" >/dev/null
check "dequantize gives a float model" test "$(grep -c QDense <("$lowbit" info --model "$work/dq.lbm"))" -eq 0
"$lowbit" compare --model "$work/q.lbm" --against "$work/m.lbm" --data "$data" --json >"$work/cmp.out"
check "compare reports agreement" grep -q '"agreement":0\.9' <(tail -n 1 "$work/cmp.out")
printf '{"format": "lowbit-calibration", "version": 1, "ranges": {"image": {"min": 1}}}' >"$work/bad-ranges.json"
fails "bad ranges file" "bad-ranges.json': ranges.image must be" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --ranges "$work/bad-ranges.json"
printf '{"format": "lowbit-quantization-plan", "version": 1, "layers": {"dense_9": {}}}' >"$work/bad-plan.json"
fails "plan naming a missing layer" "names layer 'dense_9'" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --plan "$work/bad-plan.json" --ranges "$work/ranges.json"
printf '{"format": "lowbit-quantization-plan", "version": 1, "layers": {"dense_1": {"weight_bits": 12}}}' >"$work/bad-plan2.json"
fails "plan with bad bits" "'weight_bits' must be 2..8" "$lowbit" quantize --model "$work/m.lbm" --out "$work/x.lbm" --plan "$work/bad-plan2.json" --ranges "$work/ranges.json"
check "nothing written for a bad plan" test ! -e "$work/x.lbm"
# A dataset of 14x14 images: the model expects 28x28.
mkdir -p "$work/small"
{ printf '\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00\x00\x0e\x00\x00\x00\x0e'; head -c 392 /dev/zero; } >"$work/small/t10k-images-idx3-ubyte"
{ printf '\x00\x00\x08\x01\x00\x00\x00\x02'; head -c 2 /dev/zero; } >"$work/small/t10k-labels-idx1-ubyte"
cp "$work/small/t10k-images-idx3-ubyte" "$work/small/train-images-idx3-ubyte"
cp "$work/small/t10k-labels-idx1-ubyte" "$work/small/train-labels-idx1-ubyte"
fails "model/data shape mismatch" "expects samples of shape [28, 28], the data has [14, 14]" "$lowbit" eval --model "$work/q.lbm" --data "$work/small"
fails "predict: model/data shape mismatch" "input 'image' expects samples of shape [28, 28]" "$lowbit" predict --model "$work/m.lbm" \
  --data "$work/small" --out "$work/x.csv"
check "nothing written by failed predict" test ! -e "$work/x.csv"
# An unreachable --max-drop still writes the best plan, warns, and exits 3.
"$lowbit" quantize --model "$work/m.lbm" --out "$work/s.lbm" --calib-data "$data" --calib-samples 200 --validation-samples 500 \
  --max-drop -50 --time-budget 20 >/dev/null 2>"$work/s.err"
rc=$?
check "unreachable --max-drop exits 3" test $rc -eq 3
check "unreachable --max-drop warns" grep -q "warning: no plan met --max-drop" "$work/s.err"
check "unreachable --max-drop still writes the model" test -s "$work/s.lbm"

# ONNX: export and import back (native -> ONNX -> native gives the same predictions), bad files.
if "$lowbit" import --help >/dev/null 2>&1; then
  "$lowbit" export --model "$work/m.lbm" --out "$work/m.onnx" --json >"$work/export.out"
  check "export float exits 0" test $? -eq 0
  check "export --json reports the opset" grep -q '"opset":13' <(tail -n 1 "$work/export.out")
  "$lowbit" import "$work/m.onnx" --out "$work/m2.lbm" --json >"$work/import.out"
  check "import exits 0" test $? -eq 0
  check "import --json lists the ops" grep -q '"Dense":3' <(tail -n 1 "$work/import.out")
  "$lowbit" predict --model "$work/m2.lbm" --data "$data" --out "$work/pred-onnx.csv" >/dev/null
  check "native -> ONNX -> native predicts the same classes" cmp -s "$work/pred.csv" "$work/pred-onnx.csv"
  "$lowbit" predict --model "$work/m.onnx" --data "$data" --out "$work/pred-onnx2.csv" >/dev/null
  check "--model takes an .onnx file" cmp -s "$work/pred.csv" "$work/pred-onnx2.csv"
  "$lowbit" export --model "$work/q4.lbm" --out "$work/q4.onnx" --format qdq >"$work/export4.out"
  check "4-bit export notes the int8 codes" grep -q "note: packed s4 weights are exported as int8 codes" "$work/export4.out"
  "$lowbit" export --model "$work/q.lbm" --out "$work/q.onnx" --format qoperator >/dev/null
  check "qoperator export exits 0" test $? -eq 0
  fails "qdq export of a float model" "quantize it first" "$lowbit" export --model "$work/m.lbm" --out "$work/x.onnx" --format qdq
  head -c 1000 "$work/m.onnx" >"$work/truncated.onnx"
  fails "truncated ONNX file" "truncated.onnx: not an ONNX model" "$lowbit" import "$work/truncated.onnx" --out "$work/x.lbm"
  head -c 4096 /dev/urandom >"$work/random.onnx"
  "$lowbit" import "$work/random.onnx" --out "$work/x.lbm" >/dev/null 2>"$work/err"
  check "random bytes: an error (bad input, exit 4), not a crash" test $? -eq 4
  check "nothing written for bad ONNX files" test ! -e "$work/x.lbm" -a ! -e "$work/x.onnx"
fi

# lowbit run: named arrays from numpy in (np.savez, np.savez_compressed, np.save), every output by
# name out, read back by numpy; bad feeds give one error line and no output file.
py=/usr/bin/python3
if [[ -x $py ]] && "$py" -c "import numpy" 2>/dev/null; then
  "$py" - "$data" "$work" <<'EOF'
import gzip, os, sys
import numpy as np
data, work = sys.argv[1], sys.argv[2]
name = os.path.join(data, "t10k-images-idx3-ubyte")
raw = open(name, "rb").read() if os.path.exists(name) else gzip.open(name + ".gz").read()
images = np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 28, 28)[:300]
np.savez(os.path.join(work, "feeds.npz"), image=images)
np.savez_compressed(os.path.join(work, "feeds_z.npz"), image=images)
np.save(os.path.join(work, "image.npy"), images)
np.save(os.path.join(work, "wide.npy"), images.astype(np.float64))
np.savez(os.path.join(work, "wrong.npz"), pixels=images)
np.savez(os.path.join(work, "flat.npz"), image=images.reshape(300, 784))
EOF
  "$lowbit" run --model "$work/m.lbm" --inputs "$work/feeds.npz" --out "$work/out.npz" --threads 2 --json >"$work/run.out"
  check "run exits 0" test $? -eq 0
  check "run --json lists the outputs" grep -q '"shape":\[300,10\]' <(tail -n 1 "$work/run.out")
  "$lowbit" run --model "$work/m.lbm" --inputs "$work/feeds.npz" --out "$work/out_r.npz" --repeat 3 --json >"$work/run_r.out"
  check "run --repeat reports the fastest and the median of its runs" grep -q '3 runs: fastest .* ms, median .* ms' "$work/run_r.out"
  check "run --repeat --json has them too" grep -q '"runs":3' <(tail -n 1 "$work/run_r.out")
  "$lowbit" run --model "$work/m.lbm" --inputs "$work/feeds.npz" --out "$work/out_p.npz" --repeat 3 --profile --json >"$work/run_p.out"
  check "run --profile times the runs after the first, by op type" grep -q '^profile (.* ms per run in the nodes, 2 runs timed)' "$work/run_p.out"
  check "run --profile lists the slowest nodes" grep -q 'slowest nodes:' "$work/run_p.out"
  check "run --profile --json gives every node's time" "$py" -c '
import json, sys
j = json.loads(open(sys.argv[1]).read().splitlines()[-1])["profile"]
assert len(j["nodes"]) >= 3 and all(n["ms_per_run"] >= 0 for n in j["nodes"]), j
assert abs(sum(n["ms_per_run"] for n in j["nodes"]) - j["ms_per_run"]) < 1e-6 * max(1.0, j["ms_per_run"]), j
' "$work/run_p.out"
  "$lowbit" run --model "$work/m.lbm" --inputs "$work/feeds_z.npz" --out "$work/out_z.npz" >/dev/null
  "$lowbit" run --model "$work/m.lbm" --inputs "$work/image.npy" --out "$work/out.npy" >/dev/null
  check "run's outputs (numpy.load) are the model's predictions" "$py" - "$work" <<'EOF'
import sys
import numpy as np
work = sys.argv[1]
a = np.load(f"{work}/out.npz")
out = a[a.files[0]]
assert out.shape == (300, 10) and out.dtype == np.float32, (out.shape, out.dtype)
assert np.array_equal(out, np.load(f"{work}/out_z.npz")[a.files[0]]) and np.array_equal(out, np.load(f"{work}/out.npy"))
pred = [int(line.split(",")[1]) for line in open(f"{work}/pred.csv").read().split()[1:301]]
assert list(out.argmax(1)) == pred, "classes differ from lowbit predict's"
EOF
  fails "sweep: a bit width it cannot make" "bits must be 8, 6, 4, 3 or 2, got 5" "$lowbit" sweep --model "$work/m.lbm" --data "$data" --bits 8,5 --out "$work/sw"
  fails "sweep: an unknown granularity" "granularity must be per-channel" "$lowbit" sweep --model "$work/m.lbm" --data "$data" --granularity per-row --out "$work/sw"
  fails "sweep: an empty list entry" "--modes: an empty entry" "$lowbit" sweep --model "$work/m.lbm" --data "$data" --modes full,,dynamic --out "$work/sw"
  fails "run: a float64 array" "dtype '<f8' is not supported" "$lowbit" run --model "$work/m.lbm" --inputs "$work/wide.npy" --out "$work/bad.npz"
  fails "run: no array for an input" "no array for input 'image'" "$lowbit" run --model "$work/m.lbm" --inputs "$work/wrong.npz" --out "$work/bad.npz"
  fails "run: a shape the model does not take" "image" "$lowbit" run --model "$work/m.lbm" --inputs "$work/flat.npz" --out "$work/bad.npz"
  fails "run: a model file as feeds" "not an .npz archive" "$lowbit" run --model "$work/m.lbm" --inputs "$work/m.lbm" --out "$work/bad.npz"
  check "nothing written by failed runs" test ! -e "$work/bad.npz"
else
  echo "SKIP: lowbit run checks (/usr/bin/python3 with numpy is missing)"
fi

# A model with named inputs (a BERT from PyTorch) calibrates on an .npz of them: static int8, with
# SmoothQuant (its post-norm LayerNorms feed the Dense layers through a Mul), and GPTQ 4-bit blocks.
bert=$(cd "$(dirname "$0")/../data/onnx" && pwd)
if "$lowbit" import --help >/dev/null 2>&1 && [[ -f $bert/bert_tiny.onnx ]]; then
  "$lowbit" quantize --model "$bert/bert_tiny.onnx" --mode full --calib-data "$bert/bert_tiny.inputs0.npz" --smooth 0.5 \
    --out "$work/bert_s8.lbm" --json >"$work/bert_s8.out"
  check "static int8 of a BERT calibrated on an .npz exits 0" test $? -eq 0
  check "--smooth reports the LayerNorms it smoothed" grep -q 'smoothed (alpha 0.5) the outputs of 4 LayerNorm' "$work/bert_s8.out"
  check "the smoothed static BERT has integer layers and Mul nodes" grep -q 'QDense' <("$lowbit" info --model "$work/bert_s8.lbm")
  "$lowbit" run --model "$work/bert_s8.lbm" --inputs "$bert/bert_tiny.inputs1.npz" --out "$work/bert_out.npz" >/dev/null
  check "the static BERT runs on other inputs" test -s "$work/bert_out.npz"
  "$lowbit" quantize --model "$bert/bert_tiny.onnx" --mode dynamic --bits 4 --group-size 32 --rounding gptq \
    --calib-data "$bert/bert_tiny.inputs0.npz" --out "$work/bert_b4.lbm" >/dev/null
  check "GPTQ 4-bit blocks of a BERT calibrated on an .npz" grep -q 'BlockQDense' <("$lowbit" info --model "$work/bert_b4.lbm")
  fails "--smooth in dynamic mode" "for static quantization" "$lowbit" quantize --model "$bert/bert_tiny.onnx" --mode dynamic \
    --smooth 0.5 --calib-data "$bert/bert_tiny.inputs0.npz" --out "$work/x.lbm"
  fails "an .npz without the model's inputs" "the data has no input 'input_ids'" "$lowbit" quantize --model "$bert/bert_tiny.onnx" \
    --calib-data "$bert/bert_tiny.outputs0.npz" --out "$work/x.lbm"
  check "nothing written by failed quantize" test ! -e "$work/x.lbm"
fi

# Learning under compression: qat and distill.
"$lowbit" qat --model "$work/m.lbm" --data "$data" --bits 4 --epochs 1 --train-samples 2000 --threads 2 \
  --out "$work/qat.lbm" --json >"$work/qat.out"
check "qat exits 0" test $? -eq 0
check "qat reports the integer model's agreement with the QAT model" grep -qE '"agreement":(1|0\.99[5-9])' <(tail -n 1 "$work/qat.out")
check "qat writes an integer model with 4-bit weights" grep -q 's4\[' <("$lowbit" info --model "$work/qat.lbm")
fails "qat on a quantized model" "is not a float model" "$lowbit" qat --model "$work/q.lbm" --data "$data" --out "$work/x.lbm"
fails "qat --act-bits other than 8" "--act-bits" "$lowbit" qat --model "$work/m.lbm" --act-bits 4 --out "$work/x.lbm"
check "nothing written by failed qat" test ! -e "$work/x.lbm"
"$lowbit" distill --teacher "$work/m.lbm" --student 784-16-10 --data "$data" --epochs 1 --train-samples 2000 --threads 2 \
  --out "$work/d.lbm" --json >"$work/d.out"
check "distill exits 0" test $? -eq 0
check "distill writes the teacher-logit cache" test -s "$work/m.lbm.logits"
check "distill --json reports accuracy" grep -q '"test_accuracy":0\.[0-9]' <(tail -n 1 "$work/d.out")
"$lowbit" distill --teacher "$work/m.lbm" --student 784-16-10 --data "$data" --epochs 1 --train-samples 2000 --out "$work/d2.lbm" >"$work/d2.out"
check "distill reuses the cache" grep -q "read from the cache" "$work/d2.out"
"$lowbit" train --data "$data" --train-samples 600 --epochs 1 --seed 2 --threads 2 --out "$work/m.lbm" >/dev/null
"$lowbit" distill --teacher "$work/m.lbm" --student 784-16-10 --data "$data" --epochs 1 --train-samples 2000 --out "$work/d3.lbm" >"$work/d3.out"
check "a retrained teacher invalidates the cache" grep -q "another teacher or other data" "$work/d3.out"
"$lowbit" distill --teacher "$work/m.lbm" --student "$work/d.lbm" --data "$data" --epochs 0 --bits 2 --qat-epochs 1 \
  --train-samples 2000 --out "$work/d2bit.lbm" --json >"$work/d2bit.out"
check "distill --bits 2 writes a 2-bit integer model" grep -q 's2\[' <("$lowbit" info --model "$work/d2bit.lbm")
check "distill --bits 2 learns the step sizes by default, and says so" grep -q 'defaults for 2-bit weights: learned step sizes' "$work/d2bit.out"
check "distill --bits 2 --json reports lsq" grep -q '"lsq":true' <(tail -n 1 "$work/d2bit.out")
fails "distill --epochs 0 needs a trained student" "needs a trained student" "$lowbit" distill --teacher "$work/m.lbm" --epochs 0 --out "$work/x.lbm"
fails "distill with an unwritable cache" "cannot write" "$lowbit" distill --teacher "$work/m.lbm" --teacher-cache "$work/no/dir/c" \
  --train-samples 100 --epochs 1 --out "$work/x.lbm"
check "nothing written by failed distill" test ! -e "$work/x.lbm"

echo "cli: $passed passed, $failures failed"
[[ $failures -eq 0 ]]
