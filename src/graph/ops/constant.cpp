// Constant: a node with no inputs whose output is a fixed tensor given by one attribute, as ONNX
// Constant: `value_float` (an f32 scalar, shape []), `value_floats` (f32 [n]), `value_int` (s64
// scalar) or `value_ints` (s64 [n]). Its output is a computed value, not an initializer, so
// training never updates it (the executor computes it once, when it is built): the input scale of
// the models build_model() makes (read by a DequantizeLinear of the image bytes) and the shape
// arithmetic that exporters emit use it. (ONNX's tensor-valued `value` becomes an initializer on
// import.)
#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

constexpr const char* kKeys[] = {"value_float", "value_floats", "value_int", "value_ints"};

class Constant final : public Op {
 public:
  Constant() { traits_ = {.onnx = "Constant"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 0, 0);
    const Attribute& a = value(node);
    if (a.kind() == Attribute::Kind::Floats) return {{static_cast<int64_t>(a.as_floats().size())}};
    if (a.kind() == Attribute::Kind::Ints) return {{static_cast<int64_t>(a.as_ints().size())}};
    return {Shape{}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType>) const override {
    return {key(node).find("float") != std::string::npos ? DType::F32 : DType::S64};
  }
  void forward(const Node& node, std::span<const Tensor* const>, std::span<Tensor* const> out) const override {
    const std::string k = key(node);
    const Attribute& a = node.attr(k);
    if (k == "value_float" || k == "value_floats") {
      const std::vector<double> v = k == "value_float" ? std::vector<double>{a.as_float()} : a.as_floats();
      prepare_output(*out[0], DType::F32, k == "value_float" ? Shape{} : Shape{static_cast<int64_t>(v.size())});
      for (size_t i = 0; i < v.size(); ++i) out[0]->data<float>()[i] = static_cast<float>(v[i]);
    } else {
      const std::vector<int64_t> v = k == "value_int" ? std::vector<int64_t>{a.as_int()} : a.as_ints();
      prepare_output(*out[0], DType::S64, k == "value_int" ? Shape{} : Shape{static_cast<int64_t>(v.size())});
      for (size_t i = 0; i < v.size(); ++i) out[0]->data<int64_t>()[i] = v[i];
    }
  }
  void backward(const Node&, std::span<const Tensor* const>, std::span<const Tensor* const>,
                std::span<const Tensor* const>, std::span<Tensor* const>) const override {}  // no inputs

 private:
  // The one value attribute the node has, checked for its kind.
  static std::string key(const Node& node) {
    std::string found;
    for (const char* k : kKeys)
      if (node.attributes.count(k)) {
        if (!found.empty()) shape_error(node, "has both '" + found + "' and '" + k + "': give one value attribute");
        found = k;
      }
    if (found.empty()) shape_error(node, "needs one of the attributes value_float, value_floats, value_int, value_ints");
    return found;
  }
  static const Attribute& value(const Node& node) {
    const std::string k = key(node);
    const Attribute& a = node.attr(k);
    const bool ok = k == "value_float" ? a.is_number()
                    : k == "value_floats" ? (a.kind() == Attribute::Kind::Floats || a.is_ints())
                    : k == "value_int"    ? a.is_int()
                                          : a.is_ints();
    if (!ok) shape_error(node, "attribute '" + k + "' is " + to_string(a.kind()));
    return a;
  }
};

}  // namespace

void register_constant(const Registrar& add) { add("Constant", std::make_unique<Constant>()); }

}  // namespace lowbit::ops
