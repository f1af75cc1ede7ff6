// Equal, Where and Expand: the attention-mask ops of exported transformers, with numpy / ONNX
// broadcasting (broadcast.h).
//   Equal(a, b) -> bool: a == b element-wise (f32 compared as floats, NaN unequal to everything;
//     integer and bool inputs compared as integers; both inputs of one dtype).
//   Where(condition bool, x, y) -> condition ? x : y, three-way broadcasting; x and y of one dtype
//     (any whole-byte type). Gradients (f32): dy where the condition holds to x, elsewhere to y,
//     summed over the dimensions each was broadcast along.
//   Expand(x) with attribute `shape` -> x broadcast against `shape` (ONNX Expand: the output takes
//     the larger of the two sizes per dimension, so a 1 in `shape` keeps x's size). Gradient (f32):
//     dy summed over the broadcast dimensions.
// Every loop walks the output in order on one thread per chunk of outputs; gradient sums run in
// output order on one thread: results do not depend on the thread count.
#include <cstring>
#include <string>
#include <vector>

#include "graph/ops/broadcast.h"
#include "graph/ops/builtin_ops.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// Output shape and, per input, its strides over the output's dimensions (0 where broadcast).
struct MultiBroadcast {
  Shape out;
  std::vector<std::vector<int64_t>> strides;
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t d : out) n *= d;
    return n;
  }
};

MultiBroadcast plan(const Node& node, const std::vector<Shape>& shapes) {
  MultiBroadcast m;
  m.out = shapes.at(0);
  for (size_t i = 1; i < shapes.size(); ++i) m.out = plan_broadcast(node, m.out, shapes[i]).out;
  for (const Shape& s : shapes) m.strides.push_back(plan_broadcast(node, m.out, s).stride_b);
  return m;
}

// Calls f(i, offsets) for output elements [begin, end) in order, offsets[k] the element of input k.
template <typename F>
void for_each_element(const MultiBroadcast& m, int64_t begin, int64_t end, F&& f) {
  const size_t rank = m.out.size(), inputs = m.strides.size();
  std::vector<int64_t> index(rank), offsets(inputs, 0);
  int64_t rest = begin;
  for (size_t d = rank; d-- > 0;) {
    index[d] = rest % m.out[d];
    rest /= m.out[d];
    for (size_t k = 0; k < inputs; ++k) offsets[k] += index[d] * m.strides[k][d];
  }
  for (int64_t i = begin; i < end; ++i) {
    f(i, offsets.data());
    for (size_t d = rank; d-- > 0;) {
      for (size_t k = 0; k < inputs; ++k) offsets[k] += m.strides[k][d];
      if (++index[d] < m.out[d]) break;
      for (size_t k = 0; k < inputs; ++k) offsets[k] -= m.strides[k][d] * m.out[d];
      index[d] = 0;
    }
  }
}

void require_whole_bytes(const Node& node, DType d, const char* what) {
  if (bits_of(d) < 8) shape_error(node, std::string(what) + " must be a whole-byte type, got " + name_of(d));
}

// dy summed into the gradient of an input of shape `shape` read at offsets[k]; `keep(i, offsets)`
// says whether output element i sends its dy there.
template <typename Keep>
void broadcast_gradient(const MultiBroadcast& m, size_t k, const float* dy, Tensor& grad, const Shape& shape, Keep&& keep) {
  grad.resize(shape);
  float* g = grad.data<float>();
  std::fill(g, g + grad.numel(), 0.0f);
  for_each_element(m, 0, m.numel(), [&](int64_t i, const int64_t* offsets) {
    if (keep(i, offsets)) g[offsets[k]] += dy[i];
  });
}

class Equal final : public Op {
 public:
  Equal() { traits_ = {.onnx = "Equal"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 2);
    return {broadcast_shape(node, in[0], in[1])};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != in[1]) shape_error(node, std::string("inputs must have one dtype, got ") + name_of(in[0]) + " and " + name_of(in[1]));
    require_whole_bytes(node, in[0], "input");
    return {DType::Bool};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const MultiBroadcast m = plan(node, {in[0]->shape(), in[1]->shape()});
    prepare_output(*out[0], DType::Bool, m.out);
    uint8_t* y = static_cast<uint8_t*>(out[0]->raw());
    if (in[0]->dtype() == DType::F32) {
      const float* a = in[0]->data<float>();
      const float* b = in[1]->data<float>();
      for_each_element(m, 0, m.numel(), [&](int64_t i, const int64_t* o) { y[i] = a[o[0]] == b[o[1]]; });
      return;
    }
    // (int64 masks, the usual input, are read as they are: cast would copy them)
    auto as_s64 = [](const Tensor& t) { return t.dtype() == DType::S64 ? t : cast(t, DType::S64); };
    const Tensor a = as_s64(*in[0]), b = as_s64(*in[1]);
    const int64_t* pa = a.data<int64_t>();
    const int64_t* pb = b.data<int64_t>();
    for_each_element(m, 0, m.numel(), [&](int64_t i, const int64_t* o) { y[i] = pa[o[0]] == pb[o[1]]; });
  }
  bool differentiable_input(int) const override { return false; }
  void backward(const Node&, std::span<const Tensor* const>, std::span<const Tensor* const>, std::span<const Tensor* const>,
                std::span<Tensor* const>) const override {}  // a bool output carries no gradient
};

class Where final : public Op {
 public:
  Where() { traits_ = {.onnx = "Where"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 3);
    return {broadcast_shape(node, broadcast_shape(node, in[0], in[1]), in[2])};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::Bool) shape_error(node, std::string("condition must be bool, got ") + name_of(in[0]));
    if (in[1] != in[2]) shape_error(node, std::string("x and y must have one dtype, got ") + name_of(in[1]) + " and " + name_of(in[2]));
    require_whole_bytes(node, in[1], "x");
    return {in[1]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const MultiBroadcast m = plan(node, {in[0]->shape(), in[1]->shape(), in[2]->shape()});
    prepare_output(*out[0], in[1]->dtype(), m.out);
    const size_t size = static_cast<size_t>(bits_of(in[1]->dtype()) / 8);
    const uint8_t* c = static_cast<const uint8_t*>(in[0]->raw());
    const char* x = static_cast<const char*>(in[1]->raw());
    const char* y = static_cast<const char*>(in[2]->raw());
    char* z = static_cast<char*>(out[0]->raw());
    parallel_for(m.numel(), 16384, [&](int64_t i0, int64_t i1) {
      for_each_element(m, i0, i1, [&](int64_t i, const int64_t* o) {
        std::memcpy(z + i * size, c[o[0]] ? x + o[1] * size : y + o[2] * size, size);
      });
    });
  }
  bool differentiable_input(int i) const override { return i > 0; }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (in[1]->dtype() != DType::F32) shape_error(node, "gradients need f32 x and y");
    const MultiBroadcast m = plan(node, {in[0]->shape(), in[1]->shape(), in[2]->shape()});
    const uint8_t* c = static_cast<const uint8_t*>(in[0]->raw());
    const float* dy = out_grad[0]->data<float>();
    for (size_t k = 1; k < 3 && k < in_grad.size(); ++k)
      if (in_grad[k])
        broadcast_gradient(m, k, dy, *in_grad[k], in[k]->shape(),
                           [&](int64_t, const int64_t* o) { return (c[o[0]] != 0) == (k == 1); });
  }
};

class Expand final : public Op {
 public:
  Expand() { traits_ = {.onnx = "Expand"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {broadcast_shape(node, in[0], target(node))};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    require_whole_bytes(node, in[0], "input");
    return {in[0]};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const MultiBroadcast m = plan(node, {target(node), in[0]->shape()});
    prepare_output(*out[0], in[0]->dtype(), m.out);
    const size_t size = static_cast<size_t>(bits_of(in[0]->dtype()) / 8);
    const char* x = static_cast<const char*>(in[0]->raw());
    char* y = static_cast<char*>(out[0]->raw());
    parallel_for(m.numel(), 16384, [&](int64_t i0, int64_t i1) {
      for_each_element(m, i0, i1, [&](int64_t i, const int64_t* o) { std::memcpy(y + i * size, x + o[1] * size, size); });
    });
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    if (in[0]->dtype() != DType::F32) shape_error(node, "gradients need an f32 input");
    const MultiBroadcast m = plan(node, {target(node), in[0]->shape()});
    broadcast_gradient(m, 1, out_grad[0]->data<float>(), *in_grad[0], in[0]->shape(), [](int64_t, const int64_t*) { return true; });
  }

 private:
  static Shape target(const Node& node) {
    const std::vector<int64_t> shape = node.attr_ints("shape", {});
    for (int64_t d : shape)
      if (d < 1) shape_error(node, "attribute 'shape' must hold sizes >= 1, got " + std::to_string(d));
    return Shape(shape.begin(), shape.end());
  }
};

}  // namespace

void register_select_ops(const Registrar& add) {
  add("Equal", std::make_unique<Equal>());
  add("Where", std::make_unique<Where>());
  add("Expand", std::make_unique<Expand>());
}

}  // namespace lowbit::ops
