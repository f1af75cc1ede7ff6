// ONNX's integer-arithmetic ops as ONNX defines them, in plain loops: DynamicQuantizeLinear (f32
// to uint8 codes with a scale and zero point chosen from the tensor's own range), ConvInteger
// (the int32 sums of a convolution of 8-bit codes, zero points subtracted) and, in matmul.cpp,
// MatMulInteger. The ONNX importer turns the pattern ONNX Runtime's quantize_dynamic writes
// (DynamicQuantizeLinear -> MatMulInteger / ConvInteger -> Cast -> Mul by the two scales
// (-> Add bias)) into DynamicQDense / DynamicQConv2D, which run on the integer kernels; these
// ops compute whatever does not fit that pattern (and ONNX's own node tests).
#include <algorithm>
#include <cmath>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "graph/ops/integer_layer.h"
#include "kernels/elementwise.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {

void expect_codes(const Node& node, DType d, const char* what) {
  if (d != DType::U8 && d != DType::S8) shape_error(node, std::string(what) + " must be u8 or s8, got " + name_of(d));
}

namespace {

bool scalar_shape(const Shape& s) { return s.empty() || s == Shape{1}; }

// DynamicQuantizeLinear: x f32 -> y u8 (x's shape), y_scale f32 [], y_zero_point u8 []. ONNX's
// definition: the range [min(0, min x), max(0, max x)] mapped onto [0, 255]: scale = range / 255,
// zero point = round(clip(-min / scale, 0, 255)), y = clip(round(x / scale) + zero point, 0, 255),
// rounding half to even, in f32. An all-zero (or empty) tensor has scale 0: zero point 0, y 0.
class DynamicQuantizeLinear final : public InferenceOp {
 public:
  DynamicQuantizeLinear() { traits_ = {.onnx = "DynamicQuantizeLinear"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 1, 1);
    if (node.outputs.size() != 3) shape_error(node, "has three outputs (y, y_scale, y_zero_point)");
    return {in[0], Shape{}, Shape{}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    expect_dtype(node, in[0], DType::F32, "input");
    return {DType::U8, DType::F32, DType::U8};
  }
  void forward(const Node&, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const Tensor& x = *in[0];
    prepare_output(*out[0], DType::U8, x.shape());
    prepare_output(*out[1], DType::F32, {});
    prepare_output(*out[2], DType::U8, {});
    const float* v = x.data<float>();
    float lo = 0.0f, hi = 0.0f;  // the range always includes 0; NaNs are ignored
    if (x.numel() > 0) {
      float x_lo = NAN, x_hi = NAN;
      minmax_f32(x.numel(), v, &x_lo, &x_hi);
      if (!std::isnan(x_lo)) lo = std::min(lo, x_lo), hi = std::max(hi, x_hi);
    }
    const float scale = (hi - lo) / 255.0f;
    float zero = 0.0f;
    if (scale > 0.0f) zero = std::nearbyint(std::clamp(0.0f - lo / scale, 0.0f, 255.0f));
    uint8_t* y = out[0]->data<uint8_t>();
    if (!(zero >= 0.0f)) zero = 0.0f;  // NaN (an infinite range)
    for (int64_t i = 0; i < x.numel(); ++i) {
      float q = scale > 0.0f ? std::nearbyint(v[i] / scale) + zero : 0.0f;
      if (!(q >= 0.0f)) q = 0.0f;  // NaN codes as 0
      y[i] = static_cast<uint8_t>(std::min(q, 255.0f));
    }
    out[1]->data<float>()[0] = scale;
    out[2]->data<uint8_t>()[0] = static_cast<uint8_t>(zero);
  }
};

// ConvInteger: x u8|s8 [N, C, H, W], w u8|s8 [OC, C/group, kh, kw], optional x_zero_point (x's
// dtype, one value) and w_zero_point (w's dtype, one value or one per output channel) -> s32
// [N, OC, OH, OW]: sum over the window of (x - x_zero_point)(w - w_zero_point[oc]); padding
// contributes 0 (it is the zero point). Attributes as Conv2D's (strides, pads, dilations, group,
// kernel_shape); the sums wrap as int32.
class ConvInteger final : public InferenceOp {
 public:
  ConvInteger() { traits_ = {.onnx = "ConvInteger"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 2, 4);
    const ConvGeometry g = conv_geometry(node, in[0], in[1]);
    if (in.size() > 2 && !scalar_shape(in[2])) shape_error(node, "x_zero_point must be one value, got " + to_string(in[2]));
    if (in.size() > 3 && !scalar_shape(in[3]) && in[3] != Shape{g.out_channels})
      shape_error(node, "w_zero_point must be one value or one per output channel, got " + to_string(in[3]));
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    expect_codes(node, in[0], "input");
    expect_codes(node, in[1], "weight");
    if (in.size() > 2) expect_dtype(node, in[2], in[0], "x_zero_point");
    if (in.size() > 3) expect_dtype(node, in[3], in[1], "w_zero_point");
    return {DType::S32};
  }
  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    const ConvGeometry g = conv_geometry(node, in[0]->shape(), in[1]->shape());
    prepare_output(*out[0], DType::S32, {g.batch, g.out_channels, g.out_h, g.out_w});
    // The codes and zero points as int32 (lowbit::cast), read in the loops below.
    const Tensor x32 = cast(*in[0], DType::S32), w32 = cast(*in[1], DType::S32);
    const Tensor wz32 = in.size() > 3 ? cast(*in[3], DType::S32) : Tensor();
    const int32_t* x = x32.data<int32_t>();
    const int32_t* w = w32.data<int32_t>();
    const int32_t xz = in.size() > 2 ? cast(*in[2], DType::S32).data<int32_t>()[0] : 0;
    int32_t* y = out[0]->data<int32_t>();
    const int64_t gin = g.group_in(), gout = g.group_out();
    parallel_for(g.batch * g.out_channels, 1, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t n = p / g.out_channels, oc = p % g.out_channels, c0 = oc / gout * gin;
        const int32_t wzp = wz32.defined() ? wz32.data<int32_t>()[wz32.numel() == 1 ? 0 : oc] : 0;
        for (int64_t oy = 0; oy < g.out_h; ++oy)
          for (int64_t ox = 0; ox < g.out_w; ++ox) {
            uint32_t acc = 0;  // wraps like int32
            for (int64_t c = 0; c < gin; ++c)
              for (int64_t ky = 0; ky < g.kernel_h; ++ky) {
                const int64_t iy = oy * g.stride_h - g.pad_top + ky * g.dilation_h;
                if (iy < 0 || iy >= g.in_h) continue;
                for (int64_t kx = 0; kx < g.kernel_w; ++kx) {
                  const int64_t ix = ox * g.stride_w - g.pad_left + kx * g.dilation_w;
                  if (ix < 0 || ix >= g.in_w) continue;
                  const int32_t a = x[((n * g.in_channels + c0 + c) * g.in_h + iy) * g.in_w + ix] - xz;
                  const int32_t b = w[((oc * gin + c) * g.kernel_h + ky) * g.kernel_w + kx] - wzp;
                  acc += static_cast<uint32_t>(a * b);
                }
              }
            y[(p * g.out_h + oy) * g.out_w + ox] = static_cast<int32_t>(acc);
          }
      }
    });
  }
};

}  // namespace

void register_integer_ops(const Registrar& add) {
  add("DynamicQuantizeLinear", std::make_unique<DynamicQuantizeLinear>());
  add("ConvInteger", std::make_unique<ConvInteger>());
}

}  // namespace lowbit::ops
