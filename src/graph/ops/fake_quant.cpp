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
//
// Observers (FakeQuantize only; they act in the training forward pass, like PyTorch's
// FakeQuantize modules, and write the grid into the scale and zero_point initializers in place):
//   observer "minmax": before quantizing, the grid of each channel (or of the tensor) is fitted to
//     the current values' range widened to include 0 (fit_channel; weights, every step), in the
//     same pass over each channel.
//   observer "moving_average": quantizes with the current grid while taking the batch's min and
//     max in the same pass, then moves the running range (4th input, f32 [2], updated in place) by
//     `averaging` toward them and fits the grid for the next step; from step `observer_steps` on
//     (when >= 0) the grid is frozen. Non-finite batch ranges are skipped.
#include <algorithm>
#include <cmath>
#include <limits>
#include <memory>
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "kernels/elementwise.h"
#include "lowbit/quant_params.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

struct Layout {  // x viewed as [outer, channels, inner]; per tensor: channels = 1, outer = batch
  int64_t channels, inner, outer;
};

// The node's attributes, parsed once per executor (Op::prepare; they are map lookups) or, without
// an executor, once per call (see parsed()).
struct Attrs : OpState {
  int64_t axis = -1;
  int32_t qmin = -128, qmax = 127;
  enum class Observer { None, MinMax, MovingAverage } observer = Observer::None;
  int64_t freeze = -1;       // observer_steps
  float averaging = 0.01f;
  QuantParams grid;          // bits, scheme and range of the grid (scales and zero points unset)
  static Attrs of(const Node& node) {
    Attrs a;
    a.axis = node.attr_int("axis", -1);
    a.qmin = static_cast<int32_t>(node.attr_int("qmin", -128));
    a.qmax = static_cast<int32_t>(node.attr_int("qmax", 127));
    const std::string observer = node.attr_string("observer", "none");
    a.observer = observer == "minmax" ? Observer::MinMax : observer == "moving_average" ? Observer::MovingAverage : Observer::None;
    a.freeze = node.attr_int("observer_steps", -1);
    a.averaging = static_cast<float>(node.attr_float("averaging", 0.01));
    a.grid.bits = static_cast<int>(node.attr_int("bits", 8));
    a.grid.is_signed = a.qmin < 0;
    a.grid.scheme = node.attr_string("scheme", "affine") == "symmetric" ? QScheme::Symmetric : QScheme::Affine;
    a.grid.narrow_range = a.qmin == -a.qmax;
    a.grid.axis = static_cast<int>(a.axis);
    if (a.observer != Observer::None && (a.grid.qmin() != a.qmin || a.grid.qmax() != a.qmax))
      shape_error(node, "attributes qmin/qmax [" + std::to_string(a.qmin) + ", " + std::to_string(a.qmax) + "] are not the " +
                            std::to_string(a.grid.bits) + "-bit " + node.attr_string("scheme", "affine") + " grid");
    return a;
  }
  // The prepared attributes, or `storage` filled from the node when there is no state.
  static const Attrs& parsed(const Node& node, const OpState* state, Attrs& storage) {
    if (state) return state_as<Attrs>(state);
    return storage = of(node);
  }
};

// The grid of every channel, checked once per call.
std::vector<FakeQuantGrid> grids_of(const Node& node, const Attrs& a, const Tensor& scale, const Tensor& zero_point) {
  std::vector<FakeQuantGrid> grids(static_cast<size_t>(scale.numel()));
  for (int64_t c = 0; c < scale.numel(); ++c) {
    grids[c] = {scale.data<float>()[c], zero_point.data<int32_t>()[c], a.qmin, a.qmax};
    if (!(grids[c].scale > 0.0f) || !std::isfinite(grids[c].scale))
      shape_error(node, "scale[" + std::to_string(c) + "] must be positive and finite, got " + std::to_string(grids[c].scale));
  }
  return grids;
}

template <bool kLearnScale>
class FakeQuantizeOp final : public Op {
 public:
  FakeQuantizeOp() { traits_ = {.fake_quantize = true, .learns_scale = kLearnScale}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, kLearnScale ? 3 : 4);
    const std::string observer = node.attr_string("observer", "none");
    if (observer != "none" && observer != "minmax" && observer != "moving_average")
      shape_error(node, "attribute 'observer' must be \"none\", \"minmax\" or \"moving_average\", got \"" + observer + "\"");
    if (observer == "moving_average" && (in.size() != 4 || in[3] != Shape{2}))
      shape_error(node, "the moving-average observer needs its running range as a 4th input f32 [2]");
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
    if (in[0] != DType::F32 || in[1] != DType::F32 || in[2] != DType::S32 || (in.size() == 4 && in[3] != DType::F32))
      shape_error(node, "inputs must be f32 x, f32 scale, s32 zero_point (and f32 running range)");
    return {DType::F32};
  }
  bool differentiable_input(int index) const override { return index == 0 || (kLearnScale && index == 1); }

  std::shared_ptr<const OpState> prepare(const Node& node, std::span<const Tensor* const>) const override {
    return std::make_shared<Attrs>(Attrs::of(node));
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    Workspace workspace;
    forward_prepared(node, nullptr, in, out, workspace);
  }
  void forward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out, Workspace&) const override {
    Attrs storage;
    const Attrs& a = Attrs::parsed(node, state, storage);
    const Tensor& x = *in[0];
    const Layout l = layout(a, x);
    const std::vector<FakeQuantGrid> grids = grids_of(node, a, *in[1], *in[2]);
    out[0]->resize(x.shape());
    const float* src = x.data<float>();
    float* dst = out[0]->data<float>();
    parallel_for(l.outer * l.channels, grain(l), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fake_quantize_f32(l.inner, src + i * l.inner, grids[i % l.channels], dst + i * l.inner);
    });
  }

  void forward_train(const Node& node, const OpState* state, const RunContext& context, std::span<Tensor* const> in,
                     std::span<Tensor* const> out, Workspace& workspace) const override {
    Attrs storage;
    const Attrs& a = Attrs::parsed(node, state, storage);
    if constexpr (!kLearnScale) {
      if (a.observer == Attrs::Observer::MinMax) return observe_minmax(node, a, in, *out[0]);
      if (a.observer == Attrs::Observer::MovingAverage && (a.freeze < 0 || context.step < a.freeze))
        return observe_moving_average(node, a, in, *out[0]);
    }
    forward_prepared(node, &a, std::span<const Tensor* const>(in.data(), in.size()), out, workspace);
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    Workspace workspace;
    backward_prepared(node, nullptr, in, out, out_grad, in_grad, workspace);
  }
  void backward_prepared(const Node& node, const OpState* state, std::span<const Tensor* const> in,
                         std::span<const Tensor* const>, std::span<const Tensor* const> out_grad,
                         std::span<Tensor* const> in_grad, Workspace&) const override {
    Attrs storage;
    const Attrs& a = Attrs::parsed(node, state, storage);
    const Tensor& x = *in[0];
    const Layout l = layout(a, x);
    const bool want_scale = kLearnScale && in_grad.size() > 1 && in_grad[1];
    if (!in_grad[0] && !want_scale) return;
    if (!kLearnScale && all_inside(a, *in[1])) {  // the mask is all ones: dx is dy, shared, not copied
      *in_grad[0] = *out_grad[0];
      return;
    }
    float* dx = nullptr;
    if (in_grad[0]) {
      in_grad[0]->resize(x.shape());
      dx = in_grad[0]->data<float>();
    }
    const std::vector<FakeQuantGrid> grids = grids_of(node, a, *in[1], *in[2]);
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
  // True when the straight-through mask is all ones by construction: a symmetric grid that the
  // min-max observer fitted to these very values in this step's forward pass (weights; the
  // optimizer has not run since). The largest |x| then has x / scale = qmax (1 + e), |e| <= 2^-23
  // for a normal scale, which rounds to qmax, and every other value lies within [-qmax, qmax];
  // qmin <= -qmax. A subnormal scale (the bound itself tiny) takes the general path.
  static bool all_inside(const Attrs& a, const Tensor& scale) {
    if (a.qmin > -a.qmax || a.observer != Attrs::Observer::MinMax || a.grid.scheme != QScheme::Symmetric) return false;
    const float* s = scale.data<float>();
    return std::all_of(s, s + scale.numel(), [](float v) { return v >= std::numeric_limits<float>::min(); });
  }

  static void non_finite(const Node& node) {
    shape_error(node, "the observed range is not finite (the values hold NaN or infinity: training diverged?)");
  }

  // observer "minmax": per channel, the range, the grid, then the fake quantization, in one pass.
  static void observe_minmax(const Node& node, const Attrs& a, std::span<Tensor* const> in, Tensor& y) {
    const Tensor& x = *in[0];
    const Layout l = layout(a, x);
    y.resize(x.shape());
    const float* src = x.data<float>();
    float* dst = y.data<float>();
    const int32_t qmin = a.qmin, qmax = a.qmax;
    QuantParams p = a.grid;
    p.scale.assign(static_cast<size_t>(l.channels), 1.0f);
    p.zero_point.assign(static_cast<size_t>(l.channels), 0);
    bool finite = true;
    if (l.channels > 1 || l.outer == 1) {  // per channel (or a one-row tensor): rows are channels
      std::vector<char> ok(static_cast<size_t>(l.channels), 1);
      parallel_for(l.channels, grain(l), [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
          float lo = 0.0f, hi = 0.0f;
          if (l.inner > 0) minmax_f32(l.inner, src + c * l.inner, &lo, &hi);
          lo = std::min(0.0f, lo), hi = std::max(0.0f, hi);  // std::min(0, NaN) is 0
          if (!std::isfinite(lo) || !std::isfinite(hi)) {
            ok[c] = 0;
            continue;
          }
          fit_channel(p, static_cast<size_t>(c), lo, hi);
          fake_quantize_f32(l.inner, src + c * l.inner, {p.scale[c], p.zero_point[c], qmin, qmax}, dst + c * l.inner);
        }
      });
      finite = std::all_of(ok.begin(), ok.end(), [](char v) { return v != 0; });
    } else {  // per tensor over several rows: the whole range first
      float lo = 0.0f, hi = 0.0f;
      if (x.numel() > 0) minmax_f32(x.numel(), src, &lo, &hi);
      lo = std::min(0.0f, lo), hi = std::max(0.0f, hi);
      finite = std::isfinite(lo) && std::isfinite(hi);
      if (finite) {
        fit_channel(p, 0, lo, hi);
        const FakeQuantGrid grid{p.scale[0], p.zero_point[0], qmin, qmax};
        parallel_for(l.outer, grain(l), [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) fake_quantize_f32(l.inner, src + i * l.inner, grid, dst + i * l.inner);
        });
      }
    }
    if (!finite) non_finite(node);
    std::copy(p.scale.begin(), p.scale.end(), in[1]->data<float>());
    std::copy(p.zero_point.begin(), p.zero_point.end(), in[2]->data<int32_t>());
  }

  // observer "moving_average" (per tensor): quantize with the current grid and take each row's
  // range in the same pass; then move the running range and fit the grid for the next step.
  static void observe_moving_average(const Node& node, const Attrs& a, std::span<Tensor* const> in, Tensor& y) {
    const Tensor& x = *in[0];
    const Layout l = layout(a, x);
    const std::vector<FakeQuantGrid> grids = grids_of(node, a, *in[1], *in[2]);
    y.resize(x.shape());
    const float* src = x.data<float>();
    float* dst = y.data<float>();
    const int64_t rows = l.outer * l.channels;
    std::vector<float> los(static_cast<size_t>(rows), 0.0f), his(static_cast<size_t>(rows), 0.0f);
    parallel_for(rows, grain(l), [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) {
        fake_quantize_f32(l.inner, src + i * l.inner, grids[i % l.channels], dst + i * l.inner);
        if (l.inner > 0) minmax_f32(l.inner, src + i * l.inner, &los[i], &his[i]);
      }
    });
    if (rows == 0 || l.inner == 0) return;
    float lo, hi, ignored;  // min and max over the rows (NaN-free rows only, as minmax_f32 ignores NaN)
    minmax_f32(rows, los.data(), &lo, &ignored);
    minmax_f32(rows, his.data(), &ignored, &hi);
    if (!std::isfinite(lo) || !std::isfinite(hi)) return;  // a bad batch does not move the observer
    float* range = in[3]->data<float>();
    range[0] += a.averaging * (lo - range[0]);
    range[1] += a.averaging * (hi - range[1]);
    QuantParams p = a.grid;
    p.scale.assign(1, 1.0f);
    p.zero_point.assign(1, 0);
    fit_channel(p, 0, range[0], range[1]);
    in[1]->data<float>()[0] = p.scale[0];
    in[2]->data<int32_t>()[0] = p.zero_point[0];
  }

  // Rows per task: at least 8K values (a fork-join costs about a microsecond with bound, spinning threads).
  static int64_t grain(const Layout& l) { return plane_grain(l.inner, int64_t{1} << 13); }
  static Layout layout(const Attrs& a, const Tensor& x) {
    if (a.axis == 0) return {x.dim(0), x.numel() / std::max<int64_t>(1, x.dim(0)), 1};
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
