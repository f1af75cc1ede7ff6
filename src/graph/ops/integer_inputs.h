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

// Where QAttention (graph/ops/attention.cpp), the integer form of Attention, keeps its inputs:
//   [q s8, k s8, v s8, q_scale f32 [], q_zero_point s8 [], k_scale, k_zero_point, v_scale, v_zero_point,
//    y_scale f32 [], y_zero_point s8 []   (present: s8 output; absent: f32 output),
//    mask f32                             (optional, additive, as Attention's)]
// so 9 inputs (f32 output), 10 (f32 output, mask), 11 (s8 output) or 12 (s8 output, mask).
struct AttentionInputs {
  static constexpr size_t q = 0, k = 1, v = 2, q_scale = 3, q_zero_point = 4, k_scale = 5, k_zero_point = 6, v_scale = 7,
                          v_zero_point = 8;
  static constexpr size_t min_count = 9, max_count = 12;
  static constexpr size_t none = static_cast<size_t>(-1);
  size_t y_scale = none, y_zero_point = none, mask = none;

  bool s8_output() const { return y_scale != none; }
  bool has_mask() const { return mask != none; }
  static AttentionInputs of(size_t count) {
    AttentionInputs l;
    if (count >= 11) {
      l.y_scale = 9;
      l.y_zero_point = 10;
    }
    if (count == 10 || count == 12) l.mask = count - 1;
    return l;
  }
};

}  // namespace lowbit::ops
