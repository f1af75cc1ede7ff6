// Internal: pooling over NCHW planes, forward and backward (the compute of MaxPool2D in
// graph/ops/conv.cpp and of AveragePool2D and GlobalAveragePool in graph/ops/norm.cpp; the ops
// read the attributes and fill PoolGeometry, kernels/conv_geometry.h). One implementation each:
// every plane is computed by one thread in one fixed order, and parallel_for splits the planes
// (kernels/grain.h), so results are bit-identical for any thread count.
//   - maxpool2d: the maximum of each window (clipped to the input: the ONNX padding is smaller
//     than the kernel, so every window holds an input element), computed per row of windows as
//     the element-wise maximum of its input rows, then of each window's columns (vectorized;
//     2x2 stride-2 windows straight from their two rows, in AVX2 registers where the CPU has
//     it: kernels/maxpool_plane.h). s8 codes pass through: the maximum commutes with the monotone quantization, so the
//     output has the input's scale and zero point.
//   - maxpool2d_backward_f32: dy goes to the element the forward pass picked (recomputed).
//   - avgpool2d_f32: (the window's inputs summed in float, row-major) * (1 / divisor); the divisor
//     counts the window's input elements, or the whole kernel (kh*kw) with count_include_pad.
//   - global_avgpool_f32: the mean of each plane, summed as sum_run (kernels/sum_run.h).
//
//   kernels::PoolGeometry g = ...;                      // graph/ops/conv_geometry.h: pool_geometry()
//   kernels::maxpool2d_f32(g, x, y);                    // y [N, C, OH, OW] from x [N, C, H, W]
#pragma once

#include <cstdint>

#include "kernels/conv_geometry.h"

namespace lowbit::kernels {

// y [N, C, OH, OW] from x [N, C, H, W].
void maxpool2d_f32(const PoolGeometry& g, const float* x, float* y);
void maxpool2d_s8(const PoolGeometry& g, const int8_t* x, int8_t* y);
// dx [N, C, H, W] (overwritten) from x and dy [N, C, OH, OW].
void maxpool2d_backward_f32(const PoolGeometry& g, const float* x, const float* dy, float* dx);

void avgpool2d_f32(const PoolGeometry& g, bool count_include_pad, const float* x, float* y);
// dx (overwritten): each dy shared out over its window's input elements as dy * (1 / divisor).
void avgpool2d_backward_f32(const PoolGeometry& g, bool count_include_pad, const float* dy, float* dx);

// `planes` planes of `plane` values: y[p] = mean of plane p; backward dx = dy[p] / plane over plane p.
void global_avgpool_f32(int64_t planes, int64_t plane, const float* x, float* y);
void global_avgpool_backward_f32(int64_t planes, int64_t plane, const float* dy, float* dx);

}  // namespace lowbit::kernels
