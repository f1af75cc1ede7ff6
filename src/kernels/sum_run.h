// Internal: the fixed-order float sums that pooling (kernels/pool.h), batch normalization
// (kernels/batchnorm_f32.h) and layer normalization (kernels/layer_norm_f32.h) share, so that
// GlobalAveragePool and the statistics add in the same way.
#pragma once

#include <cstdint>

namespace lowbit::kernels {

// sum(x[0..n)) in eight float lanes (vectorizable, one fixed order), the lanes added in double.
// The order depends only on n: the same bits on every path and for any thread count.
inline double sum_run(const float* __restrict x, int64_t n) {
  float lanes[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += x[q + l];
  for (; q < n; ++q) lanes[q % 8] += x[q];
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// sum((x - center)^2) over x[0..n) in the same eight float lanes, the lanes added in double.
inline double squares_run(const float* __restrict x, float center, int64_t n) {
  float lanes[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int l = 0; l < 8; ++l) {
      const float d = x[q + l] - center;
      lanes[l] += d * d;
    }
  for (; q < n; ++q) {
    const float d = x[q] - center;
    lanes[q % 8] += d * d;
  }
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

}  // namespace lowbit::kernels
