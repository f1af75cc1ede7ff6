// Internal: registration of the built-in ops and helpers shared by their implementations.
#pragma once

#include <algorithm>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "lowbit/gemm.h"
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
void register_mul(const Registrar& add);

[[noreturn]] void shape_error(const Node& node, const std::string& what);
void expect_input_count(const Node& node, std::span<const Shape> inputs, size_t min, size_t max);
// The fused activation of a layer (attribute "activation": "none" or "relu"): the one parser and
// validator of that attribute for every layer that takes it.
Activation activation_of(const Node& node);
// Rows of a [rows, cols] view of `shape` collapsing all but the last dimension.
int64_t leading_rows(const Shape& shape);
// Row-wise softmax with the row maximum subtracted: y = exp(x - max) / sum. y may not alias x.
// Shared by Softmax and SoftmaxCrossEntropy so both compute the same floats.
void softmax_row(const float* x, float* y, int64_t n);
// log(sum(exp(x))), computed as max + log(sum(exp(x - max))).
float log_sum_exp(const float* x, int64_t n);
// Makes `t` a tensor of `dtype` and `shape`, reusing its buffer when the dtype already matches.
void prepare_output(Tensor& t, DType dtype, Shape shape);
// Grain for parallel_for over units (planes, rows, channels) of `size` elements each: at least
// `per_task` (default ~16k) elements per task, so that a fork-join is worth its cost.
inline int64_t plane_grain(int64_t size, int64_t per_task = 16384) {
  return std::max<int64_t>(1, per_task / std::max<int64_t>(size, 1));
}

}  // namespace lowbit::ops
