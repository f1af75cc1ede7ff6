// Gelu: the Gaussian error linear unit of transformer MLPs, y = x * Phi(x), as ONNX Gelu (opset 20).
// Attribute approximate: "none" (default) is the exact form 0.5 x (1 + erf(x / sqrt 2)); "tanh"
// is 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), the form BERT and GPT-2 were trained with.
// Both are computed in double per element and rounded once to f32, so they do not depend on the
// thread count; the gradient differentiates the chosen form exactly.
#include <cmath>

#include "graph/ops/builtin_ops.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

constexpr double kInvSqrt2 = 0.70710678118654752440;
constexpr double kInvSqrt2Pi = 0.39894228040143267794;  // 1 / sqrt(2 pi): the normal density at 0
constexpr double kSqrt2OverPi = 0.79788456080286535588;
constexpr double kCubic = 0.044715;

bool tanh_form(const Node& node) {
  const std::string a = node.attr_string("approximate", "none");
  if (a != "none" && a != "tanh") shape_error(node, "attribute 'approximate' must be \"none\" or \"tanh\", got \"" + a + "\"");
  return a == "tanh";
}

double gelu(double x, bool tanh_approximation) {
  if (tanh_approximation) return 0.5 * x * (1.0 + std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x)));
  return 0.5 * x * (1.0 + std::erf(x * kInvSqrt2));
}

double gelu_derivative(double x, bool tanh_approximation) {
  if (tanh_approximation) {
    const double t = std::tanh(kSqrt2OverPi * (x + kCubic * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * kSqrt2OverPi * (1.0 + 3.0 * kCubic * x * x);
  }
  return 0.5 * (1.0 + std::erf(x * kInvSqrt2)) + x * kInvSqrt2Pi * std::exp(-0.5 * x * x);
}

class Gelu final : public Op {
 public:
  Gelu() { traits_ = {.onnx = "Gelu"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    tanh_form(node);
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const bool approximate = tanh_form(node);
    out[0]->resize(in[0]->shape());
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    parallel_for(in[0]->numel(), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) y[i] = static_cast<float>(gelu(x[i], approximate));
    });
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const bool approximate = tanh_form(node);
    in_grad[0]->resize(in[0]->shape());
    const float* x = in[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    parallel_for(in[0]->numel(), 4096, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) dx[i] = static_cast<float>(dy[i] * gelu_derivative(x[i], approximate));
    });
  }
};

}  // namespace

void register_gelu(const Registrar& add) { add("Gelu", std::make_unique<Gelu>()); }

}  // namespace lowbit::ops
