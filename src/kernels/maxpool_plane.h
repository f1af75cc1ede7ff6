// Internal: the forward max pooling of whole NCHW planes, as source included by kernels/pool.cpp
// (portable build) and kernels/x86/pool_avx2.cpp (the same loops compiled for AVX2, plus the
// 2x2 stride-2 step written with intrinsics): one definition, two instruction sets.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/conv_geometry.h"

namespace lowbit::kernels {
namespace {  // one copy per including file: each is compiled with its own flags

// The larger of a and b, a on ties and when b is NaN (as for_each_window_max's comparison).
template <typename T> inline T max_of(T a, T b) { return b > a ? b : a; }

// The 2x2 stride-2 windows of one row of outputs, straight from its two input rows:
// out[o] = max(max(first[2o], second[2o]), max(first[2o+1], second[2o+1])), o < n.
struct ScalarPool2x2 {
  template <typename T> void operator()(const T* __restrict first, const T* __restrict second, T* __restrict out, int64_t n) const {
    for (int64_t o = 0; o < n; ++o)
      out[o] = max_of(max_of(first[2 * o], second[2 * o]), max_of(first[2 * o + 1], second[2 * o + 1]));
  }
};

// Forward max pooling of one plane, a row of windows at a time: 2x2 stride-2 windows (the common
// case, two whole input rows inside the plane) by `pool2x2`; any other window as the element-wise
// maximum of its input rows (contiguous: the compiler vectorizes it) into `row` (in_w values),
// then the maximum of each window's columns of that row. The maximum is the one
// for_each_window_max finds (only the order of comparisons differs, which can change nothing but
// the sign of a zero in f32).
template <typename T, typename Pool2x2>
void maxpool_plane(const PoolGeometry& g, const T* __restrict plane, T* __restrict dst, T* __restrict row, const Pool2x2& pool2x2) {
  // Locals, not g's fields: with T = int8_t every store could alias them otherwise.
  const int64_t in_w = g.in_w, in_h = g.in_h, out_w = g.out_w, out_h = g.out_h;
  const int64_t kh = g.kernel_h, kw = g.kernel_w, sh = g.stride_h, sw = g.stride_w, pt = g.pad_top, pl = g.pad_left;
  const bool two_by_two = kh == 2 && kw == 2 && sh == 2 && sw == 2 && pl == 0 && 2 * out_w <= in_w;
  for (int64_t oy = 0; oy < out_h; ++oy) {
    const int64_t y0 = oy * sh - pt;
    const int64_t y_lo = std::max<int64_t>(y0, 0), y_hi = std::min(y0 + kh, in_h);
    const T* __restrict first = plane + y_lo * in_w;
    T* __restrict out = dst + oy * out_w;
    if (two_by_two && y_hi - y_lo == 2) {
      pool2x2(first, first + in_w, out, out_w);
      continue;
    }
    if (y_hi - y_lo == 1) {
      std::copy_n(first, in_w, row);
    } else {
      const T* __restrict second = first + in_w;
      for (int64_t ix = 0; ix < in_w; ++ix) row[ix] = max_of(first[ix], second[ix]);
      for (int64_t iy = y_lo + 2; iy < y_hi; ++iy) {
        const T* __restrict r = plane + iy * in_w;
        for (int64_t ix = 0; ix < in_w; ++ix) row[ix] = max_of(row[ix], r[ix]);
      }
    }
    for (int64_t ox = 0; ox < out_w; ++ox) {
      const int64_t x0 = ox * sw - pl;
      const int64_t x_lo = std::max<int64_t>(x0, 0), x_hi = std::min(x0 + kw, in_w);
      T best = row[x_lo];
      for (int64_t ix = x_lo + 1; ix < x_hi; ++ix) best = max_of(best, row[ix]);
      out[ox] = best;
    }
  }
}

// Planes [p0, p1) of y [N, C, OH, OW] from x [N, C, H, W].
template <typename T, typename Pool2x2 = ScalarPool2x2>
void maxpool_planes(const PoolGeometry& g, const T* x, T* y, int64_t p0, int64_t p1, const Pool2x2& pool2x2 = {}) {
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  std::vector<T> row(static_cast<size_t>(g.in_w));
  for (int64_t p = p0; p < p1; ++p) maxpool_plane(g, x + p * in_plane, y + p * out_plane, row.data(), pool2x2);
}

}  // namespace
}  // namespace lowbit::kernels
