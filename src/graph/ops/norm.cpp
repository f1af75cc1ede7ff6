// Normalization, regularization and averaging ops on NCHW activations: BatchNormalization,
// Dropout, AveragePool2D and GlobalAveragePool. Attribute names and semantics follow ONNX
// (BatchNormalization, Dropout, AveragePool, GlobalAveragePool).
//
// BatchNormalization and Dropout behave differently in training (Op::forward_train, run by a
// training Executor with its RunContext) and in inference (forward):
//   - BatchNormalization normalizes with the batch's statistics and updates the running
//     statistics (its inputs 3 and 4, initializers shared with the model) in training; it uses the
//     running statistics in inference.
//   - Dropout zeroes a random fraction `ratio` of the values and scales the rest by 1/(1 - ratio)
//     in training (inverted dropout); it is the identity in inference.
// backward() is only called after forward_train, so it differentiates the training forward:
// BatchNormalization's gradient goes through the batch statistics, Dropout's through its mask.
//
// Determinism: every reduction runs in one thread in a fixed order (per channel, or per plane),
// in double over eight float lanes per run, and Dropout's mask is drawn in fixed chunks of values
// each with its own seeded Rng, so results are bit-identical for any thread count.
#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "lowbit/random.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// sum(x[0..n)) in eight float lanes (vectorizable, one fixed order), the lanes added in double.
double sum_run(const float* __restrict x, int64_t n) {
  float lanes[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += x[q + l];
  for (; q < n; ++q) lanes[q % 8] += x[q];
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// sum((x - center)^2) and sum(dy * (x - center)) over a run, as sum_run.
double sum_squared_deviation(const float* __restrict x, float center, int64_t n) {
  float lanes[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int l = 0; l < 8; ++l) {
      const float d = x[q + l] - center;
      lanes[l] += d * d;
    }
  for (; q < n; ++q) {
    const float d = x[q] - center;
    lanes[q % 8] += d * d;
  }
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

double sum_product_deviation(const float* __restrict dy, const float* __restrict x, float center, int64_t n) {
  float lanes[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += dy[q + l] * (x[q + l] - center);
  for (; q < n; ++q) lanes[q % 8] += dy[q] * (x[q] - center);
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// dst = src * a + b (two roundings: -ffp-contract=off keeps it the same on every path).
void scale_shift(const float* __restrict src, float a, float b, float* __restrict dst, int64_t n) {
  for (int64_t q = 0; q < n; ++q) dst[q] = src[q] * a + b;
}

// ---- BatchNormalization ------------------------------------------------------------------------

// x viewed as [batch, channels, spatial]: spatial = H*W for NCHW input, 1 for [N, C].
struct NormGeometry {
  int64_t batch = 0, channels = 0, spatial = 1;
  int64_t per_channel() const { return batch * spatial; }  // values behind one channel's statistics
  int64_t plane(int64_t n, int64_t c) const { return (n * channels + c) * spatial; }
};

NormGeometry norm_geometry(const Node& node, const Shape& x) {
  if (x.size() != 2 && x.size() != 4)
    shape_error(node, "input must be [batch, channels] or NCHW [batch, channels, height, width], got " + to_string(x));
  for (size_t i = 1; i < x.size(); ++i)
    if (x[i] < 1) shape_error(node, "input " + to_string(x) + " must have known, positive dimensions after the batch");
  NormGeometry g;
  g.batch = x[0], g.channels = x[1];
  if (x.size() == 4) g.spatial = x[2] * x[3];
  return g;
}

struct NormAttributes {
  float epsilon = 1e-5f, momentum = 0.9f;
};

NormAttributes norm_attributes(const Node& node) {
  NormAttributes a;
  a.epsilon = static_cast<float>(node.attr_float("epsilon", 1e-5));
  a.momentum = static_cast<float>(node.attr_float("momentum", 0.9));
  if (!(a.epsilon > 0.0f)) shape_error(node, "attribute 'epsilon' must be positive");
  if (!(a.momentum >= 0.0f && a.momentum <= 1.0f)) shape_error(node, "attribute 'momentum' must be in [0, 1]");
  if (node.attr_int("training_mode", 0) != 0)
    shape_error(node, "attribute 'training_mode' is not supported: the executor decides the mode");
  return a;
}

// The mean and biased variance of every channel of x: two passes (mean, then squared deviations
// from the float mean), each channel in one thread.
void batch_statistics(const NormGeometry& g, const float* x, std::vector<float>& mean, std::vector<double>& variance) {
  mean.assign(static_cast<size_t>(g.channels), 0.0f);
  variance.assign(static_cast<size_t>(g.channels), 0.0);
  const double count = static_cast<double>(g.per_channel());
  parallel_for(g.channels, plane_grain(g.per_channel()), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < g.batch; ++n) sum += sum_run(x + g.plane(n, c), g.spatial);
      const float m = static_cast<float>(sum / count);
      double squares = 0;
      for (int64_t n = 0; n < g.batch; ++n) squares += sum_squared_deviation(x + g.plane(n, c), m, g.spatial);
      mean[c] = m;
      variance[c] = squares / count;
    }
  });
}

// y[n, c, ...] = x[n, c, ...] * a[c] + b[c], in parallel over planes.
void apply_per_channel(const NormGeometry& g, const float* x, const std::vector<float>& a, const std::vector<float>& b,
                       float* y) {
  parallel_for(g.batch * g.channels, plane_grain(g.spatial), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % g.channels;
      scale_shift(x + p * g.spatial, a[c], b[c], y + p * g.spatial, g.spatial);
    }
  });
}

// Inputs: x, scale [C], B [C], input_mean [C], input_var [C] (the running statistics).
//   inference: y = scale * (x - running_mean) / sqrt(running_var + epsilon) + B
//   training:  y = scale * (x - batch_mean) / sqrt(batch_var + epsilon) + B, with the biased batch
//              variance (divided by m = N*H*W), then, as PyTorch does,
//              running_mean = momentum * running_mean + (1 - momentum) * batch_mean
//              running_var  = momentum * running_var  + (1 - momentum) * batch_var * m / (m - 1)
//              (the unbiased variance; the biased one when m = 1). ONNX's momentum: 0.9 here is
//              PyTorch's momentum=0.1.
// Both compute y = x * a[c] + b[c] with a = scale / sqrt(var + epsilon), b = B - mean * a.
class BatchNormalization final : public Op {
 public:
  BatchNormalization() { traits_ = {.onnx = "BatchNormalization", .folds_into_layer = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 5, 5);
    norm_attributes(node);
    const NormGeometry g = norm_geometry(node, in[0]);
    static const char* names[] = {"", "scale", "B", "input_mean", "input_var"};
    for (size_t i = 1; i < 5; ++i)
      if (in[i].size() != 1 || in[i][0] != g.channels)
        shape_error(node, std::string(names[i]) + " must be [" + std::to_string(g.channels) + "] (the channels of input " +
                              to_string(in[0]) + "), got " + to_string(in[i]));
    return {in[0]};
  }
  // The running statistics are state, updated by forward_train, not learned.
  bool differentiable_input(int index) const override { return index < 3; }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const NormGeometry g = norm_geometry(node, in[0]->shape());
    const NormAttributes attributes = norm_attributes(node);
    out[0]->resize(in[0]->shape());
    const float* scale = in[1]->data<float>();
    const float* bias = in[2]->data<float>();
    const float* running_mean = in[3]->data<float>();
    const float* running_var = in[4]->data<float>();
    std::vector<float> a(static_cast<size_t>(g.channels)), b(static_cast<size_t>(g.channels));
    for (int64_t c = 0; c < g.channels; ++c) {
      a[c] = static_cast<float>(scale[c] / std::sqrt(static_cast<double>(running_var[c]) + attributes.epsilon));
      b[c] = bias[c] - running_mean[c] * a[c];
    }
    apply_per_channel(g, in[0]->data<float>(), a, b, out[0]->data<float>());
  }

  void forward_train(const Node& node, const void*, const RunContext&, std::span<Tensor* const> in,
                     std::span<Tensor* const> out) const override {
    const NormGeometry g = norm_geometry(node, in[0]->shape());
    const NormAttributes attributes = norm_attributes(node);
    out[0]->resize(in[0]->shape());
    if (g.per_channel() == 0) return;  // an empty batch has no statistics: nothing to update
    const float* x = in[0]->data<float>();
    const float* scale = in[1]->data<float>();
    const float* bias = in[2]->data<float>();
    float* running_mean = in[3]->data<float>();
    float* running_var = in[4]->data<float>();
    std::vector<float> mean;
    std::vector<double> variance;
    batch_statistics(g, x, mean, variance);
    const double m = static_cast<double>(g.per_channel());
    const double correction = m > 1 ? m / (m - 1) : 1.0;
    const double keep = attributes.momentum, take = 1.0 - keep;
    std::vector<float> a(static_cast<size_t>(g.channels)), b(static_cast<size_t>(g.channels));
    for (int64_t c = 0; c < g.channels; ++c) {
      a[c] = static_cast<float>(scale[c] / std::sqrt(variance[c] + attributes.epsilon));
      b[c] = bias[c] - mean[c] * a[c];
      running_mean[c] = static_cast<float>(keep * running_mean[c] + take * mean[c]);
      running_var[c] = static_cast<float>(keep * running_var[c] + take * variance[c] * correction);
    }
    apply_per_channel(g, x, a, b, out[0]->data<float>());
  }

  // With xhat = (x - mean) * inv_std and m values per channel (the batch statistics recomputed
  // from x, exactly as forward_train computed them):
  //   dB = sum(dy),  dscale = sum(dy * xhat),
  //   dx = scale * inv_std * (dy - dB / m - xhat * dscale / m).
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    const NormGeometry g = norm_geometry(node, in[0]->shape());
    const NormAttributes attributes = norm_attributes(node);
    Tensor* dx = in_grad[0];
    Tensor* dscale = in_grad.size() > 1 ? in_grad[1] : nullptr;
    Tensor* dbias = in_grad.size() > 2 ? in_grad[2] : nullptr;
    if (dx) dx->resize(in[0]->shape());
    if (dscale) dscale->resize({g.channels});
    if (dbias) dbias->resize({g.channels});
    if (!dx && !dscale && !dbias) return;
    if (g.per_channel() == 0) {
      if (dscale) dscale->zero();
      if (dbias) dbias->zero();
      return;
    }
    const float* x = in[0]->data<float>();
    const float* scale = in[1]->data<float>();
    const float* dy = out_grad[0]->data<float>();
    std::vector<float> mean;
    std::vector<double> variance;
    batch_statistics(g, x, mean, variance);
    const double m = static_cast<double>(g.per_channel());
    parallel_for(g.channels, plane_grain(2 * g.per_channel()), [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c) {
        double sum_dy = 0, sum_dy_centered = 0;
        for (int64_t n = 0; n < g.batch; ++n) {
          sum_dy += sum_run(dy + g.plane(n, c), g.spatial);
          sum_dy_centered += sum_product_deviation(dy + g.plane(n, c), x + g.plane(n, c), mean[c], g.spatial);
        }
        const double inv_std = 1.0 / std::sqrt(variance[c] + attributes.epsilon);
        const double sum_dy_xhat = sum_dy_centered * inv_std;
        if (dbias) dbias->data<float>()[c] = static_cast<float>(sum_dy);
        if (dscale) dscale->data<float>()[c] = static_cast<float>(sum_dy_xhat);
        if (!dx) continue;
        // dx = k_dy * dy + k_x * (x - mean) + k_0
        const double k_dy = scale[c] * inv_std;
        const float a = static_cast<float>(k_dy);
        const float b = static_cast<float>(-k_dy * inv_std * sum_dy_xhat / m);
        const float k0 = static_cast<float>(-k_dy * sum_dy / m);
        const float center = mean[c];
        for (int64_t n = 0; n < g.batch; ++n) {
          const float* __restrict dyp = dy + g.plane(n, c);
          const float* __restrict xp = x + g.plane(n, c);
          float* __restrict dxp = dx->data<float>() + g.plane(n, c);
          for (int64_t q = 0; q < g.spatial; ++q) dxp[q] = a * dyp[q] + (b * (xp[q] - center) + k0);
        }
      }
    });
  }
};

// ---- Dropout -----------------------------------------------------------------------------------

// FNV-1a: a hash of the node name that is the same on every platform (std::hash is not).
uint64_t name_hash(const std::string& name) {
  uint64_t h = 0xcbf29ce484222325ULL;
  for (unsigned char ch : name) h = (h ^ ch) * 0x100000001b3ULL;
  return h;
}

uint64_t mix(uint64_t x) { return Rng(x).next_u64(); }

// Values per independently seeded piece of the mask: the split depends only on the size, so the
// mask does not depend on the thread count.
constexpr int64_t kMaskChunk = 4096;

float dropout_ratio(const Node& node) {
  const double ratio = node.attr_float("ratio", 0.5);
  if (!(ratio >= 0.0 && ratio < 1.0))
    shape_error(node, "attribute 'ratio' must be in [0, 1), got " + std::to_string(ratio));
  return static_cast<float>(ratio);
}

// Outputs: y, and optionally mask (u8, 1 where x was kept). Training: mask[i] = (u_i >= ratio)
// with u_i uniform in [0, 1) from lowbit::Rng, seeded per chunk of kMaskChunk values from
// (context seed, step, node name, chunk); y = x * mask / (1 - ratio). Inference: y = x, mask 1.
// Backward (training only): dx = dy * mask / (1 - ratio), so training needs the mask output.
class Dropout final : public Op {
 public:
  Dropout() { traits_ = {.onnx = "Dropout"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    dropout_ratio(node);
    if (node.outputs.empty() || node.outputs.size() > 2)
      shape_error(node, "expects 1 or 2 outputs (y and the mask), got " + std::to_string(node.outputs.size()));
    return std::vector<Shape>(node.outputs.size(), in[0]);
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType>) const override {
    std::vector<DType> dtypes = {DType::F32, DType::U8};
    dtypes.resize(node.outputs.size());
    return dtypes;
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    dropout_ratio(node);
    prepare_output(*out[0], DType::F32, in[0]->shape());
    std::memcpy(out[0]->raw(), in[0]->raw(), in[0]->nbytes());
    if (out.size() > 1) {
      prepare_output(*out[1], DType::U8, in[0]->shape());
      std::fill_n(out[1]->data<uint8_t>(), out[1]->numel(), uint8_t{1});
    }
  }

  void forward_train(const Node& node, const void*, const RunContext& context, std::span<Tensor* const> in,
                     std::span<Tensor* const> out) const override {
    const float ratio = dropout_ratio(node);
    if (out.size() < 2)
      shape_error(node, "training needs the second output (the mask) for the backward pass");
    prepare_output(*out[0], DType::F32, in[0]->shape());
    prepare_output(*out[1], DType::U8, in[0]->shape());
    const int64_t count = in[0]->numel();
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    uint8_t* mask = out[1]->data<uint8_t>();
    const float keep_scale = 1.0f / (1.0f - ratio);
    const uint64_t base = mix(mix(name_hash(node.name) ^ context.seed) ^ static_cast<uint64_t>(context.step));
    const int64_t chunks = (count + kMaskChunk - 1) / kMaskChunk;
    parallel_for(chunks, 4, [&](int64_t k0, int64_t k1) {
      for (int64_t k = k0; k < k1; ++k) {
        Rng rng(mix(base ^ static_cast<uint64_t>(k)));
        const int64_t begin = k * kMaskChunk, end = std::min(count, begin + kMaskChunk);
        for (int64_t i = begin; i < end; ++i) mask[i] = rng.uniform() >= ratio;
        for (int64_t i = begin; i < end; ++i) y[i] = mask[i] ? x[i] * keep_scale : 0.0f;
      }
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    if (out.size() < 2) shape_error(node, "the backward pass needs the second output (the mask)");
    const float keep_scale = 1.0f / (1.0f - dropout_ratio(node));
    in_grad[0]->resize(in[0]->shape());
    const uint8_t* __restrict mask = out[1]->data<uint8_t>();
    const float* __restrict dy = out_grad[0]->data<float>();
    float* __restrict dx = in_grad[0]->data<float>();
    for (int64_t i = 0; i < in[0]->numel(); ++i) dx[i] = mask[i] ? dy[i] * keep_scale : 0.0f;
  }
};

// ---- AveragePool2D -----------------------------------------------------------------------------

// MaxPool2D's window geometry (conv_geometry.h: ONNX names, pads = [top, left, bottom, right],
// each smaller than the kernel so that every window holds an input element) plus ONNX's
// count_include_pad.
struct AveragePoolGeometry : PoolGeometry {
  bool count_include_pad = false;
};

AveragePoolGeometry average_pool_geometry(const Node& node, const Shape& x) {
  AveragePoolGeometry g;
  static_cast<PoolGeometry&>(g) = pool_geometry(node, x);
  const int64_t include_pad = node.attr_int("count_include_pad", 0);
  if (include_pad != 0 && include_pad != 1) shape_error(node, "attribute 'count_include_pad' must be 0 or 1");
  g.count_include_pad = include_pad == 1;
  return g;
}

// Calls visit(output index, row range, column range, 1 / divisor) for every window of one plane:
// the window clipped to the input; the divisor counts its input elements, or the whole kernel with
// count_include_pad (windows never extend past the padding, so that is kh*kw).
template <typename Visit> void for_each_average_window(const AveragePoolGeometry& g, Visit&& visit) {
  for (int64_t oy = 0; oy < g.out_h; ++oy) {
    const int64_t y0 = oy * g.stride_h - g.pad_top;
    const int64_t y_lo = std::max<int64_t>(y0, 0), y_hi = std::min(y0 + g.kernel_h, g.in_h);
    for (int64_t ox = 0; ox < g.out_w; ++ox) {
      const int64_t x0 = ox * g.stride_w - g.pad_left;
      const int64_t x_lo = std::max<int64_t>(x0, 0), x_hi = std::min(x0 + g.kernel_w, g.in_w);
      const int64_t divisor = g.count_include_pad ? g.kernel_h * g.kernel_w : (y_hi - y_lo) * (x_hi - x_lo);
      visit(oy * g.out_w + ox, y_lo, y_hi, x_lo, x_hi, 1.0f / static_cast<float>(divisor));
    }
  }
}

class AveragePool2D final : public Op {
 public:
  AveragePool2D() { traits_ = {.onnx = "AveragePool"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    const AveragePoolGeometry g = average_pool_geometry(node, in[0]);
    return {{g.batch, g.channels, g.out_h, g.out_w}};
  }

  // y = (sum of the window's inputs, row-major) * (1 / divisor).
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const AveragePoolGeometry g = average_pool_geometry(node, in[0]->shape());
    out[0]->resize({g.batch, g.channels, g.out_h, g.out_w});
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    parallel_for(g.batch * g.channels, plane_grain(in_plane), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const float* plane = x + p * in_plane;
        float* dst = y + p * out_plane;
        for_each_average_window(g, [&](int64_t o, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi, float inv) {
          float sum = 0.0f;
          for (int64_t iy = y_lo; iy < y_hi; ++iy)
            for (int64_t ix = x_lo; ix < x_hi; ++ix) sum += plane[iy * g.in_w + ix];
          dst[o] = sum * inv;
        });
      }
    });
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const AveragePoolGeometry g = average_pool_geometry(node, in[0]->shape());
    in_grad[0]->resize(in[0]->shape());
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
    parallel_for(g.batch * g.channels, plane_grain(in_plane), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const float* src = dy + p * out_plane;
        float* dst = dx + p * in_plane;
        std::fill_n(dst, in_plane, 0.0f);
        for_each_average_window(g, [&](int64_t o, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi, float inv) {
          const float share = src[o] * inv;
          for (int64_t iy = y_lo; iy < y_hi; ++iy)
            for (int64_t ix = x_lo; ix < x_hi; ++ix) dst[iy * g.in_w + ix] += share;
        });
      }
    });
  }
};

// ---- GlobalAveragePool -------------------------------------------------------------------------

// [N, C, H, W] -> [N, C, 1, 1], the mean of every plane (summed as sum_run, in double).
class GlobalAveragePool final : public Op {
 public:
  GlobalAveragePool() { traits_ = {.onnx = "GlobalAveragePool"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    check_input(node, in[0]);
    return {{in[0][0], in[0][1], 1, 1}};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Shape& shape = in[0]->shape();
    check_input(node, shape);
    out[0]->resize({shape[0], shape[1], 1, 1});
    const int64_t plane = shape[2] * shape[3];
    const float* x = in[0]->data<float>();
    float* y = out[0]->data<float>();
    parallel_for(shape[0] * shape[1], plane_grain(plane), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) y[p] = static_cast<float>(sum_run(x + p * plane, plane) / static_cast<double>(plane));
    });
  }

  // dx = dy / (H*W) over each plane.
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const Shape& shape = in[0]->shape();
    check_input(node, shape);
    in_grad[0]->resize(shape);
    const int64_t plane = shape[2] * shape[3];
    const float inv = 1.0f / static_cast<float>(plane);
    const float* dy = out_grad[0]->data<float>();
    float* dx = in_grad[0]->data<float>();
    parallel_for(shape[0] * shape[1], plane_grain(plane), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) std::fill_n(dx + p * plane, plane, dy[p] * inv);
    });
  }

 private:
  static void check_input(const Node& node, const Shape& x) {
    if (x.size() != 4) shape_error(node, "input must be NCHW [batch, channels, height, width], got " + to_string(x));
    if (x[1] < 1 || x[2] < 1 || x[3] < 1) shape_error(node, "input " + to_string(x) + " must have known, positive C, H, W");
  }
};

}  // namespace

void register_norm(const Registrar& add) {
  add("BatchNormalization", std::make_unique<BatchNormalization>());
  add("Dropout", std::make_unique<Dropout>());
  add("AveragePool2D", std::make_unique<AveragePool2D>());
  add("GlobalAveragePool", std::make_unique<GlobalAveragePool>());
}

}  // namespace lowbit::ops
