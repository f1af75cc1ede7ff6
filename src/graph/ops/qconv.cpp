// QConv2D: integer convolution on NCHW s8 activations (docs/ops.md lists inputs and attributes,
// docs/quantization.md the arithmetic; it is QDense's, with K = in_channels * kh * kw).
//
// Inputs: x s8 [N, C, H, W]; weight codes [OC, .] (rows of K = C*kh*kw codes in (c, ki, kj) order,
//         s8 or packed s4/u4/s2/u2 as QDense's); weight_scale f32 [OC]; weight_zero_point s32 [OC];
//         optional bias s32 [OC] at scale input_scale * weight_scale[oc].
// Attributes: in_channels, kernel_shape, strides, pads, dilations, group (must be 1), activation
//             ("none"/"relu"), input_scale, input_zero_point, output ("s8" with output_scale and
//             output_zero_point, or "f32").
//
// Two implementations, chosen like Conv2D's:
//   - qconv2d_ref: direct loops over every output, exact int32 accumulation of
//     (x - z_x)(w - z_w) (terms outside the input are zero, i.e. padding holds the real value 0),
//     plus the bias, then the same output stage as the qgemm reference. Used when the active ISA
//     is Isa::Reference.
//   - im2col of a chunk of images into [count*OH*OW, K] s8 rows (padding is the input zero
//     point, so padded entries stand for real zeros), one qgemm_s8 / qgemm_s8_f32 with the
//     weights prepared once, then a transpose to NCHW.
// Both produce identical bytes (the integer sums are exact; the output stage is qgemm's).
#include <algorithm>
#include <cmath>
#include <cstring>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "graph/ops/integer_layer.h"
#include "lowbit/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// The geometry, from the input shape and the attributes (the weights are packed codes).
ConvGeometry qconv_geometry(const Node& node, const Shape& x, int64_t out_channels) {
  if (node.attr_int("group", 1) != 1)
    shape_error(node, "attribute 'group' must be 1: grouped and depthwise integer convolution are not supported");
  const int64_t in_channels = node.attr_int("in_channels", -1);
  if (in_channels < 1) shape_error(node, "attribute 'in_channels' must be a positive integer");
  auto it = node.attributes.find("kernel_shape");
  if (it == node.attributes.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() ||
      !(*it)[1].is_number_integer())
    shape_error(node, "attribute 'kernel_shape' [kh, kw] is required");
  if (x.size() == 4 && x[1] != in_channels)
    shape_error(node, "input " + to_string(x) + " must have " + std::to_string(in_channels) + " channels (in_channels)");
  return conv_geometry(node, x, {out_channels, in_channels, (*it)[0].get<int64_t>(), (*it)[1].get<int64_t>()});
}

struct QConvState : IntegerLayerState {
  std::vector<int32_t> codes;  // unpacked [OC, K], for the reference
  std::vector<int32_t> bias;
  int64_t k = 0;
};

// The normative definition (see the file comment). y is [N, OC, OH, OW].
template <typename Out> void qconv2d_ref(const ConvGeometry& g, const QConvState& s, const int8_t* x, Out* y) {
  const int64_t k = s.k;
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t m = 0; m < g.out_channels; ++m) {
      const int32_t* w = s.codes.data() + m * k;
      const int32_t zw = s.weight_zero_point[m];
      for (int64_t oy = 0; oy < g.out_h; ++oy)
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          int64_t acc = s.bias.empty() ? 0 : s.bias[m];
          for (int64_t c = 0; c < g.in_channels; ++c)
            for (int64_t ki = 0; ki < g.kernel_h; ++ki)
              for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
                const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
                const int64_t ix = ox * g.stride_w - g.pad_left + kj * g.dilation_w;
                if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
                const int32_t a = x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix];
                acc += static_cast<int64_t>(a - s.input_zero_point) * (w[(c * g.kernel_h + ki) * g.kernel_w + kj] - zw);
              }
          const int32_t acc32 = static_cast<int32_t>(acc);
          Out& dst = y[((n * g.out_channels + m) * g.out_h + oy) * g.out_w + ox];
          if constexpr (std::is_same_v<Out, float>) {
            const float v = static_cast<float>(acc32) * s.column_scale[m];
            dst = s.relu ? (v > 0.0f ? v : 0.0f) : v;
          } else {
            int64_t v = int64_t{s.output_zero_point} + s.multiplier[m].apply(acc32);
            v = std::min<int64_t>(std::max<int64_t>(v, s.clamp_min), s.clamp_max);
            dst = static_cast<int8_t>(std::clamp<int64_t>(v, -128, 127));
          }
        }
    }
}

// Images per im2col chunk: the row buffer stays under ~16 MiB.
int64_t images_per_chunk(const ConvGeometry& g) {
  const int64_t per_image = g.patch() * g.out_spatial();
  return std::clamp<int64_t>((int64_t{1} << 24) / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(g.batch, 1));
}

// rows[(i*OH + oy)*OW + ox][(c*kh + ki)*kw + kj] = x[i, c, iy, ix], or the zero point outside.
void im2row_s8(const ConvGeometry& g, const int8_t* x, int64_t count, int8_t zero, int8_t* rows) {
  const int64_t k = g.patch(), spatial = g.out_spatial();
  parallel_for(count * g.out_h, std::max<int64_t>(1, 4096 / std::max<int64_t>(g.out_w * k, 1)), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / g.out_h, oy = r % g.out_h;
      int8_t* dst = rows + (i * spatial + oy * g.out_w) * k;
      for (int64_t ox = 0; ox < g.out_w; ++ox, dst += k) {
        int8_t* d = dst;
        for (int64_t c = 0; c < g.in_channels; ++c) {
          const int8_t* plane = x + (i * g.in_channels + c) * g.in_spatial();
          for (int64_t ki = 0; ki < g.kernel_h; ++ki) {
            const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
            if (iy < 0 || iy >= g.in_h) {
              std::memset(d, static_cast<unsigned char>(zero), static_cast<size_t>(g.kernel_w));
              d += g.kernel_w;
              continue;
            }
            const int8_t* src = plane + iy * g.in_w;
            for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
              const int64_t ix = ox * g.stride_w - g.pad_left + kj * g.dilation_w;
              *d++ = ix < 0 || ix >= g.in_w ? zero : src[ix];
            }
          }
        }
      }
    }
  });
}

// [count*OH*OW, OC] -> NCHW planes of the `count` images.
template <typename T> void rows_to_nchw(const ConvGeometry& g, const T* src, int64_t count, T* y) {
  const int64_t spatial = g.out_spatial(), oc = g.out_channels;
  parallel_for(count * oc, std::max<int64_t>(1, 16384 / std::max<int64_t>(spatial, 1)), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t i = p / oc, m = p % oc;
      const T* s = src + i * spatial * oc + m;
      T* d = y + p * spatial;
      for (int64_t q = 0; q < spatial; ++q) d[q] = s[q * oc];
    }
  });
}

class QConv2D final : public Op {
 public:
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 4, 5);
    if (in[1].size() != 2) shape_error(node, "weight codes must be [out_channels, packed K], got " + to_string(in[1]));
    const int64_t oc = in[1][0];
    for (size_t i = 2; i < in.size(); ++i)
      if (in[i].size() != 1 || in[i][0] != oc)
        shape_error(node, std::string(i == 2 ? "weight_scale" : i == 3 ? "weight_zero_point" : "bias") + " must be [" +
                              std::to_string(oc) + "], got " + to_string(in[i]));
    relu_of(node);
    f32_output(node);
    activation_params(node, "input_scale", "input_zero_point");
    const ConvGeometry g = qconv_geometry(node, in[0], oc);
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    auto expect = [&](DType actual, DType expected, const char* what) {
      if (actual != expected) shape_error(node, std::string(what) + " must be " + name_of(expected) + ", got " + name_of(actual));
    };
    expect(in[0], DType::S8, "input");
    expect(in[2], DType::F32, "weight_scale");
    expect(in[3], DType::S32, "weight_zero_point");
    if (in.size() == 5) expect(in[4], DType::S32, "bias");
    return {f32_output(node) ? DType::F32 : DType::S8};
  }

  void forward(const Node& node, std::span<const Tensor* const> in, std::span<Tensor* const> out) const override {
    std::vector<const Tensor*> constants(in.begin(), in.end());
    constants[0] = nullptr;
    auto state = prepare(node, constants);
    forward_prepared(node, state.get(), in, out);
  }
  void backward(const Node& node, std::span<const Tensor* const>, std::span<const Tensor* const>,
                std::span<const Tensor* const>, std::span<Tensor* const>) const override {
    shape_error(node, "quantized graphs are not trainable (use quantization-aware training)");
  }

  std::shared_ptr<const void> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    for (size_t i = 1; i < c.size(); ++i)
      if (!c[i]) return nullptr;
    auto s = std::make_shared<QConvState>();
    const Tensor& codes = *c[1];
    const int64_t oc = codes.dim(0);
    auto ks = node.attributes.at("kernel_shape");
    s->k = node.attr_int("in_channels", -1) * ks[0].get<int64_t>() * ks[1].get<int64_t>();
    const DType d = codes.dtype();
    if (d != DType::S8 && d != DType::S4 && d != DType::U4 && d != DType::S2 && d != DType::U2)
      shape_error(node, std::string("weight codes must be s8, s4, u4, s2 or u2, got ") + name_of(d));
    if (static_cast<int64_t>(codes.nbytes()) < oc * packed_row_bytes(d, s->k))
      shape_error(node, "weight codes hold " + std::to_string(codes.nbytes()) + " bytes, " +
                            std::to_string(oc * packed_row_bytes(d, s->k)) + " needed");
    s->weights = QWeights::pack(codes, oc, s->k);
    s->codes = unpack_codes(codes, {oc, s->k});
    if (c.size() == 5) s->bias.assign(c[4]->data<int32_t>(), c[4]->data<int32_t>() + oc);
    prepare_output_stage(node, c[2]->data<float>(), c[3]->data<int32_t>(), s->bias.empty() ? nullptr : s->bias.data(), s->k, *s);
    return s;
  }

  void forward_prepared(const Node& node, const void* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out) const override {
    if (!state) return forward(node, in, out);
    const auto& s = *static_cast<const QConvState*>(state);
    const ConvGeometry g = qconv_geometry(node, in[0]->shape(), s.weights.n());
    const Shape shape{g.batch, g.out_channels, g.out_h, g.out_w};
    prepare_output(*out[0], s.f32_output ? DType::F32 : DType::S8, shape);
    const int8_t* x = in[0]->data<int8_t>();
    if (active_isa() == Isa::Reference) {
      if (s.f32_output)
        qconv2d_ref(g, s, x, out[0]->data<float>());
      else
        qconv2d_ref(g, s, x, out[0]->data<int8_t>());
      return;
    }
    const int64_t chunk = images_per_chunk(g), k = g.patch(), spatial = g.out_spatial(), oc = g.out_channels;
    thread_local std::vector<int8_t> rows;
    thread_local std::vector<int32_t> row_sums;
    thread_local std::vector<int8_t> result_s8;
    thread_local std::vector<float> result_f32;
    for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
      const int64_t count = std::min(chunk, g.batch - n0), m = count * spatial;
      rows.resize(static_cast<size_t>(m * k));
      im2row_s8(g, x + n0 * g.in_channels * g.in_spatial(), count, static_cast<int8_t>(s.input_zero_point), rows.data());
      QOutputStage stage;
      stage.column_offset = s.column_offset.data();
      if (s.has_weight_zero_point) {
        row_sums.resize(static_cast<size_t>(m));
        row_sums_s8(m, k, rows.data(), k, row_sums.data());
        stage.weight_zero_point = s.weight_zero_point.data();
        stage.row_offset = row_sums.data();
      }
      if (s.f32_output) {
        result_f32.resize(static_cast<size_t>(m * oc));
        stage.column_scale = s.column_scale.data();
        stage.relu = s.relu;
        qgemm_s8_f32(m, rows.data(), k, s.weights, stage, result_f32.data(), oc);
        rows_to_nchw(g, result_f32.data(), count, out[0]->data<float>() + n0 * oc * spatial);
      } else {
        result_s8.resize(static_cast<size_t>(m * oc));
        stage.multiplier = s.multiplier.data();
        stage.output_zero_point = s.output_zero_point;
        stage.clamp_min = s.clamp_min;
        stage.clamp_max = s.clamp_max;
        qgemm_s8(m, rows.data(), k, s.weights, stage, result_s8.data(), oc);
        rows_to_nchw(g, result_s8.data(), count, out[0]->data<int8_t>() + n0 * oc * spatial);
      }
    }
  }
};

}  // namespace

void register_qconv(const Registrar& add) { add("QConv2D", std::make_unique<QConv2D>()); }

}  // namespace lowbit::ops
