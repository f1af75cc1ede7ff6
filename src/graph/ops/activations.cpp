// Element-wise and row-wise activations: Relu and Softmax (over the last axis).
#include <algorithm>
#include <cmath>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

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

class Softmax final : public Op {
 public:
  Softmax() { traits_ = {.onnx = "Softmax", .probabilities_of_logits = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    if (in[0].empty()) shape_error(node, "input must have at least one dimension");
    if (node.attr_int("axis", -1) != -1 && node.attr_int("axis", -1) != static_cast<int64_t>(in[0].size()) - 1)
      shape_error(node, "only the last axis is supported");
    return {in[0]};
  }
  void forward(const Node&, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    out[0]->resize(in[0]->shape());
    const int64_t cols = in[0]->dim(-1), rows = leading_rows(in[0]->shape());
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    for (int64_t r = 0; r < rows; ++r) softmax_row(x + r * cols, y + r * cols, cols);
  }
  void backward(const Node&, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    in_grad[0]->resize(in[0]->shape());
    const int64_t cols = in[0]->dim(-1), rows = leading_rows(in[0]->shape());
    const float* y = out[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    // dx = y * (dy - <dy, y>) per row: the softmax Jacobian applied to dy.
    for (int64_t r = 0; r < rows; ++r) {
      float dot = 0.0f;
      for (int64_t c = 0; c < cols; ++c) dot += dy[r * cols + c] * y[r * cols + c];
      for (int64_t c = 0; c < cols; ++c) dx[r * cols + c] = y[r * cols + c] * (dy[r * cols + c] - dot);
    }
  }
};

}  // namespace

void register_activations(const Registrar& add) {
  add("Relu", std::make_unique<Relu>());
  add("Softmax", std::make_unique<Softmax>());
}

}  // namespace lowbit::ops
