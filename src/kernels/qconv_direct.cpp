// The ISA-independent part of the direct integer convolution (kernels/qconv_direct.h): weight
// pairs (once per layer), tap offsets (per call), and qconv2d_s8_direct (kernels/qconv.h), which
// copies each chunk of images into the zero-padded NCHW layout the kernels read and calls the
// kernel of the ISA level chosen.
#include <algorithm>
#include <cstring>
#include <type_traits>

#include "kernels/grain.h"
#include "kernels/qconv.h"
#include "kernels/qconv_direct.h"

namespace lowbit::kernels {
namespace {

// The `count` NCHW images of x with the padding materialized, as NCHW planes (the direct kernels'
// input): padded[i][c][y][x] = x[i, c, y - pad_top, x - pad_left], or `zero_of(i)` outside the image.
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

// Short reductions (K <= 32: first layers on few channels, depthwise layers) with stride_w 1: the
// direct kernel (AVX-512 VNNI or AVX2) reads the padded NCHW chunk and writes NCHW, skipping
// im2row, the GEMM's packing and the transpose.
template <typename Out>
const char* qconv2d_direct(Isa isa, const ConvGeometry& g, const QConvWeights& w, const int8_t* x,
                           const QConvInputGrid& grid, const QOutputStage& out, Out* y, Workspace& workspace) {
#if defined(LOWBIT_HAVE_X86)
  const bool vnni = isa == Isa::Avx512Vnni;
  DirectConvShape d;
  d.channels = g.in_channels, d.padded_h = padded_h(g), d.padded_w = padded_w(g);
  d.out_channels = g.out_channels, d.groups = g.groups, d.kernel_h = g.kernel_h, d.kernel_w = g.kernel_w;
  d.stride_h = g.stride_h, d.dilation_h = g.dilation_h, d.dilation_w = g.dilation_w, d.out_h = g.out_h, d.out_w = g.out_w;
  DirectConvPlan plan;
  if (!w.direct_pairs || !plan_direct_conv(d, w.direct_pairs, plan)) return "the direct kernel does not take this shape";
  const int64_t in_image = g.in_channels * d.padded_h * d.padded_w, out_image = g.out_channels * g.out_spatial();
  const int64_t chunk = std::clamp<int64_t>((int64_t{1} << 22) / std::max<int64_t>(in_image, 1), 1, std::max<int64_t>(g.batch, 1));
  // One buffer for the largest chunk; the slack after the last image the kernels read is zeroed.
  const int64_t most = std::min(chunk, g.batch);
  int8_t* padded = workspace.take<int8_t>(static_cast<size_t>(most * in_image + kDirectConvSlack));
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    d.images = std::min(chunk, g.batch - n0);
    to_padded_nchw(g, x + n0 * g.in_channels * g.in_spatial(), d.images, [&](int64_t i) { return grid.zero(n0 + i); }, padded);
    std::memset(padded + d.images * in_image, 0, static_cast<size_t>(kDirectConvSlack));
    QOutputStage stage = out;
    if (grid.image_zero_point) {  // dynamic quantization: per image, as the kernel reads them
      stage.row_offset = grid.image_zero_point + n0;
      stage.row_scale = grid.image_scale + n0;
    }
    bool done;
    if constexpr (std::is_same_v<Out, float>)
      done = vnni ? qconv_direct_s8_f32_vnni(d, plan, padded, stage, y + n0 * out_image)
                  : qconv_direct_s8_f32_avx2(d, plan, padded, stage, y + n0 * out_image);
    else
      done = vnni ? qconv_direct_s8_vnni(d, plan, padded, stage, y + n0 * out_image)
                  : qconv_direct_s8_avx2(d, plan, padded, stage, y + n0 * out_image);
    if (!done) return "the direct kernel could not run (out of memory)";
  }
  return nullptr;
#else
  (void)isa, (void)g, (void)w, (void)x, (void)grid, (void)out, (void)y, (void)workspace;
  return "the direct kernel does not take this shape";
#endif
}

}  // namespace

const char* qconv2d_s8_direct(Isa isa, const ConvGeometry& g, const QConvWeights& w, const int8_t* x,
                              const QConvInputGrid& grid, const QOutputStage& out, int8_t* y, Workspace& workspace) {
  return qconv2d_direct(isa, g, w, x, grid, out, y, workspace);
}

const char* qconv2d_s8_f32_direct(Isa isa, const ConvGeometry& g, const QConvWeights& w, const int8_t* x,
                                  const QConvInputGrid& grid, const QOutputStage& out, float* y, Workspace& workspace) {
  return qconv2d_direct(isa, g, w, x, grid, out, y, workspace);
}

std::vector<int32_t> direct_conv_weight_pairs(const int32_t* codes, int64_t out_channels, int64_t k) {
  const int64_t pairs = (k + 1) / 2;
  std::vector<int32_t> result(static_cast<size_t>(out_channels * pairs));
  for (int64_t oc = 0; oc < out_channels; ++oc) {
    const int32_t* w = codes + oc * k;
    for (int64_t j = 0; j < pairs; ++j) {
      const uint32_t lo = static_cast<uint16_t>(w[2 * j]), hi = 2 * j + 1 < k ? static_cast<uint16_t>(w[2 * j + 1]) : 0u;
      result[static_cast<size_t>(oc * pairs + j)] = static_cast<int32_t>(lo | hi << 16);
    }
  }
  return result;
}

bool plan_direct_conv(const DirectConvShape& s, const int32_t* weight_pairs, DirectConvPlan& plan) {
  const int64_t k = s.group_k();
  if (k < 1 || k > kDirectConvMaxK) return false;
  plan.k = k;
  plan.pairs = (k + 1) / 2;
  plan.weight_pairs = weight_pairs;
  const int64_t cg = s.channels / s.groups;
  plan.tap_offset.resize(static_cast<size_t>(s.groups * k));
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t ki = 0; ki < s.kernel_h; ++ki)
        for (int64_t kj = 0; kj < s.kernel_w; ++kj)
          plan.tap_offset[static_cast<size_t>(g * k + (c * s.kernel_h + ki) * s.kernel_w + kj)] =
              ((g * cg + c) * s.padded_h + ki * s.dilation_h) * s.padded_w + kj * s.dilation_w;
  return true;
}

}  // namespace lowbit::kernels
