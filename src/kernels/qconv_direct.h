// Internal: direct integer convolution for short reductions (first layers on few input channels,
// depthwise layers), run by qconv2d_s8_direct (kernels/qconv.h, qconv_direct.cpp), which QConv2D
// (src/graph/ops/qconv.cpp) lists before its im2row + qgemm path.
//
// Input: zero-padded NCHW s8 images (the border already holds the input zero point, so padding
// stands for real zeros), planes of padded_h x padded_w. Output channel oc (group
// oc / (out_channels / groups)) at (oy, ox) accumulates, exactly in s32 (wrapping like qgemm),
//   raw = sum over its group's channels c and taps (ki, kj) of
//         x[c][oy * stride_h + ki * dilation_h][ox + kj * dilation_w] * w[oc][(c, ki, kj)]
// and finishes with qgemm's output stage (kernels/qgemm.h), output channels in the role of GEMM
// columns and pixels in the role of rows: acc = raw + column_offset[oc] - weight_zero_point[oc] *
// r, where r is the sum of the pixel's taps, or, if out.row_offset is set, row_offset[image] (one
// value per image: dynamic quantization puts the image's zero point there and the weights' row
// sums in weight_zero_point); then requantized to s8, or scaled to f32 as
// ((float(acc) * row_scale[image]) * column_scale[oc]) + bias[oc] (row_scale, bias optional).
// The result is written as NCHW planes [out_channels][out_h][out_w] per image, so it is
// bit-identical to the reference (kernels/ref/qconv_ref.cpp).
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit::kernels {

struct DirectConvShape {
  int64_t images = 0, channels = 0, padded_h = 0, padded_w = 0;
  int64_t out_channels = 0, groups = 1, kernel_h = 1, kernel_w = 1;
  int64_t stride_h = 1, dilation_h = 1, dilation_w = 1;  // stride_w is 1
  int64_t out_h = 0, out_w = 0;
  int64_t group_k() const { return channels / groups * kernel_h * kernel_w; }
};

// The longest reduction (channels / groups * kh * kw) the direct kernels take.
constexpr int64_t kDirectConvMaxK = 32;

// The weights in the form every direct kernel reads, built once when the layer is prepared:
// [out_channels][ceil(k / 2)] pairs, w[2j] in the low 16 bits, w[2j + 1] (or 0) in the high.
// `codes`: [out_channels][k] in (c, ki, kj) order, 8-bit values (s8 or unpacked low-bit).
std::vector<int32_t> direct_conv_weight_pairs(const int32_t* codes, int64_t out_channels, int64_t k);

// The weights and window of a call (plan_direct_conv).
struct DirectConvPlan {
  int64_t k = 0, pairs = 0;                // group_k and ceil(k / 2)
  const int32_t* weight_pairs = nullptr;  // from direct_conv_weight_pairs
  std::vector<int64_t> tap_offset;        // [groups][k]: where tap (c, ki, kj) sits from a window's corner in a padded image
};
// Returns false if the shape is not for the direct kernels (group_k > kDirectConvMaxK).
bool plan_direct_conv(const DirectConvShape& s, const int32_t* weight_pairs, DirectConvPlan& plan);

// The kernels' work items: body(image, group, output row) for every output row of every image and
// group, split statically over the threads when the convolution has enough multiply-adds to pay
// for them. (Each kernel passes its own lambda, so no instantiation is shared between files
// compiled for different instruction sets.)
template <class Body>
void for_each_output_row(const DirectConvShape& s, const DirectConvPlan& plan, const Body& body) {
  const int64_t items = s.images * s.groups * s.out_h;
  const int64_t macs = items * s.out_w * (s.out_channels / s.groups) * plan.k;
  const int threads = macs < (int64_t{1} << 18) ? 1 : num_threads();
#pragma omp parallel for schedule(static) num_threads(threads)
  for (int64_t item = 0; item < items; ++item) body(item / (s.groups * s.out_h), item / s.out_h % s.groups, item % s.out_h);
}

// AVX-512 VNNI (x86 builds, CPUs with VNNI; vpdpwssd on pairs of taps). Return false, writing
// nothing, when they cannot run (no scratch memory); the caller checks active_isa() first.
// The output stage's zero point must lie in [-2^31 + 128, 2^31 - 129] (QConv2D's is 8-bit).
bool qconv_direct_s8_vnni(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                          const QOutputStage& out, int8_t* y);
bool qconv_direct_s8_f32_vnni(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                              const QOutputStage& out, float* y);

// AVX2 (x86 builds; vpmaddwd on pairs of taps), the same contract, and `padded` must be readable
// for kDirectConvSlack bytes past its last image (16-byte loads run past a row's last pixel).
constexpr int64_t kDirectConvSlack = 16;
bool qconv_direct_s8_avx2(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                          const QOutputStage& out, int8_t* y);
bool qconv_direct_s8_f32_avx2(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                              const QOutputStage& out, float* y);

}  // namespace lowbit::kernels
