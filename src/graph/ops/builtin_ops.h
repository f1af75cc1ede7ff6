// Internal: registration of the built-in ops and helpers shared by their implementations.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kernels/grain.h"
#include "kernels/gemm.h"
#include "lowbit/ops.h"

namespace lowbit::ops {

using Registrar = std::function<void(const std::string&, std::unique_ptr<Op>)>;
void register_builtin_ops(const Registrar& add);

// One function per source file, each registering the ops it defines.
void register_dense(const Registrar& add);
void register_activations(const Registrar& add);
void register_shape_ops(const Registrar& add);
void register_losses(const Registrar& add);
void register_quantized(const Registrar& add);
void register_fake_quant(const Registrar& add);
void register_conv(const Registrar& add);
void register_norm(const Registrar& add);
void register_gelu(const Registrar& add);
void register_layer_norm(const Registrar& add);
void register_select_ops(const Registrar& add);
void register_arithmetic(const Registrar& add);
void register_matmul(const Registrar& add);
void register_attention(const Registrar& add);
void register_cast(const Registrar& add);
void register_reduce(const Registrar& add);
void register_constant(const Registrar& add);
void register_transform_ops(const Registrar& add);
void register_integer_ops(const Registrar& add);

[[noreturn]] void shape_error(const Node& node, const std::string& what);
void expect_input_count(const Node& node, std::span<const Shape> inputs, size_t min, size_t max);
// The fused activation of a layer (attribute "activation": "none" or "relu"): the one parser and
// validator of that attribute for every layer that takes it.
Activation activation_of(const Node& node);
// Rows of a [rows, cols] view of `shape` collapsing all but the last dimension.
int64_t leading_rows(const Shape& shape);
// Row-wise softmax with the row maximum subtracted: y = exp(x - max) / sum. y may not alias x.
// Shared by Softmax and SoftmaxCrossEntropy so both compute the same floats (the fused Attention
// op runs kernels/activation.h's vectorized softmax instead).
void softmax_row(const float* x, float* y, int64_t n);
// log(sum(exp(x))), computed as max + log(sum(exp(x - max))).
float log_sum_exp(const float* x, int64_t n);
// An op whose output is its input's buffer under another shape, any dtype (Flatten, Reshape,
// Squeeze, Unsqueeze, Identity): a subclass says which shape (view_shape, also run on run-time
// shapes by forward) and sets its traits; the gradient is dy under the input's shape.
class ViewOp : public Op {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {view_shape(node, in[0])};
  }
  std::vector<DType> infer_dtypes(const Node&, std::span<const DType> in) const override { return {in[0]}; }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Shape shape = view_shape(node, in[0]->shape());
    *out[0] = *in[0];
    out[0]->reshape(shape);
  }
  void backward(const Node&, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    *in_grad[0] = *out_grad[0];
    in_grad[0]->reshape(in[0]->shape());
  }

 protected:
  virtual Shape view_shape(const Node& node, const Shape& in) const = 0;
};

// Makes `t` a tensor of `dtype` and `shape`, reusing its buffer when the dtype already matches.
void prepare_output(Tensor& t, DType dtype, Shape shape);
using kernels::plane_grain;  // kernels/grain.h

}  // namespace lowbit::ops
