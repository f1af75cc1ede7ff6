// Fake quantization for quantization-aware training: FakeQuantize (straight-through estimator,
// parameters held fixed or set by an observer) and LsqFakeQuantize (the scale is learned, LSQ).
//
// Inputs: x (f32), scale (f32 [C]), zero_point (s32 [C]); C = 1 (per tensor) or C = x.dim(axis)
// with attribute axis = 0 (per output channel of a weight). Attributes qmin, qmax: the integer grid.
// The forward pass is QuantParams::quantize then dequantize (lowbit::fake_quantize_f32), so a model
// trained with these ops sees exactly the values the integer runtime will compute with.
//
// LsqFakeQuantize multiplies the scale gradient by g = 1 / sqrt(N * Q_P) (LSQ's gradient scale),
// N = the number of values sharing one scale in one sample (elements per channel for weights,
// features per sample for activations), Q_P = qmax - zero_point (the positive levels).
#include <algorithm>
#include <cmath>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "lowbit/elementwise.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

struct Layout {  // x viewed as [outer, channels, inner]; per tensor: channels = 1, outer = batch
  int64_t channels, inner, outer;
};

// The grid of every channel, checked once per call (attributes are JSON lookups: never per row).
std::vector<FakeQuantGrid> grids_of(const Node& node, const Tensor& scale, const Tensor& zero_point) {
  const int32_t qmin = static_cast<int32_t>(node.attr_int("qmin", -128)), qmax = static_cast<int32_t>(node.attr_int("qmax", 127));
  std::vector<FakeQuantGrid> grids(static_cast<size_t>(scale.numel()));
  for (int64_t c = 0; c < scale.numel(); ++c) {
    grids[c] = {scale.data<float>()[c], zero_point.data<int32_t>()[c], qmin, qmax};
    if (!(grids[c].scale > 0.0f) || !std::isfinite(grids[c].scale))
      shape_error(node, "scale[" + std::to_string(c) + "] must be positive and finite, got " + std::to_string(grids[c].scale));
  }
  return grids;
}

template <bool kLearnScale>
class FakeQuantizeOp final : public Op {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 3);
    const int64_t axis = node.attr_int("axis", -1);
    if (axis != -1 && axis != 0) shape_error(node, "attribute 'axis' must be -1 (per tensor) or 0 (per channel)");
    if (node.attr_int("qmin", -128) >= node.attr_int("qmax", 127)) shape_error(node, "attribute 'qmin' must be below 'qmax'");
    const int64_t channels = axis == 0 ? in[0].at(0) : 1;
    if (in[1] != Shape{channels} || in[2] != Shape{channels})
      shape_error(node, "scale and zero_point must be [" + std::to_string(channels) + "], got " + to_string(in[1]) + " and " +
                            to_string(in[2]));
    return {in[0]};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::F32 || in[1] != DType::F32 || in[2] != DType::S32)
      shape_error(node, "inputs must be f32 x, f32 scale and s32 zero_point");
    return {DType::F32};
  }
  bool differentiable_input(int index) const override { return index == 0 || (kLearnScale && index == 1); }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Tensor& x = *in[0];
    const Layout l = layout(node, x);
    const std::vector<FakeQuantGrid> grids = grids_of(node, *in[1], *in[2]);
    out[0]->resize(x.shape());
    const float* src = x.data<float>();
    float* dst = out[0]->data<float>();
    parallel_for(l.outer * l.channels, grain(l), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fake_quantize_f32(l.inner, src + i * l.inner, grids[i % l.channels], dst + i * l.inner);
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const Tensor& x = *in[0];
    const Layout l = layout(node, x);
    float* dx = nullptr;
    if (in_grad[0]) {
      in_grad[0]->resize(x.shape());
      dx = in_grad[0]->data<float>();
    }
    const bool want_scale = kLearnScale && in_grad.size() > 1 && in_grad[1];
    if (!dx && !want_scale) return;
    const std::vector<FakeQuantGrid> grids = grids_of(node, *in[1], *in[2]);
    std::vector<double> partial(static_cast<size_t>(l.outer * l.channels), 0.0);
    const float* src = x.data<float>();
    const float* dy = out_grad[0]->data<float>();
    parallel_for(l.outer * l.channels, grain(l), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i)
        partial[i] = fake_quantize_backward_f32(l.inner, src + i * l.inner, dy + i * l.inner, grids[i % l.channels],
                                                dx ? dx + i * l.inner : nullptr, want_scale);
    });
    if (!want_scale) return;
    // Reduced in a fixed order, whatever the thread count.
    Tensor& ds = *in_grad[1];
    ds.resize({l.channels});
    for (int64_t c = 0; c < l.channels; ++c) {
      // Q_P, the number of positive levels: qmax for symmetric grids, qmax - zero_point in general.
      const int64_t levels = std::max<int64_t>(1, int64_t{grids[c].qmax} - grids[c].zero_point);
      const double g = 1.0 / std::sqrt(static_cast<double>(std::max<int64_t>(1, l.inner)) * static_cast<double>(levels));
      double sum = 0.0;
      for (int64_t o = 0; o < l.outer; ++o) sum += partial[o * l.channels + c];
      ds.data<float>()[c] = static_cast<float>(sum * g);
    }
  }

 private:
  // Rows per task: at least 8K values (a fork-join costs about a microsecond with bound, spinning threads).
  static int64_t grain(const Layout& l) { return std::max<int64_t>(1, (int64_t{1} << 13) / std::max<int64_t>(1, l.inner)); }
  static Layout layout(const Node& node, const Tensor& x) {
    if (node.attr_int("axis", -1) == 0) return {x.dim(0), x.numel() / std::max<int64_t>(1, x.dim(0)), 1};
    // Per tensor: one row per sample, so N (LSQ's features per sample) is the row length.
    const int64_t batch = x.rank() > 0 ? x.dim(0) : 1;
    return {1, batch > 0 ? x.numel() / batch : 0, batch};
  }
};

}  // namespace

void register_fake_quant(const Registrar& add) {
  add("FakeQuantize", std::make_unique<FakeQuantizeOp<false>>());
  add("LsqFakeQuantize", std::make_unique<FakeQuantizeOp<true>>());
}

}  // namespace lowbit::ops
