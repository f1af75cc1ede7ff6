// Element-wise and row-wise activations: Relu and Softmax (over any axis).
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

// Softmax over one axis (attribute `axis`, default -1 as in ONNX opset 13; negative counts from the
// end). The tensor is viewed as [outer, n, inner] around that axis; the last axis (inner = 1) runs
// row by row through softmax_row, the same floats as SoftmaxCrossEntropy.
class Softmax final : public Op {
 public:
  Softmax() { traits_ = {.onnx = "Softmax", .probabilities_of_logits = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    if (in[0].empty()) shape_error(node, "input must have at least one dimension");
    axis_of(node, in[0]);
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    out[0]->resize(in[0]->shape());
    const View v = view(node, in[0]->shape());
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    if (v.inner == 1) {
      for (int64_t r = 0; r < v.outer; ++r) softmax_row(x + r * v.n, y + r * v.n, v.n);
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
    const View v = view(node, in[0]->shape());
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

 private:
  struct View {
    int64_t outer = 1, n = 1, inner = 1;
  };
  static size_t axis_of(const Node& node, const Shape& shape) {
    const int64_t rank = static_cast<int64_t>(shape.size());
    int64_t axis = node.attr_int("axis", -1);
    if (axis < -rank || axis >= rank)
      shape_error(node, "axis " + std::to_string(axis) + " is out of range for input " + to_string(shape));
    return static_cast<size_t>(axis < 0 ? axis + rank : axis);
  }
  static View view(const Node& node, const Shape& shape) {
    const size_t axis = axis_of(node, shape);
    View v;
    for (size_t d = 0; d < shape.size(); ++d) (d < axis ? v.outer : d == axis ? v.n : v.inner) *= shape[d];
    return v;
  }
};

}  // namespace

void register_activations(const Registrar& add) {
  add("Relu", std::make_unique<Relu>());
  add("Softmax", std::make_unique<Softmax>());
}

}  // namespace lowbit::ops
