// Ops that only change the shape: Flatten keeps the first `axis` dimensions and collapses the rest
// (ONNX semantics, default axis 1); Identity keeps it. The output shares the input's buffer (any
// dtype): no copy.
#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

class Flatten final : public ViewOp {
 public:
  Flatten() { traits_ = {.onnx = "Flatten", .passes_quantized = true, .layout_only = true}; }

 private:
  Shape view_shape(const Node& node, const Shape& in) const override { return flat_shape(node, in); }
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

// Identity: the input itself. The ONNX importer puts one where a graph output is another value (an
// input, a constant or an alias) to give it its name.
class Identity final : public ViewOp {
 public:
  Identity() { traits_ = {.onnx = "Identity", .passes_quantized = true, .layout_only = true}; }

 private:
  Shape view_shape(const Node&, const Shape& in) const override { return in; }
};

}  // namespace

void register_shape_ops(const Registrar& add) {
  add("Flatten", std::make_unique<Flatten>());
  add("Identity", std::make_unique<Identity>());
}

}  // namespace lowbit::ops
