// LayerNormalization (ONNX opset 17): each row of X, the trailing axes from `axis` on (default -1,
// the last), normalized to zero mean and unit variance, then scaled and shifted:
//   mean = sum x / n,  var = sum (x - mean)^2 / n,  inv = 1 / sqrt(var + epsilon)
//   y = (x - mean) * inv * scale + bias
// Inputs: X f32, Scale f32 and optional B f32, each holding the normalized shape's n values
// (X.shape[axis:], or a shape with that many values, or one value). Outputs: Y, and optionally
// Mean and InvStdDev with shape X.shape[:axis] + [1, ...] (ONNX's, for training frameworks).
// The rows run on kernels/layer_norm_f32.h (sums in eight float lanes added in double, the rest in
// float; one row per task): the result does not depend on the thread count. The backward pass
// gives the gradients of X, Scale and B.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "kernels/layer_norm_f32.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

struct Rows {
  int64_t rows = 1, n = 1;
};

size_t norm_axis(const Node& node, const Shape& shape) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  const int64_t axis = node.attr_int("axis", -1);
  if (rank == 0 || axis < -rank || axis >= rank)
    shape_error(node, "axis " + std::to_string(axis) + " is out of range for input " + to_string(shape));
  return static_cast<size_t>(axis < 0 ? axis + rank : axis);
}

Rows rows_of(const Node& node, const Shape& shape) {
  const size_t axis = norm_axis(node, shape);
  Rows r;
  for (size_t d = 0; d < shape.size(); ++d) (d < axis ? r.rows : r.n) *= shape[d];
  return r;
}

// The stride of a scale or bias over a row: 1 (n values), or 0 (one value for all).
int64_t step_of(const Tensor& parameter, const Rows& r) { return parameter.numel() == 1 && r.n != 1 ? 0 : 1; }

float epsilon_of(const Node& node) {
  const float e = node.attr_float("epsilon", 1e-5f);
  if (!(e >= 0.0f) || !std::isfinite(e)) shape_error(node, "attribute 'epsilon' must be a finite value >= 0");
  return e;
}

// Scale or bias: n values, or one value for all (broadcast).
void check_parameter(const Node& node, const Shape& x, const Shape& p, const char* what) {
  const size_t axis = norm_axis(node, x);
  int64_t n = 1, count = 1;
  bool known = true;
  for (size_t d = axis; d < x.size(); ++d) known = known && x[d] >= 0, n *= x[d];
  for (int64_t d : p) known = known && d >= 0, count *= d;
  if (known && count != n && count != 1)
    shape_error(node, std::string(what) + " must hold the normalized shape's " + std::to_string(n) + " values (" +
                          to_string(Shape(x.begin() + static_cast<std::ptrdiff_t>(axis), x.end())) + "), got " + to_string(p));
}

class LayerNormalization final : public Op {
 public:
  LayerNormalization() { traits_ = {.onnx = "LayerNormalization"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 3);
    if (node.outputs.empty() || node.outputs.size() > 3)
      shape_error(node, "expects 1 to 3 outputs (y, mean, inverse standard deviation), got " + std::to_string(node.outputs.size()));
    epsilon_of(node);
    const size_t axis = norm_axis(node, in[0]);
    check_parameter(node, in[0], in[1], "scale");
    if (in.size() == 3) check_parameter(node, in[0], in[2], "bias");
    Shape stats = in[0];
    for (size_t d = axis; d < stats.size(); ++d) stats[d] = 1;
    std::vector<Shape> out = {in[0], stats, stats};
    out.resize(node.outputs.size());
    return out;
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    for (size_t i = 0; i < in.size(); ++i)
      if (in[i] != DType::F32) shape_error(node, "inputs must be f32, got " + std::string(name_of(in[i])));
    return std::vector<DType>(node.outputs.size(), DType::F32);
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Shape& shape = in[0]->shape();
    check_parameter(node, shape, in[1]->shape(), "scale");
    if (in.size() > 2 && in[2]) check_parameter(node, shape, in[2]->shape(), "bias");
    const Rows r = rows_of(node, shape);
    const double epsilon = epsilon_of(node);
    prepare_output(*out[0], DType::F32, shape);
    Shape stats = shape;
    for (size_t d = norm_axis(node, shape); d < stats.size(); ++d) stats[d] = 1;
    for (size_t o = 1; o < out.size(); ++o)
      if (out[o]) prepare_output(*out[o], DType::F32, stats);
    const float* bias = in.size() > 2 && in[2] ? in[2]->data<float>() : nullptr;
    const int64_t scale_step = step_of(*in[1], r), bias_step = bias ? step_of(*in[2], r) : 1;
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    float* mean_out = out.size() > 1 && out[1] ? out[1]->data<float>() : nullptr;
    float* inv_out = out.size() > 2 && out[2] ? out[2]->data<float>() : nullptr;
    parallel_for(r.rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(r.n, 1)), [&](int64_t r0, int64_t r1) {
      kernels::layer_norm_rows_f32(r1 - r0, r.n, x + r0 * r.n, in[1]->data<float>(), scale_step, bias, bias_step,
                                   static_cast<float>(epsilon), y + r0 * r.n, mean_out ? mean_out + r0 : nullptr,
                                   inv_out ? inv_out + r0 : nullptr);
    });
  }

  // The gradients of x (rows in parallel), scale and bias (rows added in order, one pass):
  // kernels/layer_norm_f32.h.
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Shape& shape = in[0]->shape();
    const Rows r = rows_of(node, shape);
    const float epsilon = static_cast<float>(epsilon_of(node));
    const float* x = in[0]->data<float>();
    const float* scale = in[1]->data<float>();
    const int64_t scale_step = step_of(*in[1], r);
    const float* dy = out_grad[0]->data<float>();
    // The statistics again (cheaper to recompute than to keep).
    std::vector<float> mean(static_cast<size_t>(r.rows)), inv(static_cast<size_t>(r.rows));
    const int64_t grain = std::max<int64_t>(1, 4096 / std::max<int64_t>(r.n, 1));
    parallel_for(r.rows, grain, [&](int64_t r0, int64_t r1) {
      kernels::layer_norm_statistics_f32(r1 - r0, r.n, x + r0 * r.n, epsilon, mean.data() + r0, inv.data() + r0);
    });
    if (in_grad[0]) {
      in_grad[0]->resize(shape);
      float* dx = in_grad[0]->data<float>();
      parallel_for(r.rows, grain, [&](int64_t r0, int64_t r1) {
        kernels::layer_norm_backward_rows_f32(r1 - r0, r.n, x + r0 * r.n, dy + r0 * r.n, scale, scale_step, mean.data() + r0,
                                              inv.data() + r0, dx + r0 * r.n, nullptr, nullptr);
      });
    }
    const bool want_scale = in_grad.size() > 1 && in_grad[1], want_bias = in_grad.size() > 2 && in_grad[2];
    if (!want_scale && !want_bias) return;
    std::vector<double> dscale(want_scale ? static_cast<size_t>(r.n) : 0), dbias(want_bias ? static_cast<size_t>(r.n) : 0);
    kernels::layer_norm_backward_rows_f32(r.rows, r.n, x, dy, scale, scale_step, mean.data(), inv.data(), nullptr,
                                          want_scale ? dscale.data() : nullptr, want_bias ? dbias.data() : nullptr);
    for (size_t p = 1; p < 3; ++p) {
      if (p >= in_grad.size() || !in_grad[p]) continue;
      const std::vector<double>& sums = p == 1 ? dscale : dbias;
      in_grad[p]->resize(in[p]->shape());
      float* g = in_grad[p]->data<float>();
      if (step_of(*in[p], r) == 0) {
        double total = 0;
        for (double v : sums) total += v;
        g[0] = static_cast<float>(total);
      } else {
        for (int64_t c = 0; c < r.n; ++c) g[c] = static_cast<float>(sums[static_cast<size_t>(c)]);
      }
    }
  }
};

}  // namespace

void register_layer_norm(const Registrar& add) { add("LayerNormalization", std::make_unique<LayerNormalization>()); }

}  // namespace lowbit::ops
