// Ops that only change the shape: Flatten keeps the first `axis` dimensions and collapses the rest
// (ONNX semantics, default axis 1). The output shares the input's buffer (any dtype): no copy.
#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

class Flatten final : public Op {
 public:
  Flatten() { traits_ = {.onnx = "Flatten", .passes_quantized = true, .layout_only = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {flat_shape(node, in[0])};
  }
  std::vector<DType> infer_dtypes(const Node&, std::span<const DType> in) const override { return {in[0]}; }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    *out[0] = *in[0];
    out[0]->reshape(flat_shape(node, in[0]->shape()));
  }
  void backward(const Node&, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    *in_grad[0] = *out_grad[0];
    in_grad[0]->reshape(in[0]->shape());
  }

 private:
  static Shape flat_shape(const Node& node, const Shape& shape) {
    int64_t axis = node.attr_int("axis", 1);
    if (axis < 0) axis += static_cast<int64_t>(shape.size());
    if (axis < 0 || axis > static_cast<int64_t>(shape.size()))
      shape_error(node, "axis " + std::to_string(axis) + " is out of range for input " + to_string(shape));
    auto collapse = [](auto first, auto last) {
      int64_t p = 1;
      for (auto it = first; it != last; ++it) {
        if (*it < 0) return int64_t{-1};
        p *= *it;
      }
      return p;
    };
    return {collapse(shape.begin(), shape.begin() + axis), collapse(shape.begin() + axis, shape.end())};
  }
};

}  // namespace

void register_shape_ops(const Registrar& add) { add("Flatten", std::make_unique<Flatten>()); }

}  // namespace lowbit::ops
