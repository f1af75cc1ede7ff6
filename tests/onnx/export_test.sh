#!/usr/bin/env bash
# lowbit's ONNX exports in ONNX Runtime: every profile (float, qdq, qoperator, symmetric) of an MLP
# and a CNN, 8-bit and 4-bit, must pass onnx.checker (full_check) and give the same top-1 classes as
# lowbit on >= 99.5% of the test set; the int8 QDQ export's accuracy in ONNX Runtime must be within
# 0.1 point of lowbit's. Also: PyTorch's MLP imported, quantized to int8 and exported as QDQ keeps
# PyTorch's accuracy within 0.2 points in ONNX Runtime.
# Usage: export_test.sh LOWBIT_BINARY DATASET_DIR PYTHON (a python with onnx and onnxruntime)
set -euo pipefail
lowbit=$1 data=$2 python=$3
here=$(cd "$(dirname "$0")" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
failures=0

check() {  # check MODEL.onnx CLASSES.csv [extra check_export.py options]
  local model=$1 classes=$2; shift 2
  if out=$("$python" "$here/check_export.py" "$model" --data "$data" --classes "$classes" "$@" 2>"$work/err"); then
    echo "ok   $out"
  else
    echo "FAIL $out"; cat "$work/err"; failures=$((failures + 1))
  fi
}
accuracy() { grep -o '"test_accuracy":[0-9.]*' "$1" | tail -n 1 | cut -d: -f2; }
# ONNX Runtime's u8 x s8 and fused int8 x int8 kernels saturate 16-bit pair sums on CPUs without
# AVX-512 VNNI (its documented limitation, reproduced bit for bit on a Zen 3): there, and only
# there, two checks below are relaxed. On a VNNI CPU every check holds the full bar.
vnni=0; grep -qw avx512_vnni /proc/cpuinfo && vnni=1

"$lowbit" train --data "$data" --train-samples 20000 --epochs 2 --seed 1 --threads 2 --out "$work/mlp.lbm" >/dev/null
"$lowbit" train --data "$data" --arch "$here/../../examples/models/reference-cnn.json" --train-samples 6000 --epochs 1 --seed 1 \
  --threads 2 --out "$work/cnn.lbm" >/dev/null
for m in mlp cnn; do
  "$lowbit" quantize --model "$work/$m.lbm" --calib-data "$data" --calib-samples 500 --out "$work/$m-q8.lbm" --json >"$work/$m-q8.out"
  "$lowbit" quantize --model "$work/$m.lbm" --calib-data "$data" --calib-samples 500 --bits 4 --out "$work/$m-q4.lbm" >/dev/null
  "$lowbit" quantize --model "$work/$m.lbm" --calib-data "$data" --calib-samples 500 --activations symmetric \
    --out "$work/$m-sym.lbm" >/dev/null
  "$lowbit" quantize --model "$work/$m.lbm" --mode dynamic --granularity tensor --out "$work/$m-dyn.lbm" >/dev/null
  "$lowbit" quantize --model "$work/$m.lbm" --calib-data "$data" --calib-samples 500 --bits 4 --group-size 32 --affine \
    --out "$work/$m-b32.lbm" >/dev/null
  for v in "" -q8 -q4 -sym -dyn -b32; do
    "$lowbit" predict --model "$work/$m$v.lbm" --data "$data" --out "$work/$m$v.csv" >/dev/null
  done
  "$lowbit" export --model "$work/$m.lbm" --out "$work/$m.onnx" >/dev/null
  check "$work/$m.onnx" "$work/$m.csv"
  for v in -q8 -q4; do
    for f in qdq qoperator; do
      "$lowbit" export --model "$work/$m$v.lbm" --format $f --out "$work/$m$v-$f.onnx" >/dev/null
      check "$work/$m$v-$f.onnx" "$work/$m$v.csv"
    done
  done
  "$lowbit" export --model "$work/$m-q4.lbm" --format qdq --opset 21 --out "$work/$m-q4-int4.onnx" >/dev/null
  check "$work/$m-q4-int4.onnx" "$work/$m-q4.csv"
  # Block weights (dense layers in 4-bit affine blocks of 32): a blocked DequantizeLinear of uint4
  # codes (opset 21) + MatMul; ORT computes with f32 activations where lowbit quantizes them per
  # block to int8, hence the 99% bar. Before opset 21 the export says which opset it needs.
  "$lowbit" export --model "$work/$m-b32.lbm" --format qdq --opset 21 --out "$work/$m-b32.onnx" >/dev/null
  check "$work/$m-b32.onnx" "$work/$m-b32.csv" --min-agreement 0.99
  if "$lowbit" export --model "$work/$m-b32.lbm" --format qdq --out "$work/$m-b32-13.onnx" 2>"$work/b32.err" ||
     ! grep -q "needs opset 21" "$work/b32.err" || [[ -e "$work/$m-b32-13.onnx" ]]; then
    echo "FAIL block weights at opset 13: no clear error"; cat "$work/b32.err"; failures=$((failures + 1))
  else
    echo "ok   block weights at opset 13: $(cat "$work/b32.err")"
  fi
  for f in qdq qoperator; do
    # With zero point 0 every activation meets the saturation, so without VNNI the symmetric QDQ file
    # is checked without ORT's QDQ fusion (93.8% agreement with it on a Zen 3, 100% without).
    opt=all; [[ $f == qdq && $vnni == 0 ]] && opt=basic
    "$lowbit" export --model "$work/$m-sym.lbm" --format $f --symmetric --out "$work/$m-sym-$f.onnx" >/dev/null
    check "$work/$m-sym-$f.onnx" "$work/$m-sym.csv" --ort-optimization $opt
    # Dynamic layers run ORT's u8 x s8 MatMulInteger / ConvInteger: without VNNI 99.46% (MLP) and
    # 99.84% (CNN) agreement on a Zen 3, so the bar there is 99%.
    bar=0.995; [[ $vnni == 0 ]] && bar=0.99
    "$lowbit" export --model "$work/$m-dyn.lbm" --format $f --out "$work/$m-dyn-$f.onnx" >/dev/null
    check "$work/$m-dyn-$f.onnx" "$work/$m-dyn.csv" --min-agreement $bar
  done
  # The int8 QDQ export keeps lowbit's accuracy within 0.1 point in ONNX Runtime.
  check "$work/$m-q8-qdq.onnx" "$work/$m-q8.csv" --accuracy "$(accuracy "$work/$m-q8.out")" --max-drop 0.001
done

# PyTorch's MLP: import, quantize (full int8), export QDQ: within 0.2 points of PyTorch's accuracy.
torch_mlp=$here/../data/onnx/mlp_op13.onnx
"$lowbit" import "$torch_mlp" --out "$work/torch-mlp.lbm" >/dev/null
"$lowbit" quantize --model "$work/torch-mlp.lbm" --calib-data "$data" --out "$work/torch-mlp-q8.lbm" >/dev/null
"$lowbit" predict --model "$work/torch-mlp-q8.lbm" --data "$data" --out "$work/torch-mlp-q8.csv" >/dev/null
"$lowbit" export --model "$work/torch-mlp-q8.lbm" --format qdq --out "$work/torch-mlp-q8.onnx" >/dev/null
torch_accuracy=$("$python" -c "import json; print(json.load(open('$here/../data/onnx/accuracy.json'))['mlp_op13.onnx'])")
check "$work/torch-mlp-q8.onnx" "$work/torch-mlp-q8.csv" --accuracy "$torch_accuracy" --max-drop 0.002

# A small vision transformer with its attention quantized (QAttention: the attention spelled out
# with q, k, v dequantized and its probabilities on a QDQ pair; GELU needs opset 20): qdq and
# qoperator give lowbit's classes; the symmetric profile puts the probabilities on 1/127 instead
# of 1/255, hence the 99% bar there.
cat >"$work/vit.json" <<'JSON'
{"input": {"name": "image", "shape": [28, 28], "scale": 0.00392156862745098},
 "layers": [{"type": "reshape", "shape": [1, 28, 28]}, {"type": "patches", "size": 7}, {"type": "dense", "units": 16},
            {"type": "position_embedding"}, {"type": "transformer_block", "heads": 2, "mlp": 32}, {"type": "layernorm"},
            {"type": "mean_pool"}, {"type": "dense", "units": 10}, {"type": "softmax"}]}
JSON
"$lowbit" train --data "$data" --arch "$work/vit.json" --train-samples 6000 --epochs 1 --seed 1 --threads 2 --out "$work/vit.lbm" >/dev/null
for v in "" -sym; do
  act=affine; [[ $v == -sym ]] && act=symmetric
  "$lowbit" quantize --model "$work/vit.lbm" --calib-data "$data" --calib-samples 500 --activations $act --out "$work/vit$v-q8.lbm" >/dev/null
  "$lowbit" predict --model "$work/vit$v-q8.lbm" --data "$data" --out "$work/vit$v-q8.csv" >/dev/null
done
grep -q QAttention <("$lowbit" info --model "$work/vit-q8.lbm") || { echo "FAIL the ViT's attention was not quantized"; failures=$((failures + 1)); }
for f in qdq qoperator; do
  "$lowbit" export --model "$work/vit-q8.lbm" --format $f --opset 20 --out "$work/vit-q8-$f.onnx" >/dev/null
  check "$work/vit-q8-$f.onnx" "$work/vit-q8.csv"
done
"$lowbit" export --model "$work/vit-sym-q8.lbm" --format qdq --symmetric --opset 20 --out "$work/vit-sym-q8.onnx" >/dev/null
check "$work/vit-sym-q8.onnx" "$work/vit-sym-q8.csv" --min-agreement 0.99

echo "onnx export: $failures failed"
[[ $failures -eq 0 ]]
