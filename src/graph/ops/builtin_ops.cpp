#include "graph/ops/builtin_ops.h"

#include <algorithm>
#include <cmath>

namespace lowbit::ops {

void register_builtin_ops(const Registrar& add) {
  register_dense(add);
  register_activations(add);
  register_shape_ops(add);
  register_losses(add);
  register_quantized(add);
  register_fake_quant(add);
  register_conv(add);
  register_norm(add);
  register_gelu(add);
  register_layer_norm(add);
  register_select_ops(add);
  register_arithmetic(add);
  register_matmul(add);
  register_attention(add);
  register_cast(add);
  register_reduce(add);
  register_constant(add);
  register_transform_ops(add);
  register_integer_ops(add);
}

void shape_error(const Node& node, const std::string& what) {
  throw Error(ErrorKind::Format, "node '" + node.name + "' (" + node.op + "): " + what);
}

void expect_input_count(const Node& node, std::span<const Shape> inputs, size_t min, size_t max) {
  if (inputs.size() < min || inputs.size() > max)
    shape_error(node, "expects " + (min == max ? std::to_string(min) : std::to_string(min) + " to " + std::to_string(max)) +
                          " inputs, got " + std::to_string(inputs.size()));
}

void prepare_output(Tensor& t, DType dtype, Shape shape) {
  if (t.defined() && t.dtype() == dtype)
    t.resize(std::move(shape));
  else
    t = Tensor(dtype, std::move(shape));
}

void softmax_row(const float* x, float* y, int64_t n) {
  const float peak = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (int64_t c = 0; c < n; ++c) sum += (y[c] = std::exp(x[c] - peak));
  const float inv = 1.0f / sum;
  for (int64_t c = 0; c < n; ++c) y[c] *= inv;
}

float log_sum_exp(const float* x, int64_t n) {
  const float peak = *std::max_element(x, x + n);
  float sum = 0.0f;
  for (int64_t c = 0; c < n; ++c) sum += std::exp(x[c] - peak);
  return std::log(sum) + peak;
}

Activation activation_of(const Node& node) {
  const std::string a = node.attr_string("activation", "none");
  if (a == "none") return Activation::None;
  if (a == "relu") return Activation::Relu;
  shape_error(node, "attribute 'activation' must be \"none\" or \"relu\", got \"" + a + "\"");
}

int64_t leading_rows(const Shape& shape) {
  int64_t rows = 1;
  for (size_t i = 0; i + 1 < shape.size(); ++i) rows *= shape[i];
  return rows;
}

}  // namespace lowbit::ops
