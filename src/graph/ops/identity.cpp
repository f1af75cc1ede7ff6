// Identity: the output is the input (any dtype), sharing its buffer. The ONNX importer puts one
// where a graph output is another value (an input, a constant or an alias) to give it its name.
#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

class Identity final : public Op {
 public:
  Identity() { traits_ = {.onnx = "Identity", .passes_quantized = true, .layout_only = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node&, std::span<const DType> in) const override { return {in[0]}; }
  void forward(const Node&, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override { *out[0] = *in[0]; }
  void backward(const Node&, std::span<const Tensor* const>, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (in_grad[0]) *in_grad[0] = *out_grad[0];
  }
};

}  // namespace

void register_identity(const Registrar& add) { add("Identity", std::make_unique<Identity>()); }

}  // namespace lowbit::ops
