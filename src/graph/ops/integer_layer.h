// Internal: what the quantized ops share (inference-only base classes) and the prepared output
// stage of the integer layers QDense and QConv2D.
#pragma once

#include <algorithm>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/integer_inputs.h"
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
  bool differentiable_input(int) const override { return false; }
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
// The check that a value of ONNX's integer ops (integer_ops.cpp) is 8-bit codes, u8 or s8.
void expect_codes(const Node& node, DType d, const char* what);

// Weight codes [units, packed K] of an integer layer: a weight storage dtype (s8, s4, u4, s2, u2)
// holding at least units packed rows of k codes. Throws a shape error naming the node.
void check_weight_tensor(const Node& node, const Tensor& codes, int64_t k);
// QDense / QConv2D: the layout of their inputs (integer_inputs.h) after checking the count and the
// shapes of the activation parameters (scalars) and of the bias ([units]); the errors name the node.
IntegerLayerInputs integer_layer_inputs(const Node& node, std::span<const Shape> in, int64_t units);
// Output dtype of QDense / QConv2D from their input dtypes (s8 when y_scale / y_zero_point are
// inputs, else f32); the errors name the node.
DType integer_layer_dtype(const Node& node, std::span<const DType> in);
// DynamicQDense / DynamicQConv2D: inputs [x f32, codes, weight_scale f32, optional bias f32], f32
// output; and their attribute "granularity": true for "row" (default: one activation range per
// sample), false for "tensor" (one per batch).
DType dynamic_layer_dtype(const Node& node, std::span<const DType> in);
bool per_row_ranges(const Node& node);

// 8-bit signed affine per-tensor parameters from a scale tensor (f32, one element) and a zero
// point tensor (s8, one element); validated (the errors name the node and `what`).
QuantParams activation_params(const Node& node, const Tensor& scale, const Tensor& zero_point, const std::string& what);
// Attribute "activation": "none" (default) or "relu".
bool relu_of(const Node& node);

// Fills the stage of `s` from the node's activation attribute and its constant inputs `c`
// (integer_inputs.h: weight scales and zero points, x_scale / x_zero_point, y_scale /
// y_zero_point for s8 output, the optional int32 bias), per output channel (row_sums.size() of
// them, the sums of the weight codes); k is the reduction length. Throws a shape error naming the
// node for a scale that is not positive and finite.
void prepare_output_stage(const Node& node, std::span<const int32_t> row_sums, std::span<const Tensor* const> c, int64_t k,
                          IntegerLayerState& s);

// Version 1 of QDense / QConv2D held the activation parameters as attributes (input_scale,
// input_zero_point, output, output_scale, output_zero_point): they become initializers named
// after the node, in the order of integer_inputs.h (Op::upgrade).
void upgrade_integer_layer(Node& node, Graph& graph);

}  // namespace lowbit::ops
