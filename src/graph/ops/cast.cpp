// Cast: converts its input to the dtype named by attribute `to` ("f32", "s32", "s64", "u8", "s8",
// "bool", "f16", "bf16"), as ONNX Cast (lowbit::cast in tensor.h defines the conversions: floats
// to integers round toward zero and saturate). It turns exported f16 / integer values into f32 and
// back. The gradient of a cast between float types is the identity (dy cast back); integer and
// bool values carry no gradient.
#include <cstring>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

bool is_float(DType d) { return d == DType::F32 || d == DType::F16 || d == DType::BF16; }

class Cast final : public Op {
 public:
  Cast() { traits_ = {.onnx = "Cast"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    target(node);
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (!is_byte_addressable(in[0]))
      shape_error(node, std::string("cannot cast packed ") + name_of(in[0]) + " values (they are weight storage)");
    return {target(node)};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const DType to = target(node);
    const Tensor& x = *in[0];
    // Image bytes to floats (a model's preprocessing), into the output's own memory: one
    // vectorizable loop, the values lowbit::cast gives.
    if (to == DType::F32 && (x.dtype() == DType::U8 || x.dtype() == DType::S8 || x.dtype() == DType::F32)) {
      prepare_output(*out[0], DType::F32, x.shape());
      float* __restrict y = out[0]->data<float>();
      const int64_t n = x.numel();
      if (x.dtype() == DType::U8) {
        const uint8_t* __restrict v = x.data<uint8_t>();
        for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(v[i]);
      } else if (x.dtype() == DType::S8) {
        const int8_t* __restrict v = x.data<int8_t>();
        for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(v[i]);
      } else {
        std::memcpy(y, x.raw(), x.nbytes());
      }
      return;
    }
    *out[0] = cast(x, to);
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    if (!is_float(in[0]->dtype()) || !is_float(out[0]->dtype()))
      shape_error(node, "a cast from or to an integer type has no gradient");
    in_grad[0]->resize(in[0]->shape());
    std::memcpy(in_grad[0]->raw(), out_grad[0]->raw(), out_grad[0]->nbytes());  // gradients are f32
  }

 private:
  static DType target(const Node& node) {
    const std::string to = node.attr_string("to", "");
    if (to.empty()) shape_error(node, "attribute 'to' (the dtype to cast to, e.g. \"f32\") is required");
    DType d = DType::F32;
    try {
      d = dtype_from_name(to);
    } catch (const Error& e) {
      shape_error(node, std::string("attribute 'to': ") + e.what());
    }
    if (!is_byte_addressable(d)) shape_error(node, "cannot cast to packed " + to);
    return d;
  }
};

}  // namespace

void register_cast(const Registrar& add) { add("Cast", std::make_unique<Cast>()); }

}  // namespace lowbit::ops
