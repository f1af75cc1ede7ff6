// Gelu: the Gaussian error linear unit of transformer MLPs, y = x * Phi(x), as ONNX Gelu (opset 20).
// Attribute approximate: "none" (default) is the exact form 0.5 x (1 + erf(x / sqrt 2)); "tanh"
// is 0.5 x (1 + tanh(sqrt(2 / pi) (x + 0.044715 x^3))), the form BERT and GPT-2 were trained with.
// Both run on kernels/activation.h (erf through a fitted erfc, within 1e-6 relative; the tanh form
// as x sigmoid(2v), within 2e-6), element by element, so they do not depend on the thread count;
// the gradient differentiates the chosen form.
#include "graph/ops/builtin_ops.h"
#include "kernels/activation.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

bool tanh_form(const Node& node) {
  const std::string a = node.attr_string("approximate", "none");
  if (a != "none" && a != "tanh") shape_error(node, "attribute 'approximate' must be \"none\" or \"tanh\", got \"" + a + "\"");
  return a == "tanh";
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
    parallel_for(in[0]->numel(), 16384, [&](int64_t begin, int64_t end) { gelu_f32(end - begin, x + begin, y + begin, approximate); });
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const bool approximate = tanh_form(node);
    in_grad[0]->resize(in[0]->shape());
    const float* x = in[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    parallel_for(in[0]->numel(), 16384, [&](int64_t begin, int64_t end) {
      gelu_backward_f32(end - begin, x + begin, dy + begin, dx + begin, approximate);
    });
  }
};

}  // namespace

void register_gelu(const Registrar& add) { add("Gelu", std::make_unique<Gelu>()); }

}  // namespace lowbit::ops
