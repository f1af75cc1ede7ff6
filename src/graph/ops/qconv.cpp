// QConv2D: integer convolution on NCHW s8 activations (docs/ops.md lists inputs and attributes,
// docs/quantization.md the arithmetic; it is QDense's, with K = in_channels / group * kh * kw),
// and DynamicQConv2D (f32 input quantized per image at run time, then the same integer
// convolution; at the end of this file).
//
// Inputs: x s8 [N, C, H, W]; weight codes [OC, .] (rows of K = C/group*kh*kw codes in (c, ki, kj)
//         order, s8 or packed s4/u4/s2/u2 as QDense's); weight_scale f32 [OC]; weight_zero_point
//         s32 [OC]; optional bias s32 [OC] at scale input_scale * weight_scale[oc].
// Attributes: in_channels (C), kernel_shape, strides, pads, dilations, group (output channel oc
//             reads the C/group input channels of group oc / (OC/group); group = C is depthwise),
//             activation ("none"/"relu"), input_scale, input_zero_point, output ("s8" with
//             output_scale and output_zero_point, or "f32").
//
// Three implementations, in the ordered list kImplementations (fastest first; chosen once when the
// node is prepared, which also packs the weights for the chosen one only):
//   - qconv_direct_s8__avx512vnni / __avx2 (kernels/qconv_direct.h), for stride_w 1 and K <= 32
//     (first layers on few channels, depthwise layers), which there beats im2row: it reads a
//     zero-padded NCHW copy of the chunk and writes the NCHW output directly.
//   - qconv_im2row_qgemm, per chunk of images: described below.
//   - qconv2d_ref: direct loops over every output, exact int32 accumulation of
//     (x - z_x)(w - z_w) (terms outside the input are zero, i.e. padding holds the real value 0),
//     plus the bias, then the same output stage as the qgemm reference. Used when the active ISA
//     is Isa::Reference.
//   - im2row: the chunk is copied once into a zero-padded NHWC buffer
//     (the border holds the input zero point, i.e. real zeros), so that im2row is a few
//     contiguous copies per output pixel (kw * C bytes per kernel row) with no bounds tests; the
//     rows [count*OH*OW, K] are in (ki, kj, c) order, and the weights were permuted to the same
//     order when prepared (a sum of exact integer products does not depend on the order). One
//     qgemm_s8 / qgemm_s8_f32 per group writes the group's columns of an [pixels, OC] result,
//     which is transposed to NCHW.
// All produce identical bytes (the integer sums are exact; the output stage is qgemm's).
#include <algorithm>
#include <cmath>
#include <cstring>
#include <initializer_list>

#include "graph/ops/builtin_ops.h"
#include "graph/ops/conv_geometry.h"
#include "graph/ops/integer_layer.h"
#include "kernels/implementation.h"
#include "kernels/qconv_direct.h"
#include "lowbit/elementwise.h"
#include "lowbit/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::ops {
namespace {

// The geometry, from the input shape and the attributes (the weights are packed codes).
ConvGeometry qconv_geometry(const Node& node, const Shape& x, int64_t out_channels) {
  const int64_t groups = node.attr_int("group", 1);
  if (groups < 1) shape_error(node, "attribute 'group' must be positive, got " + std::to_string(groups));
  const int64_t in_channels = node.attr_int("in_channels", -1);
  if (in_channels < 1) shape_error(node, "attribute 'in_channels' must be a positive integer");
  auto it = node.attributes.find("kernel_shape");
  if (it == node.attributes.end() || !it->is_array() || it->size() != 2 || !(*it)[0].is_number_integer() ||
      !(*it)[1].is_number_integer())
    shape_error(node, "attribute 'kernel_shape' [kh, kw] is required");
  if (x.size() == 4 && x[1] != in_channels)
    shape_error(node, "input " + to_string(x) + " must have " + std::to_string(in_channels) + " channels (in_channels)");
  if (in_channels % groups)
    shape_error(node, "group " + std::to_string(groups) + " must divide in_channels (" + std::to_string(in_channels) + ")");
  return conv_geometry(node, x, {out_channels, in_channels / groups, (*it)[0].get<int64_t>(), (*it)[1].get<int64_t>()});
}

struct QConvState : IntegerLayerState {
  std::vector<int32_t> codes;  // unpacked [OC, K] in (c, ki, kj) order, for the reference
  std::vector<int32_t> bias;   // QConv2D: int32 bias
  int64_t k = 0;               // per group
  std::vector<QWeights> group_weights;  // per group: [OC/group, K] in (ki, kj, c) order, for the fast path
  std::vector<int32_t> direct_weights;  // K <= kDirectConvMaxK: the direct kernels' weight pairs
  // DynamicQConv2D: activations quantized per call, weights symmetric.
  bool dynamic = false, per_image = true;
  std::vector<int32_t> weight_row_sums;    // sum of each output channel's codes
  std::vector<float> weight_scale, bias_f32;
  kernels::Choice implementation;          // chosen once, when prepared (kImplementations)
};

// The implementations, fastest first (the file comment describes them). What decides is known
// when the node is prepared: the reduction length K, the horizontal stride and the ISA.
struct QConvProblem {
  int64_t k = 0, stride_w = 1;
};
const char* direct_shape_declines(const QConvProblem& p) {
  if (p.stride_w != 1) return "stride_w is not 1";
  if (p.k > kernels::kDirectConvMaxK) return "K = C/group*kh*kw is above 32, where im2row + GEMM is faster";
  return nullptr;
}
enum QConvImplementation { kDirectVnni, kDirectAvx2, kIm2row, kReference };
constexpr kernels::Implementation<QConvProblem> kImplementations[] = {
    {"qconv_direct_s8__avx512vnni",
     [](const QConvProblem& p) {
       const char* why = kernels::isa_declines(Isa::Avx512Vnni);
       return why ? why : direct_shape_declines(p);
     }},
    {"qconv_direct_s8__avx2",
     [](const QConvProblem& p) {
       const char* why = kernels::isa_declines(Isa::Avx2);
       return why ? why : direct_shape_declines(p);
     }},
    {"qconv_im2row_qgemm", [](const QConvProblem&) { return kernels::isa_declines(Isa::Avx2); }},
    {"qconv2d_ref", nullptr}};

// The input grid of each image: the static QConv2D's attributes, or DynamicQConv2D's per-call
// parameters (one per image).
struct InputGrid {
  int32_t zero_point = 0;
  const int32_t* image_zero_point = nullptr;
  const float* image_scale = nullptr;
  int32_t zero(int64_t image) const { return image_zero_point ? image_zero_point[image] : zero_point; }
};

// The normative definition (see the file comment). y is [N, OC, OH, OW].
template <typename Out>
void qconv2d_ref(const ConvGeometry& g, const QConvState& s, const int8_t* x, const InputGrid& grid, Out* y) {
  const int64_t k = s.k, cg = g.group_in();
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t m = 0; m < g.out_channels; ++m) {
      const int32_t* w = s.codes.data() + m * k;
      const int32_t zw = s.weight_zero_point[m], zx = grid.zero(n);
      const int64_t c0 = m / g.group_out() * cg;
      for (int64_t oy = 0; oy < g.out_h; ++oy)
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          int64_t acc = s.bias.empty() ? 0 : s.bias[m];
          for (int64_t c = c0; c < c0 + cg; ++c)
            for (int64_t ki = 0; ki < g.kernel_h; ++ki)
              for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
                const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
                const int64_t ix = ox * g.stride_w - g.pad_left + kj * g.dilation_w;
                if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
                const int32_t a = x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix];
                acc += static_cast<int64_t>(a - zx) * (w[((c - c0) * g.kernel_h + ki) * g.kernel_w + kj] - zw);
              }
          const int32_t acc32 = static_cast<int32_t>(acc);
          Out& dst = y[((n * g.out_channels + m) * g.out_h + oy) * g.out_w + ox];
          if constexpr (std::is_same_v<Out, float>) {
            // qgemm's f32 output: ((float(acc) * row_scale) * column_scale) + bias.
            float v = static_cast<float>(acc32);
            if (grid.image_scale) v *= grid.image_scale[n];
            v *= s.column_scale[m];
            if (!s.bias_f32.empty()) v += s.bias_f32[m];
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

int64_t padded_h(const ConvGeometry& g) { return g.pad_top + g.in_h + g.pad_bottom; }
int64_t padded_w(const ConvGeometry& g) { return g.pad_left + g.in_w + g.pad_right; }

// The `count` NCHW images of x as NHWC with the padding materialized:
// padded[i][y][x][c] = x[i, c, y - pad_top, x - pad_left], or `zero` outside the image.
// `zero(i)`: the zero point of image i of the chunk.
template <typename Zero> void to_padded_nhwc(const ConvGeometry& g, const int8_t* x, int64_t count, Zero zero_of, int8_t* padded) {
  const int64_t hp = padded_h(g), wp = padded_w(g), ch = g.in_channels;
  parallel_for(count * hp, plane_grain(wp * ch), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / hp, y = r % hp - g.pad_top;
      const int8_t zero = static_cast<int8_t>(zero_of(i));
      int8_t* dst = padded + r * wp * ch;
      if (y < 0 || y >= g.in_h) {
        std::memset(dst, static_cast<unsigned char>(zero), static_cast<size_t>(wp * ch));
        continue;
      }
      std::memset(dst, static_cast<unsigned char>(zero), static_cast<size_t>(g.pad_left * ch));
      std::memset(dst + (g.pad_left + g.in_w) * ch, static_cast<unsigned char>(zero), static_cast<size_t>(g.pad_right * ch));
      const int8_t* src = x + i * ch * g.in_spatial() + y * g.in_w;
      int8_t* d = dst + g.pad_left * ch;
      if (ch == 1) {
        std::memcpy(d, src, static_cast<size_t>(g.in_w));
        continue;
      }
      for (int64_t c = 0; c < ch; ++c) {
        const int8_t* plane = src + c * g.in_spatial();
        for (int64_t ix = 0; ix < g.in_w; ++ix) d[ix * ch + c] = plane[ix];
      }
    }
  });
}

// The same padding, NCHW planes: padded[i][c][y][x] (the direct kernel's input).
template <typename Zero> void to_padded_nchw(const ConvGeometry& g, const int8_t* x, int64_t count, Zero zero_of, int8_t* padded) {
  const int64_t hp = padded_h(g), wp = padded_w(g);
  parallel_for(count * g.in_channels, plane_grain(hp * wp), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      int8_t* dst = padded + p * hp * wp;
      const int8_t* src = x + p * g.in_spatial();
      std::memset(dst, static_cast<unsigned char>(zero_of(p / g.in_channels)), static_cast<size_t>(hp * wp));
      for (int64_t y = 0; y < g.in_h; ++y) std::memcpy(dst + (y + g.pad_top) * wp + g.pad_left, src + y * g.in_w, static_cast<size_t>(g.in_w));
    }
  });
}

// Copies n bytes with fixed-size (inlined) moves, overlapping at the end rather than looping
// byte by byte: a 3x3 kernel row of one channel is 3 bytes, of 32 channels 96.
template <size_t Bytes> inline void move(int8_t* d, const int8_t* s) { std::memcpy(d, s, Bytes); }
inline void copy_bytes(int8_t* __restrict d, const int8_t* __restrict s, int64_t n) {
  if (n >= 16) {
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) move<16>(d + j, s + j);
    if (j < n) move<16>(d + n - 16, s + n - 16);
  } else if (n >= 8) {
    move<8>(d, s);
    move<8>(d + n - 8, s + n - 8);
  } else if (n >= 4) {
    move<4>(d, s);
    move<4>(d + n - 4, s + n - 4);
  } else if (n >= 2) {
    move<2>(d, s);
    move<2>(d + n - 2, s + n - 2);
  } else if (n == 1) {
    *d = *s;
  }
}

// rows[(i*OH + oy)*OW + ox][(ki*kw + kj)*cg + c] = padded[i][oy*sh + ki*dh][ox*sw + kj*dw][group*cg + c].
void im2row_nhwc(const ConvGeometry& g, const int8_t* padded, int64_t count, int64_t group, int8_t* rows) {
  const int64_t k = g.patch(), spatial = g.out_spatial(), ch = g.in_channels, cg = g.group_in();
  const int64_t hp = padded_h(g), wp = padded_w(g);
  const bool whole_rows = g.dilation_w == 1 && cg == ch;  // a kernel row is kw * C contiguous bytes
  parallel_for(count * g.out_h, plane_grain(g.out_w * k, 4096), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t i = r / g.out_h, oy = r % g.out_h;
      int8_t* d = rows + (i * spatial + oy * g.out_w) * k;
      for (int64_t ox = 0; ox < g.out_w; ++ox)
        for (int64_t ki = 0; ki < g.kernel_h; ++ki) {
          const int8_t* src = padded + ((i * hp + oy * g.stride_h + ki * g.dilation_h) * wp + ox * g.stride_w) * ch + group * cg;
          if (whole_rows) {
            copy_bytes(d, src, g.kernel_w * ch);
            d += g.kernel_w * ch;
          } else {
            for (int64_t kj = 0; kj < g.kernel_w; ++kj, d += cg) copy_bytes(d, src + kj * g.dilation_w * ch, cg);
          }
        }
    }
  });
}

// Transposes the 8x8 byte block held as 8 little-endian rows: byte j of row i moves to byte i
// of row j (three rounds of swapping 4x4, 2x2 and 1x1 sub-blocks across the diagonal).
inline void transpose_8x8(uint64_t r[8]) {
  for (int i = 0; i < 4; ++i) {
    const uint64_t t = ((r[i] >> 32) ^ r[i + 4]) & 0x00000000FFFFFFFFull;
    r[i] ^= t << 32;
    r[i + 4] ^= t;
  }
  for (int i : {0, 1, 4, 5}) {
    const uint64_t t = ((r[i] >> 16) ^ r[i + 2]) & 0x0000FFFF0000FFFFull;
    r[i] ^= t << 16;
    r[i + 2] ^= t;
  }
  for (int i : {0, 2, 4, 6}) {
    const uint64_t t = ((r[i] >> 8) ^ r[i + 1]) & 0x00FF00FF00FF00FFull;
    r[i] ^= t << 8;
    r[i + 1] ^= t;
  }
}

// [count*OH*OW, OC] -> NCHW planes of the `count` images: per image, the [spatial, OC] matrix
// transposed, in 8x8 blocks for bytes (the edges and f32 element by element).
template <typename T> void rows_to_nchw(const ConvGeometry& g, const T* src, int64_t count, T* y) {
  const int64_t spatial = g.out_spatial(), oc = g.out_channels;
  constexpr int64_t kBlock = 8;
  const int64_t blocks = (spatial + kBlock - 1) / kBlock;  // of 8 pixels, per image
  parallel_for(count * blocks, plane_grain(oc * kBlock, 2048), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t i = b / blocks, q0 = b % blocks * kBlock, q1 = std::min(q0 + kBlock, spatial);
      const T* s = src + (i * spatial + q0) * oc;
      T* d = y + i * oc * spatial + q0;
      int64_t m = 0;
      if constexpr (sizeof(T) == 1) {
        if (q1 - q0 == kBlock)
          for (; m + kBlock <= oc; m += kBlock) {
            uint64_t r[8];
            for (int j = 0; j < 8; ++j) std::memcpy(&r[j], s + j * oc + m, 8);
            transpose_8x8(r);
            for (int j = 0; j < 8; ++j) std::memcpy(d + (m + j) * spatial, &r[j], 8);
          }
      }
      for (; m < oc; ++m)
        for (int64_t q = q0; q < q1; ++q) d[m * spatial + q - q0] = s[(q - q0) * oc + m];
    }
  });
}

// The output stage of output channels [c0, ...) (a group's): QConv2D's prepared constants, or
// DynamicQConv2D's (acc = raw - zx * sum(w), through the row-offset hook with the weights' row
// sums in the weight-zero-point slot; row_offset / row_scale are the caller's).
QOutputStage output_stage(const QConvState& s, int64_t c0) {
  QOutputStage stage;
  stage.column_offset = s.column_offset.data() + c0;
  if (s.dynamic)
    stage.weight_zero_point = s.weight_row_sums.data() + c0;
  else if (s.has_weight_zero_point)
    stage.weight_zero_point = s.weight_zero_point.data() + c0;
  if (s.f32_output) {
    stage.column_scale = s.column_scale.data() + c0;
    stage.bias = s.bias_f32.empty() ? nullptr : s.bias_f32.data() + c0;
    stage.relu = s.relu;
  } else {
    stage.multiplier = s.multiplier.data() + c0;
    stage.output_zero_point = s.output_zero_point;
    stage.clamp_min = s.clamp_min;
    stage.clamp_max = s.clamp_max;
  }
  return stage;
}

// Short reductions (K <= 32: first layers on few channels, depthwise layers) with stride_w 1: the
// direct kernel (kernels/qconv_direct.h; AVX-512 VNNI or AVX2) reads the padded NCHW chunk and
// writes NCHW, skipping im2row, the GEMM's packing and the transpose. Returns false if it does
// not apply.
bool forward_direct(const ConvGeometry& g, const QConvState& s, const int8_t* x, const InputGrid& grid, Tensor& y) {
#if defined(LOWBIT_HAVE_X86)
  const bool vnni = s.implementation.index == kDirectVnni;
  kernels::DirectConvShape d;
  d.channels = g.in_channels, d.padded_h = padded_h(g), d.padded_w = padded_w(g);
  d.out_channels = g.out_channels, d.groups = g.groups, d.kernel_h = g.kernel_h, d.kernel_w = g.kernel_w;
  d.stride_h = g.stride_h, d.dilation_h = g.dilation_h, d.dilation_w = g.dilation_w, d.out_h = g.out_h, d.out_w = g.out_w;
  thread_local kernels::DirectConvPlan plan;
  if (s.direct_weights.empty() || !kernels::plan_direct_conv(d, s.direct_weights.data(), plan)) return false;
  const int64_t in_image = g.in_channels * d.padded_h * d.padded_w, out_image = g.out_channels * g.out_spatial();
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 22) / std::max<int64_t>(in_image, 1), 1, std::max<int64_t>(g.batch, 1));
  thread_local std::vector<int8_t> padded;
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    d.images = std::min(chunk, g.batch - n0);
    padded.resize(static_cast<size_t>(d.images * in_image + kernels::kDirectConvSlack));
    to_padded_nchw(g, x + n0 * g.in_channels * g.in_spatial(), d.images, [&](int64_t i) { return grid.zero(n0 + i); }, padded.data());
    QOutputStage stage = output_stage(s, 0);
    if (s.dynamic) {  // per image, as the kernel reads them
      stage.row_offset = grid.image_zero_point + n0;
      stage.row_scale = grid.image_scale + n0;
    }
    float* y32 = s.f32_output ? y.data<float>() + n0 * out_image : nullptr;
    int8_t* y8 = s.f32_output ? nullptr : y.data<int8_t>() + n0 * out_image;
    const bool done = vnni ? (y32 ? kernels::qconv_direct_s8_f32_vnni(d, plan, padded.data(), stage, y32)
                                  : kernels::qconv_direct_s8_vnni(d, plan, padded.data(), stage, y8))
                           : (y32 ? kernels::qconv_direct_s8_f32_avx2(d, plan, padded.data(), stage, y32)
                                  : kernels::qconv_direct_s8_avx2(d, plan, padded.data(), stage, y8));
    if (!done) throw Error(ErrorKind::Internal, "QConv2D: the direct kernel could not run (out of memory)");
  }
  return true;
#else
  (void)g, (void)s, (void)x, (void)grid, (void)y;
  return false;
#endif
}

// The integer convolution of s8 codes x (any implementation, see the file comment) into y, whose
// dtype and shape are set.
void integer_conv(const ConvGeometry& g, const QConvState& s, const int8_t* x, const InputGrid& grid, Tensor& y) {
  if (s.implementation.index == kReference) {
    if (s.f32_output)
      qconv2d_ref(g, s, x, grid, y.data<float>());
    else
      qconv2d_ref(g, s, x, grid, y.data<int8_t>());
    return;
  }
  if (s.implementation.index != kIm2row) {
    if (!forward_direct(g, s, x, grid, y))
      throw Error(ErrorKind::Internal, "QConv2D: the direct kernel does not take this shape");
    return;
  }
  const int64_t chunk = images_per_chunk(g), k = g.patch(), spatial = g.out_spatial(), oc = g.out_channels;
  const int64_t og = g.group_out();
  thread_local std::vector<int8_t> padded, rows;
  thread_local std::vector<int32_t> row_offset;
  thread_local std::vector<float> row_scale;
  thread_local std::vector<int8_t> result_s8;
  thread_local std::vector<float> result_f32;
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, g.batch - n0), m = count * spatial;
    padded.resize(static_cast<size_t>(count * padded_h(g) * padded_w(g) * g.in_channels));
    to_padded_nhwc(g, x + n0 * g.in_channels * g.in_spatial(), count, [&](int64_t i) { return grid.zero(n0 + i); }, padded.data());
    rows.resize(static_cast<size_t>(m * k));
    if (s.f32_output)
      result_f32.resize(static_cast<size_t>(m * oc));
    else
      result_s8.resize(static_cast<size_t>(m * oc));
    if (s.dynamic) {  // every row (pixel) of image i: its zero point and scale
      row_offset.resize(static_cast<size_t>(m));
      row_scale.resize(static_cast<size_t>(m));
      for (int64_t r = 0; r < m; ++r) {
        row_offset[static_cast<size_t>(r)] = grid.image_zero_point[n0 + r / spatial];
        row_scale[static_cast<size_t>(r)] = grid.image_scale[n0 + r / spatial];
      }
    }
    for (int64_t grp = 0; grp < g.groups; ++grp) {
      const int64_t c0 = grp * og;  // the group's first output channel
      im2row_nhwc(g, padded.data(), count, grp, rows.data());
      QOutputStage stage = output_stage(s, c0);
      if (s.dynamic) {
        stage.row_offset = row_offset.data();
        stage.row_scale = row_scale.data();
      } else if (s.has_weight_zero_point) {
        row_offset.resize(static_cast<size_t>(m));
        row_sums_s8(m, k, rows.data(), k, row_offset.data());
        stage.row_offset = row_offset.data();
      }
      if (s.f32_output)
        qgemm_s8_f32(m, rows.data(), k, s.group_weights[grp], stage, result_f32.data() + c0, oc);
      else
        qgemm_s8(m, rows.data(), k, s.group_weights[grp], stage, result_s8.data() + c0, oc);
    }
    if (s.f32_output)
      rows_to_nchw(g, result_f32.data(), count, y.data<float>() + n0 * oc * spatial);
    else
      rows_to_nchw(g, result_s8.data(), count, y.data<int8_t>() + n0 * oc * spatial);
  }
}

// The weight codes of a QConv2D / DynamicQConv2D node, checked and unpacked; chooses the
// implementation and prepares the weights in the layout it reads (only that one); returns each
// output channel's code sum.
std::vector<int32_t> prepare_weights(const Node& node, const Tensor& codes, QConvState& s) {
  const int64_t oc = codes.dim(0);
  auto ks = node.attributes.at("kernel_shape");
  const int64_t kh = ks[0].get<int64_t>(), kw = ks[1].get<int64_t>(), groups = node.attr_int("group", 1);
  const int64_t cg = node.attr_int("in_channels", -1) / groups, og = oc / groups;
  s.k = cg * kh * kw;
  check_weight_tensor(node, codes, s.k);
  const DType d = codes.dtype();
  s.codes = unpack_codes(codes, {oc, s.k});
  QConvProblem problem{s.k, 1};
  auto strides = node.attributes.find("strides");
  if (strides != node.attributes.end() && strides->is_array() && strides->size() == 2 && (*strides)[1].is_number_integer())
    problem.stride_w = (*strides)[1].get<int64_t>();
  s.implementation = kernels::choose(kImplementations, problem);
  std::vector<int32_t> row_sums(static_cast<size_t>(oc), 0);
  for (int64_t m = 0; m < oc; ++m)
    for (int64_t t = 0; t < s.k; ++t) row_sums[static_cast<size_t>(m)] += s.codes[static_cast<size_t>(m * s.k + t)];
  if (s.implementation.index == kDirectVnni || s.implementation.index == kDirectAvx2)
    s.direct_weights = kernels::direct_conv_weight_pairs(s.codes.data(), oc, s.k);
  if (s.implementation.index != kIm2row) return row_sums;
  // The fast path's weights: per group, rows permuted from (c, ki, kj) to (ki, kj, c) order.
  std::vector<int32_t> permuted(static_cast<size_t>(og * s.k));
  for (int64_t grp = 0; grp < groups; ++grp) {
    for (int64_t m = 0; m < og; ++m) {
      const int32_t* src = s.codes.data() + (grp * og + m) * s.k;
      for (int64_t ch = 0; ch < cg; ++ch)
        for (int64_t t = 0; t < kh * kw; ++t) permuted[static_cast<size_t>(m * s.k + t * cg + ch)] = src[ch * kh * kw + t];
    }
    s.group_weights.push_back(QWeights::pack(pack_codes(permuted, {og, s.k}, d), og, s.k));
  }
  return row_sums;
}

// The output channels of QConv2D / DynamicQConv2D from the weight codes [OC, packed K]; in[2], ...
// (named by `vectors`) must be per-channel vectors [OC].
int64_t out_channels(const Node& node, std::span<const Shape> in, std::initializer_list<const char*> vectors) {
  if (in[1].size() != 2) shape_error(node, "weight codes must be [out_channels, packed K], got " + to_string(in[1]));
  const int64_t oc = in[1][0];
  auto name = vectors.begin();
  for (size_t i = 2; i < in.size() && name != vectors.end(); ++i, ++name)
    if (in[i].size() != 1 || in[i][0] != oc)
      shape_error(node, std::string(*name) + " must be [" + std::to_string(oc) + "], got " + to_string(in[i]));
  return oc;
}

// Op::describe of both integer convolutions: the implementation chosen when prepared (and, for
// im2row, the GEMM under it). Built only when asked (LOWBIT_VERBOSE), not on every prepare.
std::string describe_prepared(const void* state) {
  if (!state) return "prepared on every call (weights are not constants)";
  const auto& s = *static_cast<const QConvState*>(state);
  std::string line = s.implementation.describe();
  if (s.implementation.index == kIm2row) {
    const QWeights& w = s.group_weights.front();
    line += " on " + kernels::describe_qgemm(w.storage(), w.vnni_layout().defined());
  }
  return line;
}

class QConv2D final : public PreparedInferenceOp {
 public:
  QConv2D() { traits_ = {.onnx = "QLinearConv", .float_op = "Conv2D"}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 4, 5);
    const int64_t oc = out_channels(node, in, {"weight_scale", "weight_zero_point", "bias"});
    relu_of(node);
    f32_output(node);
    activation_params(node, "input_scale", "input_zero_point");
    const ConvGeometry g = qconv_geometry(node, in[0], oc);
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {integer_layer_dtype(node, in)};
  }

  std::shared_ptr<const void> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<QConvState>();
    const int64_t oc = c[1]->dim(0);
    const std::vector<int32_t> row_sums = prepare_weights(node, *c[1], *s);
    if (c.size() == 5) s->bias.assign(c[4]->data<int32_t>(), c[4]->data<int32_t>() + oc);
    prepare_output_stage(node, row_sums, c[2]->data<float>(), c[3]->data<int32_t>(), s->bias.empty() ? nullptr : s->bias.data(),
                         s->k, *s);
    return s;
  }

  std::string describe(const Node&, const void* state) const override {
    return describe_prepared(state);
  }

  void forward_prepared(const Node& node, const void* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out) const override {
    if (!state) return forward(node, in, out);
    const auto& s = *static_cast<const QConvState*>(state);
    const ConvGeometry g = qconv_geometry(node, in[0]->shape(), static_cast<int64_t>(s.column_offset.size()));
    const Shape shape{g.batch, g.out_channels, g.out_h, g.out_w};
    prepare_output(*out[0], s.f32_output ? DType::F32 : DType::S8, shape);
    InputGrid grid;
    grid.zero_point = s.input_zero_point;
    integer_conv(g, s, in[0]->data<int8_t>(), grid, *out[0]);
  }
};

// DynamicQConv2D: x f32 [N, C, H, W] quantized at run time (8-bit affine, one range per image or
// per batch: attribute granularity "row" or "tensor", as DynamicQDense's), symmetric weight codes
// [OC, .] with weight_scale f32 [OC], optional bias f32 [OC]; f32 output
//   y = ((float(acc) * x_scale) * weight_scale[oc]) + bias[oc], then ReLU if activation is "relu",
// acc = sum (x_q - x_zero_point) * w exactly (DynamicQDense's arithmetic with K = C/group*kh*kw).
class DynamicQConv2D final : public PreparedInferenceOp {
 public:
  DynamicQConv2D() { traits_ = {.onnx = "ConvInteger", .float_op = "Conv2D", .dynamic = true}; }
  std::vector<Shape> infer_shapes(const Node& node, std::span<const Shape> in) const override {
    expect_input_count(node, in, 3, 4);
    const int64_t oc = out_channels(node, in, {"weight_scale", "bias"});
    relu_of(node);
    per_row_ranges(node);
    const ConvGeometry g = qconv_geometry(node, in[0], oc);
    return {{g.batch, g.out_channels, g.out_h, g.out_w}};
  }
  std::vector<DType> infer_dtypes(const Node& node, std::span<const DType> in) const override {
    return {dynamic_layer_dtype(node, in)};
  }
  std::shared_ptr<const void> prepare(const Node& node, std::span<const Tensor* const> c) const override {
    if (!constants_known(c)) return nullptr;
    auto s = std::make_shared<QConvState>();
    const int64_t oc = c[1]->dim(0);
    s->weight_row_sums = prepare_weights(node, *c[1], *s);
    s->dynamic = true;
    s->per_image = per_row_ranges(node);  // a row is an image
    s->f32_output = true;
    s->relu = relu_of(node);
    s->column_offset.assign(static_cast<size_t>(oc), 0);
    s->weight_zero_point.assign(static_cast<size_t>(oc), 0);
    s->column_scale.assign(c[2]->data<float>(), c[2]->data<float>() + oc);
    for (int64_t m = 0; m < oc; ++m)
      if (!(s->column_scale[m] > 0.0f) || !std::isfinite(s->column_scale[m]))
        shape_error(node, "weight_scale[" + std::to_string(m) + "] must be positive and finite");
    if (c.size() == 4) s->bias_f32.assign(c[3]->data<float>(), c[3]->data<float>() + oc);
    return s;
  }

  std::string describe(const Node&, const void* state) const override {
    return describe_prepared(state);
  }

  void forward_prepared(const Node& node, const void* state, std::span<const Tensor* const> in,
                        std::span<Tensor* const> out) const override {
    if (!state) return forward(node, in, out);
    const auto& s = *static_cast<const QConvState*>(state);
    const ConvGeometry g = qconv_geometry(node, in[0]->shape(), static_cast<int64_t>(s.column_offset.size()));
    prepare_output(*out[0], DType::F32, {g.batch, g.out_channels, g.out_h, g.out_w});
    // Quantize the input: affine s8 per image (or per batch) from its observed range.
    thread_local std::vector<int8_t> codes;
    thread_local std::vector<int32_t> zero;
    thread_local std::vector<float> scale;
    const int64_t image = g.in_channels * g.in_spatial();
    codes.resize(static_cast<size_t>(g.batch * image));
    zero.resize(static_cast<size_t>(g.batch));
    scale.resize(static_cast<size_t>(g.batch));
    int8_t* code_data = codes.data();  // the workers must not name the thread_local buffers
    int32_t* zero_data = zero.data();
    float* scale_data = scale.data();
    const float* xv = in[0]->data<float>();
    const int64_t ranges = s.per_image ? g.batch : 1, per_range = s.per_image ? 1 : g.batch;
    parallel_for(ranges, 1, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t count = per_range * image;
        const float* first = xv + r * count;
        float lo = 0.0f, hi = 0.0f;
        if (count > 0) minmax_f32(count, first, &lo, &hi);
        if (std::isnan(lo)) lo = hi = 0.0f;  // an all-NaN image
        const QuantParams p = choose_params(lo, hi, {8, QScheme::Affine});
        quantize_s8(count, first, p.scale[0], p.zero_point[0], code_data + r * count);
        for (int64_t i = r * per_range; i < (r + 1) * per_range; ++i) zero_data[i] = p.zero_point[0], scale_data[i] = p.scale[0];
      }
    });
    InputGrid grid;
    grid.image_zero_point = zero.data();
    grid.image_scale = scale.data();
    integer_conv(g, s, codes.data(), grid, *out[0]);
  }
};

}  // namespace

void register_qconv(const Registrar& add) {
  add("QConv2D", std::make_unique<QConv2D>());
  add("DynamicQConv2D", std::make_unique<DynamicQConv2D>());
}

}  // namespace lowbit::ops
