// Internal: what the quantized ops share (inference-only base classes) and the prepared output
// stage of the integer layers QDense and QConv2D.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "kernels/qgemm.h"
#include "lowbit/quant_params.h"

namespace lowbit::ops {

// Per output channel: the constant that folds the zero points and the int32 bias into the
// accumulator (acc = sum (a - za)(w - zw) + bias = raw - za sum(w) - zw sum(a) + K za zw + bias),
// and the requantization multiplier (s8 output) or the float scale (f32 output).
struct IntegerLayerState : OpState {
  std::vector<int32_t> column_offset, weight_zero_point;
  std::vector<FixedPointMultiplier> multiplier;
  std::vector<float> column_scale;
  bool has_weight_zero_point = false;
  bool f32_output = false, relu = false;
  int32_t input_zero_point = 0, output_zero_point = 0, clamp_min = -128, clamp_max = 127;
};

// The quantized ops are inference only; ops with prepared state run a plain forward() (no
// executor) by preparing on every call.
class InferenceOp : public Op {
 public:
  void backward(const Node& node, std::span<const Tensor* const>, std::span<const Tensor* const>,
                std::span<const Tensor* const>, std::span<Tensor* const>) const override {
    shape_error(node, "quantized graphs are not trainable (use quantization-aware training)");
  }
};
class PreparedInferenceOp : public InferenceOp {
 public:
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    std::vector<const Tensor*> constants(in.begin(), in.end());
    constants[0] = nullptr;  // the activations are never constant
    auto state = prepare(node, constants);
    Workspace workspace;
    forward_prepared(node, state.get(), in, out, workspace);
  }

 protected:
  // prepare() builds state only when every input but the activations (weights, scales, bias) is a
  // constant; otherwise it returns null and forward() prepares on every call.
  static bool constants_known(std::span<const Tensor* const> c) {
    return c.size() < 2 || std::all_of(c.begin() + 1, c.end(), [](const Tensor* t) { return t != nullptr; });
  }
};

inline void expect_dtype(const Node& node, DType actual, DType expected, const char* what) {
  if (actual != expected) shape_error(node, std::string(what) + " must be " + name_of(expected) + ", got " + name_of(actual));
}

// Weight codes [units, packed K] of an integer layer: a weight storage dtype (s8, s4, u4, s2, u2)
// holding at least units packed rows of k codes. Throws a shape error naming the node.
void check_weight_tensor(const Node& node, const Tensor& codes, int64_t k);
// Output dtype of QDense / QConv2D from their input dtypes [x s8, codes, weight_scale f32,
// weight_zero_point s32, optional bias s32] and attribute "output"; the errors name the node.
DType integer_layer_dtype(const Node& node, std::span<const DType> in);
// DynamicQDense / DynamicQConv2D: inputs [x f32, codes, weight_scale f32, optional bias f32], f32
// output; and their attribute "granularity": true for "row" (default: one activation range per
// sample), false for "tensor" (one per batch).
DType dynamic_layer_dtype(const Node& node, std::span<const DType> in);
bool per_row_ranges(const Node& node);

// Activation parameters of a node: 8-bit signed affine, per tensor, from the attributes
// `scale_key` and `zero_point_key`; validated (the error names the node).
QuantParams activation_params(const Node& node, const char* scale_key, const char* zero_point_key);
// Attribute "output": "s8" (default; then output_scale / output_zero_point must be valid) or "f32".
bool f32_output(const Node& node);
// Attribute "activation": "none" (default) or "relu".
bool relu_of(const Node& node);

// Fills the stage of `s` from the node's attributes (activation, output, input_scale /
// input_zero_point, and output_scale / output_zero_point for s8 output) and, per output channel
// (row_sums.size() of them), the sum of the weight codes, the weight scale and zero point and the
// optional int32 bias; k is the reduction length. Throws a shape error naming the node for a scale
// that is not positive and finite.
void prepare_output_stage(const Node& node, std::span<const int32_t> row_sums, const float* weight_scale,
                          const int32_t* weight_zero_point, const int32_t* bias, int64_t k, IntegerLayerState& s);

}  // namespace lowbit::ops
