// Convolutional ops on NCHW activations: Conv2D, MaxPool2D, and Reshape (to turn [N, 28, 28]
// images into [N, 1, 28, 28]). Attribute names and semantics follow ONNX Conv and MaxPool.
//
// Conv2D's compute is kernels/conv_f32.h (the reference loops and im2col + GEMM, forward and
// backward), MaxPool2D's kernels/pool.h; this file holds the ops: attributes, shapes, the ordered
// list of implementations.
#include <vector>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "kernels/conv_f32.h"
#include "kernels/implementation.h"
#include "kernels/pool.h"
#include "kernels/gemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// ---- Attributes --------------------------------------------------------------------------------

// An attribute holding `count` integers, or `fallback` when absent.
std::vector<int64_t> int_list(const Node& node, const std::string& key, size_t count, std::vector<int64_t> fallback) {
  auto it = node.attributes.find(key);
  if (it == node.attributes.end()) return fallback;
  if (!it->second.is_ints() || it->second.as_ints().size() != count)
    shape_error(node, "attribute '" + key + "' must be a list of " + std::to_string(count) + " integers, got " +
                          it->second.to_string());
  return it->second.as_ints();
}

std::string dims(int64_t a, int64_t b) { return std::to_string(a) + "x" + std::to_string(b); }

// ---- Geometry shared by the convolution and pooling windows -------------------------------------

// Reads strides, pads and dilations (ONNX names and order: pads = [top, left, bottom, right]).
void read_window_attributes(const Node& node, Window& w, bool dilations) {
  const auto strides = int_list(node, "strides", 2, {1, 1});
  const auto pads = int_list(node, "pads", 4, {0, 0, 0, 0});
  const auto dil = dilations ? int_list(node, "dilations", 2, {1, 1}) : std::vector<int64_t>{1, 1};
  if (strides[0] < 1 || strides[1] < 1) shape_error(node, "attribute 'strides' must be positive");
  if (dil[0] < 1 || dil[1] < 1) shape_error(node, "attribute 'dilations' must be positive");
  for (int64_t p : pads)
    if (p < 0) shape_error(node, "attribute 'pads' must not be negative");
  if (node.attributes.contains("auto_pad") && node.attr_string("auto_pad", "NOTSET") != "NOTSET")
    shape_error(node, "attribute 'auto_pad' is not supported: give explicit 'pads'");
  w.stride_h = strides[0], w.stride_w = strides[1];
  w.pad_top = pads[0], w.pad_left = pads[1], w.pad_bottom = pads[2], w.pad_right = pads[3];
  w.dilation_h = dil[0], w.dilation_w = dil[1];
}

// Output extent along one axis; throws when the (dilated) kernel does not fit the padded input.
int64_t output_extent(const Node& node, const char* axis, int64_t in, int64_t pad_a, int64_t pad_b, int64_t kernel,
                      int64_t dilation, int64_t stride) {
  const int64_t span = dilation * (kernel - 1) + 1;
  if (in + pad_a + pad_b < span)
    shape_error(node, std::string("the kernel spans ") + std::to_string(span) + " " + axis + " (kernel " +
                          std::to_string(kernel) + ", dilation " + std::to_string(dilation) + ") but the padded input has " +
                          std::to_string(in + pad_a + pad_b));
  return (in + pad_a + pad_b - span) / stride + 1;
}



}  // namespace

ConvGeometry conv_geometry(const Node& node, const Shape& x, const Shape& w) {
  if (x.size() != 4)
    shape_error(node, "input must be NCHW [batch, channels, height, width], got " + to_string(x) +
                          " (add a Reshape for single-channel images)");
  if (x[1] < 1 || x[2] < 1 || x[3] < 1) shape_error(node, "input " + to_string(x) + " must have known, positive C, H, W");
  if (w.size() != 4) shape_error(node, "weight must be [out_channels, in_channels/group, kh, kw], got " + to_string(w));
  for (int64_t d : w)
    if (d < 1) shape_error(node, "weight " + to_string(w) + " must have positive dimensions");
  ConvGeometry g;
  g.batch = x[0], g.in_channels = x[1], g.in_h = x[2], g.in_w = x[3];
  g.out_channels = w[0], g.kernel_h = w[2], g.kernel_w = w[3];
  g.groups = node.attr_int("group", 1);
  if (g.groups < 1) shape_error(node, "attribute 'group' must be positive, got " + std::to_string(g.groups));
  if (g.in_channels % g.groups || g.out_channels % g.groups)
    shape_error(node, "group " + std::to_string(g.groups) + " must divide the input channels (" +
                          std::to_string(g.in_channels) + ") and the output channels (" + std::to_string(g.out_channels) + ")");
  if (w[1] != g.group_in())
    shape_error(node, "weight " + to_string(w) + " expects " + std::to_string(w[1]) + " input channels per group, input " +
                          to_string(x) + " with group " + std::to_string(g.groups) + " has " + std::to_string(g.group_in()));
  const auto kernel_shape = int_list(node, "kernel_shape", 2, {w[2], w[3]});
  if (kernel_shape[0] != w[2] || kernel_shape[1] != w[3])
    shape_error(node, "attribute 'kernel_shape' " + dims(kernel_shape[0], kernel_shape[1]) +
                          " does not match the weight's " + dims(w[2], w[3]));
  read_window_attributes(node, g, true);
  g.out_h = output_extent(node, "rows", g.in_h, g.pad_top, g.pad_bottom, g.kernel_h, g.dilation_h, g.stride_h);
  g.out_w = output_extent(node, "columns", g.in_w, g.pad_left, g.pad_right, g.kernel_w, g.dilation_w, g.stride_w);
  return g;
}

namespace {


// The implementations, fastest first.
struct ConvProblem {};
enum ConvImplementation { kIm2colGemm, kReference };
constexpr kernels::Implementation<ConvProblem> kConvImplementations[] = {
    {"conv2d_f32_im2col_gemm", [](const ConvProblem&) { return kernels::isa_declines(Isa::Avx2); }},
    {"conv2d_f32_ref", nullptr}};

class Conv2D final : public Op {
 public:
  Conv2D() { traits_ = {.onnx = "Conv", .quantizable = OpTraits::Quantizable::ConvWeights, .quantized_op = "QConv2D", .dynamic_op = "DynamicQConv2D", .fuses_activation = true, .absorbs_batchnorm = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 3);
    activation_of(node);
    const ConvGeometry g = conv_geometry(node, in[0], in[1]);
    if (in.size() == 3 && (in[2].size() != 1 || in[2][0] != g.out_channels))
      shape_error(node, "bias must be [" + std::to_string(g.out_channels) + "], got " + to_string(in[2]));
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    Workspace workspace;
    forward_prepared(node, nullptr, in, out, workspace);
  }
  void forward_prepared(const Node& node, const OpState*, std::span<const Tensor* const> in, std::span<Tensor* const> out,
                        Workspace& workspace) const override {
    const ConvGeometry g = conv_geometry(node, in[0]->shape(), in[1]->shape());
    out[0]->resize({g.batch, g.out_channels, g.out_h, g.out_w});
    const float* bias = in.size() == 3 ? in[2]->data<float>() : nullptr;
    if (kernels::choose(kConvImplementations, ConvProblem{}).index == kReference)
      kernels::conv2d_f32_ref(g, in[0]->data<float>(), in[1]->data<float>(), bias, activation_of(node), out[0]->data<float>());
    else
      kernels::conv2d_f32_im2col(g, in[0]->data<float>(), in[1]->data<float>(), bias, activation_of(node), out[0]->data<float>(),
                                 workspace);
  }

  std::string describe(const Node&, const OpState*) const override {
    const kernels::Choice c = kernels::choose(kConvImplementations, ConvProblem{});
    return c.describe() + (c.index == kIm2colGemm ? " on " + kernels::describe_gemm_f32() : "");
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const> out,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    Workspace workspace;
    backward_prepared(node, nullptr, in, out, out_grad, in_grad, workspace);
  }
  void backward_prepared(const Node& node, const OpState*, std::span<const Tensor* const> in,
                         std::span<const Tensor* const> out, std::span<const Tensor* const> out_grad,
                         std::span<Tensor* const> in_grad, Workspace& workspace) const override {
    const ConvGeometry g = conv_geometry(node, in[0]->shape(), in[1]->shape());
    Tensor* dx = in_grad[0];
    Tensor* dw = in_grad.size() > 1 ? in_grad[1] : nullptr;
    Tensor* db = in_grad.size() > 2 ? in_grad[2] : nullptr;
    if (dx) dx->resize(in[0]->shape());
    if (dw) dw->resize(in[1]->shape());
    if (db) db->resize({g.out_channels});
    if (!dx && !dw && !db) return;
    kernels::conv2d_f32_backward(g, in[0]->data<float>(), in[1]->data<float>(), out[0]->data<float>(),
                                 out_grad[0]->data<float>(), activation_of(node) == Activation::Relu,
                                 dx ? dx->data<float>() : nullptr, dw ? dw->data<float>() : nullptr,
                                 db ? db->data<float>() : nullptr, workspace);
  }
};

}  // namespace

// ---- MaxPool2D ---------------------------------------------------------------------------------

PoolGeometry pool_geometry(const Node& node, const Shape& x) {
  if (x.size() != 4) shape_error(node, "input must be NCHW [batch, channels, height, width], got " + to_string(x));
  if (x[1] < 1 || x[2] < 1 || x[3] < 1) shape_error(node, "input " + to_string(x) + " must have known, positive C, H, W");
  if (!node.attributes.contains("kernel_shape")) shape_error(node, "attribute 'kernel_shape' [kh, kw] is required");
  const auto kernel = int_list(node, "kernel_shape", 2, {});
  if (kernel[0] < 1 || kernel[1] < 1) shape_error(node, "attribute 'kernel_shape' must be positive");
  if (node.attr_int("ceil_mode", 0) != 0) shape_error(node, "attribute 'ceil_mode' is not supported");
  if (int_list(node, "dilations", 2, {1, 1}) != std::vector<int64_t>{1, 1})
    shape_error(node, "attribute 'dilations' is not supported (must be [1, 1])");
  PoolGeometry g;
  g.kernel_h = kernel[0], g.kernel_w = kernel[1];
  read_window_attributes(node, g, false);
  // ONNX: padding smaller than the kernel, so every window holds at least one input element.
  if (g.pad_top >= g.kernel_h || g.pad_bottom >= g.kernel_h || g.pad_left >= g.kernel_w || g.pad_right >= g.kernel_w)
    shape_error(node, "attribute 'pads' must be smaller than the kernel " + dims(g.kernel_h, g.kernel_w));
  g.batch = x[0], g.channels = x[1], g.in_h = x[2], g.in_w = x[3];
  g.out_h = output_extent(node, "rows", g.in_h, g.pad_top, g.pad_bottom, g.kernel_h, 1, g.stride_h);
  g.out_w = output_extent(node, "columns", g.in_w, g.pad_left, g.pad_right, g.kernel_w, 1, g.stride_w);
  return g;
}

namespace {

// MaxPool2D takes f32 or s8 input (quantized graphs: the maximum commutes with the monotone
// quantization, so the s8 output has the input's scale and zero point); the output has the
// input's dtype. Training (backward) is f32 only. The window loops: kernels/pool.h.
class MaxPool2D final : public Op {
 public:
  MaxPool2D() { traits_ = {.onnx = "MaxPool", .passes_quantized = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    const PoolGeometry g = pool_geometry(node, in[0]);
    return {{g.batch, g.channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    if (in[0] != DType::F32 && in[0] != DType::S8)
      shape_error(node, std::string("input must be f32 or s8, got ") + name_of(in[0]));
    return {in[0]};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const PoolGeometry g = pool_geometry(node, in[0]->shape());
    prepare_output(*out[0], in[0]->dtype(), {g.batch, g.channels, g.out_h, g.out_w});
    if (in[0]->dtype() == DType::S8)
      kernels::maxpool2d_s8(g, in[0]->data<int8_t>(), out[0]->data<int8_t>());
    else
      kernels::maxpool2d_f32(g, in[0]->data<float>(), out[0]->data<float>());
  }

  void backward(const Node& node, std::span<const Tensor* const> in, std::span<const Tensor* const>,
                std::span<const Tensor* const> out_grad, std::span<Tensor* const> in_grad) const override {
    if (!in_grad[0]) return;
    const PoolGeometry g = pool_geometry(node, in[0]->shape());
    in_grad[0]->resize(in[0]->shape());
    // The gradient goes to the element forward() picked (recomputed: the op keeps no state).
    kernels::maxpool2d_backward_f32(g, in[0]->data<float>(), out_grad[0]->data<float>(), in_grad[0]->data<float>());
  }
};

// ---- Reshape -----------------------------------------------------------------------------------

// Reshape, in one of two forms (exactly one attribute):
//   "shape": keeps the batch dimension and gives each sample this shape; one entry may be -1
//            (inferred).
//   "dims":  ONNX Reshape's target shape, the batch included: 0 copies the input's dimension at the
//            same index (a real 0 with attribute "allowzero" = 1, as ONNX), one entry may be -1
//            (inferred).
// The output shares the input's buffer (any dtype): no copy.
class Reshape final : public ViewOp {
 public:
  Reshape() { traits_ = {.onnx = "Reshape", .passes_quantized = true, .layout_only = true}; }

 private:
  Shape view_shape(const Node& node, const Shape& in) const override { return target_shape(node, in); }
  static Shape target_shape(const Node& node, const Shape& in) {
    if (node.attributes.count("dims")) {
      if (node.attributes.count("shape"))
        shape_error(node, "give one of the attributes 'shape' (one sample's shape) and 'dims' (the whole shape), not both");
      return full_shape(node, in);
    }
    return sample_shape(node, in);
  }

  // The "shape" form: [N] + the sample shape.
  static Shape sample_shape(const Node& node, const Shape& in) {
    auto it = node.attributes.find("shape");
    if (it == node.attributes.end())
      shape_error(node, "attribute 'shape' (the shape of one sample) or 'dims' (the whole shape, as ONNX) is required");
    if (!it->second.is_ints()) shape_error(node, "attribute 'shape' must be a list of integers, got " + it->second.to_string());
    Shape sample = it->second.as_ints();
    std::string requested;  // as written: to_string() would print -1 as the batch marker N
    for (int64_t d : sample) requested += (requested.empty() ? "" : ", ") + std::to_string(d);
    requested = "[" + requested + "]";
    if (in.empty()) shape_error(node, "input must have a batch dimension, got " + to_string(in));
    int64_t in_count = 1;
    for (size_t i = 1; i < in.size(); ++i) {
      if (in[i] < 0) shape_error(node, "input " + to_string(in) + " must have known sample dimensions");
      in_count *= in[i];
    }
    int64_t known = 1, inferred = -1;
    for (size_t i = 0; i < sample.size(); ++i) {
      if (sample[i] == -1 && inferred < 0) {
        inferred = static_cast<int64_t>(i);
      } else if (sample[i] < 1) {
        shape_error(node, "attribute 'shape' " + requested + ": dimensions must be positive (one may be -1)");
      } else {
        known *= sample[i];
      }
    }
    if (inferred >= 0) {
      if (in_count % known)
        shape_error(node, "cannot reshape samples of " + to_string(Shape(in.begin() + 1, in.end())) + " to " + requested);
      sample[inferred] = in_count / known;
      known = in_count;
    }
    if (known != in_count)
      shape_error(node, "cannot reshape samples of " + to_string(Shape(in.begin() + 1, in.end())) + " (" +
                            std::to_string(in_count) + " values) to " + to_string(sample) + " (" + std::to_string(known) +
                            " values)");
    sample.insert(sample.begin(), in[0]);
    return sample;
  }

  // The "dims" form (ONNX Reshape). Run-time input dimensions (-1) go along: a 0 copying one gives
  // -1, and the inferred entry is -1 unless every run-time input dimension is copied by a 0 (then
  // they cancel out: [N, 3, 4] to [0, -1] is [N, 12]). Sizes that cannot be known yet are checked
  // when the node runs.
  static Shape full_shape(const Node& node, const Shape& in) {
    const Attribute& attribute = node.attributes.at("dims");
    if (!attribute.is_ints()) shape_error(node, "attribute 'dims' must be a list of integers, got " + attribute.to_string());
    const int64_t allowzero = node.attr_int("allowzero", 0);
    if (allowzero != 0 && allowzero != 1) shape_error(node, "attribute 'allowzero' must be 0 or 1, got " + std::to_string(allowzero));
    const std::vector<int64_t>& dims = attribute.as_ints();
    const std::string requested = attribute.to_string();
    Shape out(dims.size());
    std::vector<bool> copied(in.size(), false);  // input dimensions that a 0 copies
    int64_t inferred = -1, known = 1;             // known: the product of the output's sizes known now
    bool has_zero = false;
    auto times = [&](int64_t a, int64_t b) {
      int64_t p = 0;
      if (__builtin_mul_overflow(a, b, &p)) shape_error(node, "attribute 'dims' " + requested + " holds too many values");
      return p;
    };
    for (size_t i = 0; i < dims.size(); ++i) {
      if (dims[i] == -1) {
        if (inferred >= 0) shape_error(node, "attribute 'dims' " + requested + ": only one dimension may be -1");
        inferred = static_cast<int64_t>(i);
      } else if (dims[i] < -1) {
        shape_error(node, "attribute 'dims' " + requested + ": dimensions must be >= 0 (or one -1)");
      } else if (dims[i] == 0 && allowzero == 0) {
        if (i >= in.size())
          shape_error(node, "attribute 'dims' " + requested + ": the 0 at index " + std::to_string(i) +
                                " copies an input dimension, but the input " + to_string(in) + " has rank " +
                                std::to_string(in.size()));
        out[i] = in[i];
        if (in[i] < 0)
          copied[i] = true;
        else
          known = times(known, in[i]);
      } else {
        has_zero |= dims[i] == 0;
        out[i] = dims[i];
        known = times(known, dims[i]);
      }
    }
    if (allowzero == 1 && has_zero && inferred >= 0)
      shape_error(node, "attribute 'dims' " + requested + ": with allowzero = 1 a 0 is a size, and -1 cannot be inferred next to it");
    // The input's values: the product of its known sizes, comparable with `known` when every
    // run-time input dimension is also an output dimension (copied).
    int64_t count = 1;
    bool comparable = true, dynamic = false;
    for (size_t j = 0; j < in.size(); ++j) {
      if (in[j] < 0)
        comparable &= copied[j], dynamic = true;
      else if (__builtin_mul_overflow(count, in[j], &count))
        shape_error(node, "input " + to_string(in) + " holds too many values");
    }
    const std::string per = dynamic ? "N x " : "";  // N: the run-time dimensions, on both sides
    const std::string cannot = "cannot reshape " + to_string(in) + " (" + per + std::to_string(count) + " values) to " + requested;
    if (inferred >= 0) {
      if (!comparable) {
        out[inferred] = -1;
      } else {
        if (known == 0) shape_error(node, cannot + ": the -1 is ambiguous when the other dimensions hold no values");
        if (count % known) shape_error(node, cannot);
        out[inferred] = count / known;
      }
    } else if (comparable && count != known) {
      shape_error(node, cannot + " (" + per + std::to_string(known) + " values)");
    }
    return out;
  }
};

}  // namespace

void register_conv(const Registrar& add) {
  add("Conv2D", std::make_unique<Conv2D>());
  add("MaxPool2D", std::make_unique<MaxPool2D>());
  add("Reshape", std::make_unique<Reshape>());
}

}  // namespace lowbit::ops
