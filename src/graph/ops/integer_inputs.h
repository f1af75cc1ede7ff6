// Where the integer layers QDense and QConv2D (op version 2) keep their inputs. The quantize pass
// builds this order, the ops read it, and the dequantize pass and the per-layer comparison read the
// activation parameters back from it:
//   [x s8, weight codes, weight_scale f32 [U], weight_zero_point s32 [U],
//    x_scale f32 [], x_zero_point s8 [],
//    y_scale f32 [], y_zero_point s8 []   (present: s8 output; absent: f32 output),
//    bias s32 [U]                         (optional)]
// so 6 inputs (f32 output), 7 (f32 output, bias), 8 (s8 output) or 9 (s8 output, bias). With s8
// output and no bias this is ONNX QLinearMatMul's and QLinearConv's order with the weights moved
// up beside x; the scale and zero point of an activation are tensors, as in ONNX.
#pragma once

#include <cstddef>

namespace lowbit::ops {

struct IntegerLayerInputs {
  static constexpr size_t x = 0, codes = 1, weight_scale = 2, weight_zero_point = 3, x_scale = 4, x_zero_point = 5;
  static constexpr size_t min_count = 6, max_count = 9;
  static constexpr size_t none = static_cast<size_t>(-1);
  size_t y_scale = none, y_zero_point = none, bias = none;

  bool s8_output() const { return y_scale != none; }
  bool has_bias() const { return bias != none; }
  // The layout of a node with `count` inputs (min_count..max_count; others are the caller's error).
  static IntegerLayerInputs of(size_t count) {
    IntegerLayerInputs l;
    if (count >= 8) {
      l.y_scale = 6;
      l.y_zero_point = 7;
    }
    if (count == 7 || count == 9) l.bias = count - 1;
    return l;
  }
};

}  // namespace lowbit::ops
