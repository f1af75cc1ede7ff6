// Add, Sub, Mul, Div and Pow: y = a (+, -, *, /, ^) b element-wise with numpy / ONNX broadcasting
// (broadcast.h; same shapes and a scalar operand run one contiguous loop), as the ONNX ops of those
// names: residual connections (same shapes), biases and per-channel scales ([C, 1, 1] on NCHW),
// gates ([N, 1] on [N, F]), normalization (x - mean) / std, a preprocessing scale (a scalar).
// Gradients: dy for Add, dy and -dy for Sub, dy * b and dy * a for Mul, dy / b and -dy * y / b for
// Div, dy * b * a^(b-1) and dy * y * ln a for Pow, each summed over the
// dimensions its input was broadcast along; the sums run in output order on one thread, so they do
// not depend on the thread count. Both inputs receive their own gradient tensor (never shared:
// the executor may add further contributions into either); Add(x, x) works, the executor sums the
// two contributions.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/ops/broadcast.h"
#include "graph/ops/builtin_ops.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

enum class Arithmetic { Add, Sub, Mul, Div, Pow };

template <Arithmetic kind> float apply(float a, float b) {
  if constexpr (kind == Arithmetic::Add) return a + b;
  if constexpr (kind == Arithmetic::Sub) return a - b;
  if constexpr (kind == Arithmetic::Mul) return a * b;
  if constexpr (kind == Arithmetic::Pow) return std::pow(a, b);
  return a / b;
}

template <Arithmetic kind> class Binary final : public Op {
 public:
  explicit Binary(const char* onnx) { traits_ = {.onnx = onnx}; }
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
    // A scalar operand (a scale, an offset): one contiguous loop over the other.
    const bool scalar_b = in[1]->numel() == 1 && m.out == in[0]->shape();
    const bool scalar_a = !scalar_b && in[0]->numel() == 1 && m.out == in[1]->shape();
    parallel_for(m.numel(), 16384, [&](int64_t i0, int64_t i1) {
      if (m.same_shapes) {
        const float* __restrict pa = a;
        const float* __restrict pb = b;
        float* __restrict py = y;
        for (int64_t i = i0; i < i1; ++i) py[i] = apply<kind>(pa[i], pb[i]);
      } else if (scalar_b) {
        const float* __restrict pa = a;
        const float s = *b;
        float* __restrict py = y;
        for (int64_t i = i0; i < i1; ++i) py[i] = apply<kind>(pa[i], s);
      } else if (scalar_a) {
        const float s = *a;
        const float* __restrict pb = b;
        float* __restrict py = y;
        for (int64_t i = i0; i < i1; ++i) py[i] = apply<kind>(s, pb[i]);
      } else {
        for_each_broadcast(m, i0, i1, [&](int64_t i, int64_t ia, int64_t ib) { y[i] = apply<kind>(a[ia], b[ib]); });
      }
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Broadcast m = plan_broadcast(node, in[0]->shape(), in[1]->shape());
    const float* a = in[0]->data<float>();
    const float* b = in[1]->data<float>();
    const float* y = out[0]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    // The gradient of output element i (at input offsets ia, ib) with respect to input `which`.
    auto local = [&](int which, int64_t i, int64_t ia, int64_t ib) -> float {
      (void)ia;  // read by Mul only
      if constexpr (kind == Arithmetic::Add) return dy[i];
      if constexpr (kind == Arithmetic::Sub) return which == 0 ? dy[i] : -dy[i];
      if constexpr (kind == Arithmetic::Mul) return which == 0 ? dy[i] * b[ib] : dy[i] * a[ia];
      if constexpr (kind == Arithmetic::Pow)  // d/da a^b = b a^(b-1); d/db a^b = a^b ln a
        return which == 0 ? dy[i] * b[ib] * std::pow(a[ia], b[ib] - 1.0f) : dy[i] * y[i] * std::log(a[ia]);
      return which == 0 ? dy[i] / b[ib] : -dy[i] * y[i] / b[ib];
    };
    for (int which = 0; which < 2 && which < static_cast<int>(in_grad.size()); ++which) {
      Tensor* grad = in_grad[which];
      if (!grad) continue;
      grad->resize(in[which]->shape());
      float* g = grad->data<float>();
      if (kind == Arithmetic::Add && m.same_shapes) {
        std::memcpy(g, dy, out_grad[0]->nbytes());
        continue;
      }
      if (m.same_shapes) {
        parallel_for(m.numel(), 16384, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) g[i] = local(which, i, i, i);
        });
        continue;
      }
      std::fill(g, g + grad->numel(), 0.0f);
      for_each_broadcast(m, 0, m.numel(), [&](int64_t i, int64_t ia, int64_t ib) {
        g[which == 0 ? ia : ib] += local(which, i, ia, ib);
      });
    }
  }
};

}  // namespace

void register_arithmetic(const Registrar& add) {
  add("Add", std::make_unique<Binary<Arithmetic::Add>>("Add"));
  add("Sub", std::make_unique<Binary<Arithmetic::Sub>>("Sub"));
  add("Mul", std::make_unique<Binary<Arithmetic::Mul>>("Mul"));
  add("Div", std::make_unique<Binary<Arithmetic::Div>>("Div"));
  add("Pow", std::make_unique<Binary<Arithmetic::Pow>>("Pow"));
}

}  // namespace lowbit::ops
