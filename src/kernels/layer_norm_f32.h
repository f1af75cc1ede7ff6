// Internal: layer normalization of float rows (the LayerNormalization op's compute; the op, its
// attributes and shapes are in graph/ops/layer_norm.cpp). Each row of n values:
//   mean = sum(x) / n,  var = sum((x - mean)^2) / n,  inv = 1 / sqrt(var + epsilon)
//   y = (x - mean) * (inv * scale) + bias
// The sums run in eight float lanes, the lanes added in double (kernels/sum_run.h); mean and inv
// are rounded to float and the rest is float arithmetic (vectorizable). Each row is one task in a
// fixed order, so results do not depend on the thread count. Scale and bias hold n values, or one
// (`scale_step` / `bias_step` 0); bias may be null.
// The backward pass, with xh = (x - mean) * inv and g = dy * scale:
//   dx = inv * (g - mean(g) - xh * mean(g * xh)),  dscale += dy * xh,  dbias += dy  (per column)
// where dscale / dbias accumulate over the rows given, in order (call once per block of rows, in
// order, for a deterministic result).
//
//   kernels::layer_norm_rows_f32(rows, n, x, scale, 1, bias, 1, 1e-5f, y, nullptr, nullptr);
#pragma once

#include <cstdint>

namespace lowbit::kernels {

// Rows [rows, n] of x to y (may not alias); mean_out / inv_out (length rows) may be null.
void layer_norm_rows_f32(int64_t rows, int64_t n, const float* x, const float* scale, int64_t scale_step, const float* bias,
                         int64_t bias_step, float epsilon, float* y, float* mean_out, float* inv_out);

// The row statistics alone (mean and inv, as layer_norm_rows_f32 computes them).
void layer_norm_statistics_f32(int64_t rows, int64_t n, const float* x, float epsilon, float* mean, float* inv);

// dx for rows [rows, n] (dx may be null), and dy * xh and dy added into dscale_sum / dbias_sum
// (length n, double; each may be null). mean / inv from layer_norm_statistics_f32.
void layer_norm_backward_rows_f32(int64_t rows, int64_t n, const float* x, const float* dy, const float* scale,
                                  int64_t scale_step, const float* mean, const float* inv, float* dx, double* dscale_sum,
                                  double* dbias_sum);

}  // namespace lowbit::kernels
