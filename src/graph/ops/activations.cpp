// Element-wise and row-wise activations with ONNX semantics (ONNX op name = lowbit op name): Relu,
// Sigmoid, Tanh, LeakyRelu, Clip, Sqrt, Reciprocal, Neg, Erf, Exp, Log, Abs (f32, element-wise) and
// Softmax, LogSoftmax (f32, over one axis).
#include <algorithm>
#include <cmath>

#include "graph/ops/builtin_ops.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// The axis of Softmax / LogSoftmax (attribute `axis`, default -1 as in ONNX opset 13; negative
// counts from the end) and the [outer, n, inner] view of the tensor around it.
struct AxisView {
  int64_t outer = 1, n = 1, inner = 1;
};
size_t softmax_axis(const Node& node, const Shape& shape) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  int64_t axis = node.attr_int("axis", -1);
  if (axis < -rank || axis >= rank)
    shape_error(node, "axis " + std::to_string(axis) + " is out of range for input " + to_string(shape));
  return static_cast<size_t>(axis < 0 ? axis + rank : axis);
}
AxisView axis_view(const Node& node, const Shape& shape) {
  const size_t axis = softmax_axis(node, shape);
  AxisView v;
  for (size_t d = 0; d < shape.size(); ++d) (d < axis ? v.outer : d == axis ? v.n : v.inner) *= shape[d];
  return v;
}

class Relu final : public Op {
 public:
  Relu() { traits_ = {.onnx = "Relu", .fusable_as = "relu"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {in[0]};
  }
  void forward(const Node&, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    out[0]->resize(in[0]->shape());
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) y[i] = std::max(x[i], 0.0f);
  }
  void backward(const Node&, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    in_grad[0]->resize(in[0]->shape());
    const float* x = in[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) dx[i] = x[i] > 0.0f ? dy[i] : 0.0f;
  }
};

// Softmax over one axis (attribute `axis`, default -1 as in ONNX opset 13; negative counts from the
// end). The tensor is viewed as [outer, n, inner] around that axis; the last axis (inner = 1) runs
// row by row through softmax_row (rows split over threads), the same floats as
// SoftmaxCrossEntropy. (The fused Attention op runs kernels/activation.h's vectorized softmax.)
class Softmax final : public Op {
 public:
  Softmax() { traits_ = {.onnx = "Softmax", .probabilities_of_logits = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    if (in[0].empty()) shape_error(node, "input must have at least one dimension");
    softmax_axis(node, in[0]);
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    out[0]->resize(in[0]->shape());
    const AxisView v = axis_view(node, in[0]->shape());
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    if (v.inner == 1) {
      parallel_for(v.outer, std::max<int64_t>(1, 16384 / std::max<int64_t>(v.n, 1)), [&](int64_t begin, int64_t end) {
        for (int64_t r = begin; r < end; ++r) softmax_row(x + r * v.n, y + r * v.n, v.n);
      });
      return;
    }
    std::vector<float> line(static_cast<size_t>(v.n)), result(static_cast<size_t>(v.n));
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t base = o * v.n * v.inner + i;
        for (int64_t c = 0; c < v.n; ++c) line[c] = x[base + c * v.inner];
        softmax_row(line.data(), result.data(), v.n);
        for (int64_t c = 0; c < v.n; ++c) y[base + c * v.inner] = result[c];
      }
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    in_grad[0]->resize(in[0]->shape());
    const AxisView v = axis_view(node, in[0]->shape());
    const float* y = out[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    // dx = y * (dy - <dy, y>) along the axis: the softmax Jacobian applied to dy.
    const int64_t s = v.inner;
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t base = o * v.n * v.inner + i;
        float dot = 0.0f;
        for (int64_t c = 0; c < v.n; ++c) dot += dy[base + c * s] * y[base + c * s];
        for (int64_t c = 0; c < v.n; ++c) dx[base + c * s] = y[base + c * s] * (dy[base + c * s] - dot);
      }
  }
};

// log(softmax(x)) over one axis (as Softmax: attribute `axis`, default -1), computed stably as
// (x - max) - log(sum(exp(x - max))). Gradient: dx = dy - softmax(x) * sum(dy) along the axis,
// softmax(x) = exp(y).
class LogSoftmax final : public Op {
 public:
  LogSoftmax() { traits_ = {.onnx = "LogSoftmax"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    if (in[0].empty()) shape_error(node, "input must have at least one dimension");
    softmax_axis(node, in[0]);
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::F32) shape_error(node, std::string("input must be f32, got ") + name_of(in[0]));
    return {DType::F32};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    if (in[0]->rank() == 0) shape_error(node, "input must have at least one dimension");
    const AxisView v = axis_view(node, in[0]->shape());
    prepare_output(*out[0], DType::F32, in[0]->shape());
    if (v.n == 0) return;  // no values
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    const int64_t s = v.inner;
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t base = o * v.n * v.inner + i;
        float peak = x[base];
        for (int64_t c = 1; c < v.n; ++c) peak = std::max(peak, x[base + c * s]);
        float sum = 0.0f;
        for (int64_t c = 0; c < v.n; ++c) sum += std::exp(x[base + c * s] - peak);
        const float log_sum = std::log(sum);
        for (int64_t c = 0; c < v.n; ++c) y[base + c * s] = (x[base + c * s] - peak) - log_sum;
      }
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    in_grad[0]->resize(in[0]->shape());
    const AxisView v = axis_view(node, in[0]->shape());
    const float* y = out[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    const int64_t s = v.inner;
    for (int64_t o = 0; o < v.outer; ++o)
      for (int64_t i = 0; i < v.inner; ++i) {
        const int64_t base = o * v.n * v.inner + i;
        float total = 0.0f;
        for (int64_t c = 0; c < v.n; ++c) total += dy[base + c * s];
        for (int64_t c = 0; c < v.n; ++c) dx[base + c * s] = dy[base + c * s] - std::exp(y[base + c * s]) * total;
      }
  }
};

// ---- Element-wise f32 ops: y = f(x), dx = dy * f'(x) -------------------------------------------

// One element-wise op, from a description F: F::Params F::params(node) reads and validates the
// attributes (once per call), F::value(p, x) is f(x) and F::slope(p, x, y) is f'(x) given y = f(x).
template <typename F>
class ElementWise final : public Op {
 public:
  ElementWise() { traits_ = {.onnx = F::kOnnx}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    F::params(node);
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::F32) shape_error(node, std::string("input must be f32, got ") + name_of(in[0]));
    return {DType::F32};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const typename F::Params p = F::params(node);
    prepare_output(*out[0], DType::F32, in[0]->shape());
    const float* __restrict x = in[0]->data<float>();
    float* __restrict y = out[0]->data<float>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) y[i] = F::value(p, x[i]);
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const typename F::Params p = F::params(node);
    in_grad[0]->resize(in[0]->shape());
    const float* x = in[0]->data<float>();
    const float* y = out[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) dx[i] = dy[i] * F::slope(p, x[i], y[i]);
  }
};

// 1 / (1 + exp(-x)), as exp(x) / (1 + exp(x)) for negative x so that exp never overflows: no NaN
// or spurious 0/1 at large |x| beyond the float limits of the result itself.
struct SigmoidFunction {
  static constexpr const char* kOnnx = "Sigmoid";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) {
    if (x >= 0.0f) return 1.0f / (1.0f + std::exp(-x));
    const float e = std::exp(x);
    return e / (1.0f + e);
  }
  static float slope(const Params&, float, float y) { return y * (1.0f - y); }
};

struct TanhFunction {
  static constexpr const char* kOnnx = "Tanh";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return std::tanh(x); }
  static float slope(const Params&, float, float y) { return 1.0f - y * y; }
};

// x for x >= 0, alpha * x below (attribute `alpha`, default 0.01, finite). At x = 0 the slope is 1,
// the branch the forward takes.
struct LeakyReluFunction {
  static constexpr const char* kOnnx = "LeakyRelu";
  struct Params {
    float alpha = 0.01f;
  };
  static Params params(const Node& node) {
    const double alpha = node.attr_float("alpha", 0.01);
    if (!std::isfinite(alpha)) shape_error(node, "attribute 'alpha' must be finite, got " + std::to_string(alpha));
    return {static_cast<float>(alpha)};
  }
  static float value(const Params& p, float x) { return x < 0.0f ? p.alpha * x : x; }
  static float slope(const Params& p, float x, float) { return x < 0.0f ? p.alpha : 1.0f; }
};

// min(max(x, min), max) with attributes `min` and `max` (optional, absent: -inf / +inf; ONNX Clip-6
// form; the importer turns the inputs of later opsets into them). As in ONNX, min > max gives max
// everywhere, and NaN stays NaN. Gradient: dy where min < x < max strictly, 0 elsewhere, the ties
// x == min and x == max included (the output does not follow x there on both sides).
struct ClipFunction {
  static constexpr const char* kOnnx = "Clip";
  struct Params {
    float lo = -INFINITY, hi = INFINITY;
  };
  static Params params(const Node& node) {
    const double lo = node.attr_float("min", -INFINITY), hi = node.attr_float("max", INFINITY);
    if (std::isnan(lo) || std::isnan(hi)) shape_error(node, "attributes 'min' and 'max' must not be NaN");
    return {static_cast<float>(lo), static_cast<float>(hi)};
  }
  static float value(const Params& p, float x) { return std::min(std::max(x, p.lo), p.hi); }
  static float slope(const Params& p, float x, float) { return p.lo < x && x < p.hi ? 1.0f : 0.0f; }
};

// The element-wise math of transformer graphs as exporters spell it (LayerNorm as ReduceMean, Sub,
// Pow / Mul, Sqrt, Reciprocal / Div; GELU as Erf): ONNX's definitions in f32, IEEE special values
// as the C library gives them (sqrt(-1) = NaN, 1/0 = inf, log(0) = -inf).
struct SqrtFunction {
  static constexpr const char* kOnnx = "Sqrt";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return std::sqrt(x); }
  static float slope(const Params&, float, float y) { return 0.5f / y; }
};
struct ReciprocalFunction {
  static constexpr const char* kOnnx = "Reciprocal";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return 1.0f / x; }
  static float slope(const Params&, float, float y) { return -y * y; }
};
struct NegFunction {
  static constexpr const char* kOnnx = "Neg";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return -x; }
  static float slope(const Params&, float, float) { return -1.0f; }
};
struct ErfFunction {
  static constexpr const char* kOnnx = "Erf";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return std::erf(x); }
  // 2 / sqrt(pi) exp(-x^2)
  static float slope(const Params&, float x, float) { return static_cast<float>(1.1283791670955126 * std::exp(-double(x) * x)); }
};
struct ExpFunction {
  static constexpr const char* kOnnx = "Exp";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return std::exp(x); }
  static float slope(const Params&, float, float y) { return y; }
};
struct LogFunction {
  static constexpr const char* kOnnx = "Log";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return std::log(x); }
  static float slope(const Params&, float x, float) { return 1.0f / x; }
};
// |x|; the slope at 0 is 0 (the subgradient PyTorch uses).
struct AbsFunction {
  static constexpr const char* kOnnx = "Abs";
  struct Params {};
  static Params params(const Node&) { return {}; }
  static float value(const Params&, float x) { return std::fabs(x); }
  static float slope(const Params&, float x, float) { return x > 0.0f ? 1.0f : x < 0.0f ? -1.0f : 0.0f; }
};

}  // namespace

void register_activations(const Registrar& add) {
  add("Relu", std::make_unique<Relu>());
  add("Softmax", std::make_unique<Softmax>());
  add("LogSoftmax", std::make_unique<LogSoftmax>());
  add("Sigmoid", std::make_unique<ElementWise<SigmoidFunction>>());
  add("Tanh", std::make_unique<ElementWise<TanhFunction>>());
  add("LeakyRelu", std::make_unique<ElementWise<LeakyReluFunction>>());
  add("Clip", std::make_unique<ElementWise<ClipFunction>>());
  add("Sqrt", std::make_unique<ElementWise<SqrtFunction>>());
  add("Reciprocal", std::make_unique<ElementWise<ReciprocalFunction>>());
  add("Neg", std::make_unique<ElementWise<NegFunction>>());
  add("Erf", std::make_unique<ElementWise<ErfFunction>>());
  add("Exp", std::make_unique<ElementWise<ExpFunction>>());
  add("Log", std::make_unique<ElementWise<LogFunction>>());
  add("Abs", std::make_unique<ElementWise<AbsFunction>>());
}

}  // namespace lowbit::ops
