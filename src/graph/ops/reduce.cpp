// ReduceSum, ReduceMean, ReduceMax, ReduceMin: f32 reductions over any set of axes, as ONNX
// defines them with the axes as an attribute (opset 11-17; the importer turns a constant `axes`
// input of newer opsets into the attribute): `axes` (a list, negative counting from the end;
// absent or empty: every axis, or none with `noop_with_empty_axes` = 1), `keepdims` (default 1:
// the reduced axes stay as size 1). Reducing an empty axis gives 0 (sum), NaN (mean), -inf (max)
// and +inf (min); a NaN in a max or min is the result, as in numpy.
//
// Every output element adds up its inputs in their memory order, in one thread, so results do not
// depend on the thread count; sums are kept in double. Gradients: the sum spreads dy to every input
// of the element, the mean dy / count; max and min send dy to the first input that holds the
// extreme (the others get 0).
#include <cmath>
#include <limits>

#include "graph/ops/builtin_ops.h"

namespace lowbit::ops {
namespace {

enum class Kind { Sum, Mean, Max, Min };

// The reduced axes of `shape` (one flag per dimension) from the node's attributes.
std::vector<bool> reduced_axes(const Node& node, const Shape& shape) {
  const int64_t rank = static_cast<int64_t>(shape.size());
  const std::vector<int64_t> axes = node.attr_ints("axes", {});
  const bool noop = node.attr_int("noop_with_empty_axes", 0) != 0;
  std::vector<bool> reduced(shape.size(), axes.empty() && !noop);
  for (int64_t a : axes) {
    if (a < -rank || a >= rank)
      shape_error(node, "axis " + std::to_string(a) + " is out of range for input " + to_string(shape));
    const size_t d = static_cast<size_t>(a < 0 ? a + rank : a);
    if (reduced[d]) shape_error(node, "attribute 'axes' names axis " + std::to_string(d) + " twice");
    reduced[d] = true;
  }
  return reduced;
}

// Input and output layout: for each input dimension, its size and the output stride it moves by
// (0 along a reduced axis), so that walking the input in memory order gives each element's output.
struct Walk {
  Shape in_shape, out_shape;
  std::vector<int64_t> out_stride;  // per input dimension
  int64_t count = 1;                // inputs per output element
};

Walk walk_of(const Node& node, const Shape& in) {
  const std::vector<bool> reduced = reduced_axes(node, in);
  const bool keep = node.attr_int("keepdims", 1) != 0;
  Walk w;
  w.in_shape = in;
  w.out_stride.assign(in.size(), 0);
  for (size_t d = 0; d < in.size(); ++d) {
    if (reduced[d]) {
      w.count *= in[d];
      if (keep) w.out_shape.push_back(1);
    } else {
      w.out_shape.push_back(in[d]);
    }
  }
  int64_t stride = 1;
  for (size_t d = in.size(); d-- > 0;)
    if (!reduced[d]) w.out_stride[d] = stride, stride *= in[d];
  return w;
}

// Calls f(input index, output index) for every input element, in memory order.
template <typename F>
void for_each_element(const Walk& w, F f) {
  const size_t rank = w.in_shape.size();
  int64_t total = 1;
  for (int64_t d : w.in_shape) total *= d;
  if (total == 0) return;
  std::vector<int64_t> index(rank, 0);
  int64_t out = 0;
  for (int64_t i = 0; i < total; ++i) {
    f(i, out);
    for (size_t d = rank; d-- > 0;) {  // odometer: the last dimension moves fastest
      out += w.out_stride[d];
      if (++index[d] < w.in_shape[d]) break;
      out -= w.out_stride[d] * w.in_shape[d];
      index[d] = 0;
    }
  }
}

template <Kind kKind>
class Reduce final : public Op {
 public:
  explicit Reduce(const char* onnx) { traits_ = {.onnx = onnx}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    return {walk_of(node, in[0]).out_shape};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::F32) shape_error(node, std::string("input must be f32, got ") + name_of(in[0]));
    return {DType::F32};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Walk w = walk_of(node, in[0]->shape());
    out[0]->resize(w.out_shape);
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    const int64_t n = out[0]->numel();
    if constexpr (kKind == Kind::Sum || kKind == Kind::Mean) {
      std::vector<double> sum(static_cast<size_t>(n), 0.0);
      for_each_element(w, [&](int64_t i, int64_t o) { sum[o] += x[i]; });
      for (int64_t o = 0; o < n; ++o)
        y[o] = static_cast<float>(kKind == Kind::Sum ? sum[o] : sum[o] / static_cast<double>(w.count));
    } else {
      constexpr float kStart = kKind == Kind::Max ? -std::numeric_limits<float>::infinity()
                                                  : std::numeric_limits<float>::infinity();
      std::fill_n(y, n, kStart);
      for_each_element(w, [&](int64_t i, int64_t o) {
        if (better(x[i], y[o])) y[o] = x[i];
      });
    }
  }
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const Walk w = walk_of(node, in[0]->shape());
    in_grad[0]->resize(in[0]->shape());
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    if constexpr (kKind == Kind::Sum || kKind == Kind::Mean) {
      const float scale = kKind == Kind::Sum ? 1.0f : 1.0f / static_cast<float>(w.count);
      for_each_element(w, [&](int64_t i, int64_t o) { dx[i] = dy[o] * scale; });
    } else {
      const float* x = in[0]->data<float>();
      const float* y = out[0]->data<float>();
      std::vector<bool> taken(static_cast<size_t>(out[0]->numel()), false);
      for_each_element(w, [&](int64_t i, int64_t o) {
        const bool first = !taken[o] && (x[i] == y[o] || (std::isnan(x[i]) && std::isnan(y[o])));
        if (first) taken[o] = true;
        dx[i] = first ? dy[o] : 0.0f;
      });
    }
  }

 private:
  // Whether v replaces the running extreme m (a NaN wins and stays).
  static bool better(float v, float m) {
    if (std::isnan(m)) return false;
    if (std::isnan(v)) return true;
    return kKind == Kind::Max ? v > m : v < m;
  }
};

}  // namespace

void register_reduce(const Registrar& add) {
  add("ReduceSum", std::make_unique<Reduce<Kind::Sum>>("ReduceSum"));
  add("ReduceMean", std::make_unique<Reduce<Kind::Mean>>("ReduceMean"));
  add("ReduceMax", std::make_unique<Reduce<Kind::Max>>("ReduceMax"));
  add("ReduceMin", std::make_unique<Reduce<Kind::Min>>("ReduceMin"));
}

}  // namespace lowbit::ops
