// Max, average and global average pooling over NCHW planes (kernels/pool.h).
#include "kernels/pool.h"

#include <algorithm>

#include "kernels/grain.h"
#include "kernels/maxpool_plane.h"
#include "kernels/paths.h"
#include "kernels/sum_run.h"
#include "lowbit/runtime_config.h"

namespace lowbit::kernels {
namespace {

// Calls visit(output index, y_lo, y_hi, x_lo, x_hi) for every window of one plane, its rows
// [y_lo, y_hi) and columns [x_lo, x_hi) clipped to the input once per row and column of windows.
template <typename Visit> void for_each_window(const PoolGeometry& g, Visit&& visit) {
  for (int64_t oy = 0; oy < g.out_h; ++oy) {
    const int64_t y0 = oy * g.stride_h - g.pad_top;
    const int64_t y_lo = std::max<int64_t>(y0, 0), y_hi = std::min(y0 + g.kernel_h, g.in_h);
    for (int64_t ox = 0; ox < g.out_w; ++ox) {
      const int64_t x0 = ox * g.stride_w - g.pad_left;
      const int64_t x_lo = std::max<int64_t>(x0, 0), x_hi = std::min(x0 + g.kernel_w, g.in_w);
      visit(oy * g.out_w + ox, y_lo, y_hi, x_lo, x_hi);
    }
  }
}

// Calls visit(output index, input index, value) with the maximum of every window of one plane,
// the first in row-major order on ties; the running maximum stays in a register.
template <typename T, typename Visit> void for_each_window_max(const PoolGeometry& g, const T* plane, Visit&& visit) {
  for_each_window(g, [&](int64_t o, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi) {
    int64_t best = y_lo * g.in_w + x_lo;
    T best_value = plane[best];
    for (int64_t iy = y_lo; iy < y_hi; ++iy)
      for (int64_t ix = x_lo; ix < x_hi; ++ix) {
        // Branch-free (conditional moves): on real data the comparison is a coin flip.
        const T v = plane[iy * g.in_w + ix];
        const bool greater = v > best_value;
        best = greater ? iy * g.in_w + ix : best;
        best_value = greater ? v : best_value;
      }
    visit(o, best, best_value);
  });
}

// Planes [p0, p1) of the forward max pooling: maxpool_planes, the AVX2 build of the same source
// (kernels/x86/pool_avx2.cpp) where the CPU has it.
template <typename T> void maxpool2d(const PoolGeometry& g, const T* x, T* y) {
  parallel_for(g.batch * g.channels, plane_grain(g.in_h * g.in_w), [&](int64_t p0, int64_t p1) {
#if defined(LOWBIT_HAVE_X86)
    if (active_isa() >= Isa::Avx2) return maxpool_planes_avx2(g, x, y, p0, p1);
#endif
    maxpool_planes(g, x, y, p0, p1);
  });
}

// Calls visit(output index, row range, column range, 1 / divisor) for every window of one plane:
// the window clipped to the input; the divisor counts its input elements, or the whole kernel with
// count_include_pad (windows never extend past the padding, so that is kh*kw).
template <typename Visit>
void for_each_average_window(const PoolGeometry& g, bool count_include_pad, Visit&& visit) {
  for_each_window(g, [&](int64_t o, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi) {
    const int64_t divisor = count_include_pad ? g.kernel_h * g.kernel_w : (y_hi - y_lo) * (x_hi - x_lo);
    visit(o, y_lo, y_hi, x_lo, x_hi, 1.0f / static_cast<float>(divisor));
  });
}

}  // namespace

void maxpool2d_f32(const PoolGeometry& g, const float* x, float* y) { maxpool2d(g, x, y); }
void maxpool2d_s8(const PoolGeometry& g, const int8_t* x, int8_t* y) { maxpool2d(g, x, y); }

void maxpool2d_backward_f32(const PoolGeometry& g, const float* x, const float* dy, float* dx) {
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  parallel_for(g.batch * g.channels, plane_grain(in_plane), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* plane = x + p * in_plane;
      const float* src = dy + p * out_plane;
      float* dst = dx + p * in_plane;
      std::fill_n(dst, in_plane, 0.0f);
      for_each_window_max(g, plane, [dst, src](int64_t o, int64_t i, float) { dst[i] += src[o]; });
    }
  });
}

void avgpool2d_f32(const PoolGeometry& g, bool count_include_pad, const float* x, float* y) {
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  parallel_for(g.batch * g.channels, plane_grain(in_plane), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* plane = x + p * in_plane;
      float* dst = y + p * out_plane;
      for_each_average_window(g, count_include_pad,
                              [&](int64_t o, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi, float inv) {
                                float sum = 0.0f;
                                for (int64_t iy = y_lo; iy < y_hi; ++iy)
                                  for (int64_t ix = x_lo; ix < x_hi; ++ix) sum += plane[iy * g.in_w + ix];
                                dst[o] = sum * inv;
                              });
    }
  });
}

void avgpool2d_backward_f32(const PoolGeometry& g, bool count_include_pad, const float* dy, float* dx) {
  const int64_t in_plane = g.in_h * g.in_w, out_plane = g.out_h * g.out_w;
  parallel_for(g.batch * g.channels, plane_grain(in_plane), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const float* src = dy + p * out_plane;
      float* dst = dx + p * in_plane;
      std::fill_n(dst, in_plane, 0.0f);
      for_each_average_window(g, count_include_pad,
                              [&](int64_t o, int64_t y_lo, int64_t y_hi, int64_t x_lo, int64_t x_hi, float inv) {
                                const float share = src[o] * inv;
                                for (int64_t iy = y_lo; iy < y_hi; ++iy)
                                  for (int64_t ix = x_lo; ix < x_hi; ++ix) dst[iy * g.in_w + ix] += share;
                              });
    }
  });
}

void global_avgpool_f32(int64_t planes, int64_t plane, const float* x, float* y) {
  parallel_for(planes, plane_grain(plane), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) y[p] = static_cast<float>(sum_run(x + p * plane, plane) / static_cast<double>(plane));
  });
}

void global_avgpool_backward_f32(int64_t planes, int64_t plane, const float* dy, float* dx) {
  const float inv = 1.0f / static_cast<float>(plane);
  parallel_for(planes, plane_grain(plane), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) std::fill_n(dx + p * plane, plane, dy[p] * inv);
  });
}

}  // namespace lowbit::kernels
