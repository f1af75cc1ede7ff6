// Internal: float 2-D convolution on NCHW data, forward and backward (the Conv2D op's compute;
// implementations listed in graph/ops/conv.cpp).
//   - conv2d_f32_ref: the direct seven-loop convolution, one thread. The normative definition.
//   - conv2d_f32_im2col: im2col for a chunk of images, then one gemm_f32 per group:
//       out[Cout/G, n*OH*OW] = W_g[Cout/G, Cin/G*kh*kw] * col_g[Cin/G*kh*kw, n*OH*OW]
//     A whole chunk of the batch goes through one GEMM (large N, threaded inside gemm_f32) rather
//     than one small GEMM per image. The chunk size depends only on the shapes, and nothing is
//     split along a reduction, so results are bit-identical for any thread count.
//   Both sum the products of one output in the same order (input channel, kernel row, kernel
//   column), then add the bias, so they differ only by the GEMM's rounding (gemm.h bound, with
//   K = Cin/G*kh*kw).
//   - conv2d_f32_backward: recomputes im2col instead of keeping it from the forward pass, then
//     dW = dY * col^T, dcol = W^T * dY, and col2im scatters dcol back to dX.
#pragma once

#include "kernels/conv_geometry.h"
#include "kernels/gemm.h"
#include "lowbit/workspace.h"

namespace lowbit::kernels {

// y [N, Cout, OH, OW] = act(conv(x, w) + bias); bias may be null.
void conv2d_f32_ref(const ConvGeometry& g, const float* x, const float* w, const float* bias, Activation act, float* y);
// The im2col columns and the GEMM's output come from `workspace` (the executor's scratch).
void conv2d_f32_im2col(const ConvGeometry& g, const float* x, const float* w, const float* bias, Activation act, float* y,
                       Workspace& workspace);
// Gradients from dy (and y, through a fused ReLU when `relu`): dx [N, Cin, H, W], dw like w,
// db [Cout]; each may be null (not computed), each is overwritten. Scratch from `workspace`.
void conv2d_f32_backward(const ConvGeometry& g, const float* x, const float* w, const float* y, const float* dy, bool relu,
                         float* dx, float* dw, float* db, Workspace& workspace);

}  // namespace lowbit::kernels
