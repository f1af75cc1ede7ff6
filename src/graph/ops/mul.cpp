// Mul: y = a * b element-wise with numpy / ONNX broadcasting (broadcast.h), as ONNX Mul, e.g. a
// per-channel scale [C, 1, 1] on NCHW activations, or a gate [N, 1] on [N, F] features.
// Gradients: da = dy * b and db = dy * a, each summed over the dimensions its input was broadcast
// along; the sums run in output order on one thread, so they do not depend on the thread count.
#include <algorithm>

#include "graph/ops/broadcast.h"
#include "graph/ops/builtin_ops.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {

Shape broadcast_shape(const Node& node, const Shape& a, const Shape& b) {
  const size_t rank = std::max(a.size(), b.size());
  Shape out(rank);
  for (size_t k = 0; k < rank; ++k) {  // k counts from the last dimension
    const int64_t x = k < a.size() ? a[a.size() - 1 - k] : 1, y = k < b.size() ? b[b.size() - 1 - k] : 1;
    int64_t& o = out[rank - 1 - k];
    if (x == y || y == 1)
      o = x;
    else if (x == 1)
      o = y;
    else if (x < 0 || y < 0)
      o = std::max(x, y);  // -1 against n > 1: the run-time size must be n
    else
      shape_error(node, "inputs " + to_string(a) + " and " + to_string(b) + " do not broadcast (dimension " +
                            std::to_string(rank - 1 - k) + " of the result: " + std::to_string(x) + " against " +
                            std::to_string(y) + ")");
  }
  return out;
}

int64_t Broadcast::numel() const {
  int64_t n = 1;
  for (int64_t d : out) n *= d;
  return n;
}

Broadcast plan_broadcast(const Node& node, const Shape& a, const Shape& b) {
  Broadcast m;
  m.out = broadcast_shape(node, a, b);
  const size_t rank = m.out.size();
  auto strides = [&](const Shape& s) {
    std::vector<int64_t> stride(rank, 0);
    int64_t step = 1;
    for (size_t k = 0; k < s.size(); ++k) {
      const size_t d = rank - 1 - k, sd = s.size() - 1 - k;
      stride[d] = s[sd] == 1 && m.out[d] != 1 ? 0 : step;
      step *= s[sd];
    }
    return stride;
  };
  m.stride_a = strides(a);
  m.stride_b = strides(b);
  m.same_shapes = a == b;
  return m;
}

namespace {

class Mul final : public Op {
 public:
  Mul() { traits_ = {.onnx = "Mul"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 2);
    return {broadcast_shape(node, in[0], in[1])};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Broadcast m = plan_broadcast(node, in[0]->shape(), in[1]->shape());
    out[0]->resize(m.out);
    const float* a = in[0]->data<float>();
    const float* b = in[1]->data<float>();
    float* y = out[0]->data<float>();
    parallel_for(m.numel(), 16384, [&](int64_t begin, int64_t end) {
      if (m.same_shapes) {
        for (int64_t i = begin; i < end; ++i) y[i] = a[i] * b[i];
      } else {
        for_each_broadcast(m, begin, end, [&](int64_t i, int64_t ia, int64_t ib) { y[i] = a[ia] * b[ib]; });
      }
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Broadcast m = plan_broadcast(node, in[0]->shape(), in[1]->shape());
    const float* a = in[0]->data<float>();
    const float* b = in[1]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    // d(input) = dy * (the other input), summed where `input` was broadcast.
    auto gradient = [&](int which) {
      Tensor* grad = in_grad[which];
      if (!grad) return;
      grad->resize(in[which]->shape());
      float* g = grad->data<float>();
      const float* other = which == 0 ? b : a;
      if (m.same_shapes) {
        parallel_for(m.numel(), 16384, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) g[i] = dy[i] * other[i];
        });
        return;
      }
      std::fill(g, g + grad->numel(), 0.0f);
      for_each_broadcast(m, 0, m.numel(), [&](int64_t i, int64_t ia, int64_t ib) {
        g[which == 0 ? ia : ib] += dy[i] * other[which == 0 ? ib : ia];
      });
    };
    gradient(0);
    if (in_grad.size() > 1) gradient(1);
  }
};

}  // namespace

void register_mul(const Registrar& add) { add("Mul", std::make_unique<Mul>()); }

}  // namespace lowbit::ops
