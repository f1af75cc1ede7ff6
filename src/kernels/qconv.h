// Internal: integer 2-D convolution on NCHW s8 codes (the compute of QConv2D and DynamicQConv2D;
// the ops, their ordered list of implementations and the choice, made once when a node is
// prepared, are in graph/ops/qconv.cpp). QDense's arithmetic with K = C/group*kh*kw: output
// channel oc of group oc / (OC/group), at (oy, ox),
//   acc = bias[oc] + sum over the group's channels c and taps (ki, kj) of (x - z_x)(w - z_w)
// exactly (terms outside the input are zero, i.e. padding holds the real value 0), then qgemm's
// output stage (kernels/qgemm.h): requantized to s8, or finished in f32.
// Three implementations, all producing identical bytes (the integer sums are exact; the output
// stage is qgemm's):
//   - qconv2d_s8_ref (ref/qconv_ref.cpp): direct loops over every output, one thread. The
//     normative definition.
//   - qconv2d_s8_im2row (qconv_im2row.cpp): per chunk of images, a zero-padded NHWC copy (the
//     border holds the input zero point, i.e. real zeros), so that im2row is a few contiguous
//     copies per output pixel (kw * C bytes per kernel row) with no bounds tests; the rows
//     [count*OH*OW, K] are in (ki, kj, c) order, as the weights (qconv_im2row_weights, when
//     prepared; a sum of exact integer products does not depend on the order). One qgemm_s8 /
//     qgemm_s8_f32 (dispatched: reference, AVX2 or VNNI) per group writes the group's columns of a
//     [pixels, OC] result, which is transposed to NCHW in 8x8 byte blocks.
//   - qconv2d_s8_direct (qconv_direct.cpp; the AVX2 and AVX-512 VNNI kernels behind it and their
//     contract: qconv_direct.h), for stride_w 1 and K <= kDirectConvMaxK (first layers on few
//     channels, depthwise layers), where it beats im2row: it reads a zero-padded NCHW copy of the
//     chunk and writes the NCHW output directly.
//
//   kernels::QConvWeights w{.codes = codes.data(), .weight_zero_point = zw.data()};
//   kernels::QConvInputGrid grid{.zero_point = zx};
//   kernels::qconv2d_s8_ref(g, w, x, grid, stage, y);     // stage: qgemm's, for all OC channels
#pragma once

#include <cstdint>
#include <vector>

#include "kernels/conv_geometry.h"
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"
#include "lowbit/tensor.h"
#include "lowbit/workspace.h"

namespace lowbit::kernels {

// The zero point of the input codes: one (QConv2D), or one per image with a scale per image
// (DynamicQConv2D: the images were quantized at run time, quantize_images_s8).
struct QConvInputGrid {
  int32_t zero_point = 0;
  const int32_t* image_zero_point = nullptr;  // [N] or null
  const float* image_scale = nullptr;         // [N], with image_zero_point
  int32_t zero(int64_t image) const { return image_zero_point ? image_zero_point[image] : zero_point; }
};

// A layer's weights, in the layout of each implementation; only the chosen one's needs to be set.
struct QConvWeights {
  // The reference: codes [OC][K] in (c, ki, kj) order, the real weight zero points [OC] (zeros
  // for symmetric weights) and the int32 bias [OC] or null. (The fast paths have the bias and the
  // zero-point terms folded into the output stage's column_offset.)
  const int32_t* codes = nullptr;
  const int32_t* weight_zero_point = nullptr;
  const int32_t* bias = nullptr;
  const QWeights* group_weights = nullptr;  // im2row: [groups], from qconv_im2row_weights
  const int32_t* direct_pairs = nullptr;    // direct: from direct_conv_weight_pairs (qconv_direct.h)
};

// The output stage `out` is qgemm's for all OC output channels (GEMM columns), as the layer
// prepared it: column_offset, multiplier, output_zero_point, clamps (s8) or column_scale, bias,
// relu (f32); row_offset and row_scale are the kernels' own. With a per-image grid (dynamic
// quantization), out.weight_zero_point must hold the weights' row sums (acc = raw - z_x * sum(w));
// otherwise it holds the weight zero points, or null when they are all zero.
// y: [N, OC, OH, OW], NCHW.
void qconv2d_s8_ref(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                    const QOutputStage& out, int8_t* y);
void qconv2d_s8_f32_ref(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                        const QOutputStage& out, float* y);
// The fast paths take their padded copies and rows from `workspace` (the executor's scratch).
void qconv2d_s8_im2row(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                       const QOutputStage& out, int8_t* y, Workspace& workspace);
void qconv2d_s8_f32_im2row(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                           const QOutputStage& out, float* y, Workspace& workspace);
// The direct kernel of `isa` (Isa::Avx512Vnni or Isa::Avx2; the caller checked that the CPU has
// it). Returns null when done, else why it could not run: the shape is not for it (stride_w is
// assumed 1), or it found no scratch memory (then the chunks before were written).
const char* qconv2d_s8_direct(Isa isa, const ConvGeometry& g, const QConvWeights& w, const int8_t* x,
                              const QConvInputGrid& grid, const QOutputStage& out, int8_t* y, Workspace& workspace);
const char* qconv2d_s8_f32_direct(Isa isa, const ConvGeometry& g, const QConvWeights& w, const int8_t* x,
                                  const QConvInputGrid& grid, const QOutputStage& out, float* y, Workspace& workspace);

// The input extent with the padding materialized (the fast paths' zero-padded copies).
inline int64_t padded_h(const ConvGeometry& g) { return g.pad_top + g.in_h + g.pad_bottom; }
inline int64_t padded_w(const ConvGeometry& g) { return g.pad_left + g.in_w + g.pad_right; }

// Weight preparation (once per layer). `codes`: [OC][K] in (c, ki, kj) order, K = cg * taps
// (taps = kh*kw, cg = K / taps input channels per group).
// Each output channel's code sum.
std::vector<int32_t> qconv_weight_sums(const int32_t* codes, int64_t out_channels, int64_t k);
// im2row's weights: per group, the rows [OC/group, K] permuted to (ki, kj, c) order, packed in
// `storage` (s8 or s4/u4/s2/u2) for the integer GEMM.
std::vector<QWeights> qconv_im2row_weights(const int32_t* codes, int64_t out_channels, int64_t groups, int64_t k,
                                           int64_t taps, DType storage);

// The input of the dynamic layers (DynamicQConv2D: images; DynamicQDense: rows): `images` runs of
// `image_size` floats quantized to 8-bit affine codes, each from its own range (per_image) or all
// from the batch's; zero_point and scale [images] receive each one's parameters. An all-NaN range
// quantizes as [0, 0].
void quantize_images_s8(const float* x, int64_t images, int64_t image_size, bool per_image, int8_t* codes,
                        int32_t* zero_point, float* scale);

}  // namespace lowbit::kernels
