// Internal: the fixed-order float sum that pooling (kernels/pool.h) and batch normalization
// (kernels/batchnorm_f32.h) share, so that GlobalAveragePool and the batch statistics add in the
// same way.
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

}  // namespace lowbit::kernels
