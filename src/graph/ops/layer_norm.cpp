// LayerNormalization (ONNX opset 17): each row of X, the trailing axes from `axis` on (default -1,
// the last), normalized to zero mean and unit variance, then scaled and shifted:
//   mean = sum x / n,  var = sum (x - mean)^2 / n,  inv = 1 / sqrt(var + epsilon)
//   y = (x - mean) * inv * scale + bias
// Inputs: X f32, Scale f32 and optional B f32, each holding the normalized shape's n values
// (X.shape[axis:], or a shape with that many values, or one value). Outputs: Y, and optionally
// Mean and InvStdDev with shape X.shape[:axis] + [1, ...] (ONNX's, for training frameworks).
// Statistics are summed in double, in order, one row per task: the result does not depend on the
// thread count. The backward pass gives the gradients of X, Scale and B.
#include <cmath>
#include <string>
#include <utility>
#include <vector>

#include "graph/ops/builtin_ops.h"
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

// A row's mean and 1 / sqrt(variance + epsilon), summed in double in order.
std::pair<double, double> row_statistics(const float* x, int64_t n, double epsilon) {
  double sum = 0;
  for (int64_t i = 0; i < n; ++i) sum += x[i];
  const double mean = sum / static_cast<double>(n);
  double squares = 0;
  for (int64_t i = 0; i < n; ++i) squares += (x[i] - mean) * (x[i] - mean);
  return {mean, 1.0 / std::sqrt(squares / static_cast<double>(n) + epsilon)};
}

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
    const float* x = in[0]->data<float>();
    const float* scale = in[1]->data<float>();
    const bool scale_one = in[1]->numel() == 1 && r.n != 1;
    const float* bias = in.size() > 2 && in[2] ? in[2]->data<float>() : nullptr;
    const bool bias_one = bias && in[2]->numel() == 1 && r.n != 1;
    float* y = out[0]->data<float>();
    float* mean_out = out.size() > 1 && out[1] ? out[1]->data<float>() : nullptr;
    float* inv_out = out.size() > 2 && out[2] ? out[2]->data<float>() : nullptr;
    parallel_for(r.rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(r.n, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        const float* xr = x + row * r.n;
        const auto [mean, inv] = row_statistics(xr, r.n, epsilon);
        float* yr = y + row * r.n;
        for (int64_t i = 0; i < r.n; ++i) {
          const double normalized = (xr[i] - mean) * inv;
          const double shifted = normalized * scale[scale_one ? 0 : i] + (bias ? bias[bias_one ? 0 : i] : 0.0f);
          yr[i] = static_cast<float>(shifted);
        }
        if (mean_out) mean_out[row] = static_cast<float>(mean);
        if (inv_out) inv_out[row] = static_cast<float>(inv);
      }
    });
  }

  // With xh = (x - mean) * inv and g = dy * scale (per row):
  //   dx = inv * (g - mean(g) - xh * mean(g * xh)),  dscale = sum over rows of dy * xh,  dbias = sum of dy.
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Shape& shape = in[0]->shape();
    const Rows r = rows_of(node, shape);
    const double epsilon = epsilon_of(node);
    const float* x = in[0]->data<float>();
    const float* scale = in[1]->data<float>();
    const bool scale_one = in[1]->numel() == 1 && r.n != 1;
    const float* dy = out_grad[0]->data<float>();
    // The statistics and normalized values again (cheaper to recompute than to keep).
    std::vector<double> mean(static_cast<size_t>(r.rows)), inv(static_cast<size_t>(r.rows));
    parallel_for(r.rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(r.n, 1)), [&](int64_t r0, int64_t r1) {
      for (int64_t row = r0; row < r1; ++row) {
        const auto [m, s] = row_statistics(x + row * r.n, r.n, epsilon);
        mean[static_cast<size_t>(row)] = m;
        inv[static_cast<size_t>(row)] = s;
      }
    });
    if (in_grad[0]) {
      in_grad[0]->resize(shape);
      float* dx = in_grad[0]->data<float>();
      parallel_for(r.rows, std::max<int64_t>(1, 4096 / std::max<int64_t>(r.n, 1)), [&](int64_t r0, int64_t r1) {
        for (int64_t row = r0; row < r1; ++row) {
          const float* xr = x + row * r.n;
          const float* dyr = dy + row * r.n;
          const double m = mean[static_cast<size_t>(row)], s = inv[static_cast<size_t>(row)];
          double g_sum = 0, gx_sum = 0;
          for (int64_t i = 0; i < r.n; ++i) {
            const double g = static_cast<double>(dyr[i]) * scale[scale_one ? 0 : i];
            g_sum += g;
            gx_sum += g * (xr[i] - m) * s;
          }
          const double g_mean = g_sum / static_cast<double>(r.n), gx_mean = gx_sum / static_cast<double>(r.n);
          for (int64_t i = 0; i < r.n; ++i) {
            const double g = static_cast<double>(dyr[i]) * scale[scale_one ? 0 : i];
            dx[row * r.n + i] = static_cast<float>(s * (g - g_mean - (xr[i] - m) * s * gx_mean));
          }
        }
      });
    }
    // Scale and bias: per column, the rows summed in order (deterministic).
    for (size_t p = 1; p < in_grad.size() && p < 3; ++p) {
      if (!in_grad[p]) continue;
      const bool one = in[p]->numel() == 1 && r.n != 1;
      std::vector<double> sums(static_cast<size_t>(r.n), 0.0);
      parallel_for(r.n, 64, [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          double s = 0;
          for (int64_t row = 0; row < r.rows; ++row) {
            const double d = dy[row * r.n + c];
            s += p == 1 ? d * (x[row * r.n + c] - mean[static_cast<size_t>(row)]) * inv[static_cast<size_t>(row)] : d;
          }
          sums[static_cast<size_t>(c)] = s;
        }
      });
      in_grad[p]->resize(in[p]->shape());
      float* g = in_grad[p]->data<float>();
      if (one) {
        double total = 0;
        for (double s : sums) total += s;
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
