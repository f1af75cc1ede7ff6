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
// The compute of BatchNormalization and of the pooling ops lives in kernels (kernels/batchnorm_f32.h,
// kernels/pool.h); this file holds the ops: attributes, shapes, training and inference modes.
//
// Determinism: every reduction runs in one thread in a fixed order (per channel, or per plane),
// in double over eight float lanes per run (kernels/sum_run.h), and Dropout's mask is drawn in
// fixed chunks of values each with its own seeded Rng, so results are bit-identical for any thread
// count.
#include <algorithm>
#include <cstring>

#include "core/digest.h"
#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "kernels/batchnorm_f32.h"
#include "kernels/pool.h"
#include "lowbit/random.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// ---- BatchNormalization ------------------------------------------------------------------------

using kernels::NormGeometry;  // x viewed as [batch, channels, spatial]

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

// Inputs: x, scale [C], B [C], input_mean [C], input_var [C] (the running statistics).
//   inference: y = scale * (x - running_mean) / sqrt(running_var + epsilon) + B
//   training:  y = scale * (x - batch_mean) / sqrt(batch_var + epsilon) + B, with the biased batch
//              variance (divided by m = N*H*W), then, as PyTorch does,
//              running_mean = momentum * running_mean + (1 - momentum) * batch_mean
//              running_var  = momentum * running_var  + (1 - momentum) * batch_var * m / (m - 1)
//              (the unbiased variance; the biased one when m = 1). ONNX's momentum: 0.9 here is
//              PyTorch's momentum=0.1.
// Both compute y = x * a[c] + b[c] with a = scale / sqrt(var + epsilon), b = B - mean * a
// (kernels/batchnorm_f32.h).
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
    kernels::batchnorm_inference_f32(g, in[0]->data<float>(), in[1]->data<float>(), in[2]->data<float>(),
                                     in[3]->data<float>(), in[4]->data<float>(), attributes.epsilon,
                                     out[0]->data<float>());
  }

  void forward_train(const Node& node, const OpState*, const RunContext&, std::span<Tensor* const> in,
                     std::span<Tensor* const> out, Workspace&) const override {
    const NormGeometry g = norm_geometry(node, in[0]->shape());
    const NormAttributes attributes = norm_attributes(node);
    out[0]->resize(in[0]->shape());
    // An empty batch has no statistics: the kernel updates nothing.
    kernels::batchnorm_training_f32(g, in[0]->data<float>(), in[1]->data<float>(), in[2]->data<float>(),
                                    in[3]->data<float>(), in[4]->data<float>(), attributes.epsilon, attributes.momentum,
                                    out[0]->data<float>());
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
    kernels::batchnorm_backward_f32(g, in[0]->data<float>(), in[1]->data<float>(), out_grad[0]->data<float>(),
                                    attributes.epsilon, dx ? dx->data<float>() : nullptr,
                                    dscale ? dscale->data<float>() : nullptr, dbias ? dbias->data<float>() : nullptr);
  }
};

// ---- Dropout -----------------------------------------------------------------------------------

// A hash of the node name that is the same on every platform (std::hash is not).
uint64_t name_hash(const std::string& name) {
  Digest d;
  d.add(name.data(), name.size());
  return d.value;
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

  void forward_train(const Node& node, const OpState*, const RunContext& context, std::span<Tensor* const> in,
                     std::span<Tensor* const> out, Workspace&) const override {
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
    kernels::avgpool2d_f32(g, g.count_include_pad, in[0]->data<float>(), out[0]->data<float>());
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const AveragePoolGeometry g = average_pool_geometry(node, in[0]->shape());
    in_grad[0]->resize(in[0]->shape());
    kernels::avgpool2d_backward_f32(g, g.count_include_pad, out_grad[0]->data<float>(), in_grad[0]->data<float>());
  }
};

// ---- GlobalAveragePool -------------------------------------------------------------------------

// [N, C, H, W] -> [N, C, 1, 1], the mean of every plane (kernels/pool.h: summed as sum_run, in double).
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
    kernels::global_avgpool_f32(shape[0] * shape[1], shape[2] * shape[3], in[0]->data<float>(), out[0]->data<float>());
  }

  // dx = dy / (H*W) over each plane.
  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const Shape& shape = in[0]->shape();
    check_input(node, shape);
    in_grad[0]->resize(shape);
    kernels::global_avgpool_backward_f32(shape[0] * shape[1], shape[2] * shape[3], out_grad[0]->data<float>(),
                                         in_grad[0]->data<float>());
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
