// Float convolution through im2col and the GEMM, forward and backward (kernels/conv_f32.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "kernels/conv_f32.h"
#include "kernels/grain.h"
#include "lowbit/runtime_config.h"

namespace lowbit::kernels {
namespace {

// Images per im2col chunk: the column buffer stays under ~16 MiB (depends only on the shapes).
int64_t images_per_chunk(const ConvGeometry& g) {
  const int64_t per_image = g.in_channels * g.kernel_h * g.kernel_w * g.out_spatial();
  return std::clamp<int64_t>((int64_t{1} << 22) / std::max<int64_t>(per_image, 1), 1, std::max<int64_t>(g.batch, 1));
}

// The output columns ox whose input column ix = ox*sw - pad_left + kj*dw lies inside [0, in_w):
// [lo, hi), possibly empty.
void valid_range(int64_t offset, int64_t stride, int64_t in, int64_t out, int64_t& lo, int64_t& hi) {
  // ix = ox*stride + offset
  lo = offset >= 0 ? 0 : (-offset + stride - 1) / stride;
  hi = in - 1 - offset < 0 ? 0 : (in - 1 - offset) / stride + 1;
  lo = std::min(lo, out);
  hi = std::clamp(hi, lo, out);
}

// col[(c*kh + ki)*kw + kj][i*OH*OW + oy*OW + ox] = x[i, c, iy, ix] (zero outside), for the `count`
// images starting at x. Rows for all groups: group g's rows are the contiguous block g*K..(g+1)*K.
void im2col(const ConvGeometry& g, const float* x, int64_t count, float* col) {
  const int64_t kk = g.kernel_h * g.kernel_w, rows = g.in_channels * kk, cols = count * g.out_spatial();
  parallel_for(rows, plane_grain(cols), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r / kk, ki = r % kk / g.kernel_w, kj = r % g.kernel_w;
      int64_t lo, hi;
      const int64_t x_offset = kj * g.dilation_w - g.pad_left;
      valid_range(x_offset, g.stride_w, g.in_w, g.out_w, lo, hi);
      float* dst = col + r * cols;
      for (int64_t i = 0; i < count; ++i) {
        const float* plane = x + (i * g.in_channels + c) * g.in_spatial();
        for (int64_t oy = 0; oy < g.out_h; ++oy, dst += g.out_w) {
          const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
          if (iy < 0 || iy >= g.in_h || lo == hi) {
            std::fill(dst, dst + g.out_w, 0.0f);
            continue;
          }
          const float* src = plane + iy * g.in_w + lo * g.stride_w + x_offset;  // input of column lo
          std::fill(dst, dst + lo, 0.0f);
          if (g.stride_w == 1)
            std::memcpy(dst + lo, src, static_cast<size_t>(hi - lo) * sizeof(float));
          else
            for (int64_t j = 0; j < hi - lo; ++j) dst[lo + j] = src[j * g.stride_w];
          std::fill(dst + hi, dst + g.out_w, 0.0f);
        }
      }
    }
  });
}

// The adjoint of im2col: dx[i, c, iy, ix] = sum of the col entries that im2col copied from it.
// dx (the `count` images) is overwritten. Parallel over input channels: each owns its rows of col
// and its planes of dx, so the additions per element happen in one fixed order.
void col2im(const ConvGeometry& g, const float* col, int64_t count, float* dx) {
  const int64_t kk = g.kernel_h * g.kernel_w, cols = count * g.out_spatial();
  parallel_for(g.in_channels, plane_grain(kk * cols), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      for (int64_t i = 0; i < count; ++i) std::fill_n(dx + (i * g.in_channels + c) * g.in_spatial(), g.in_spatial(), 0.0f);
      for (int64_t r = c * kk; r < (c + 1) * kk; ++r) {
        const int64_t ki = r % kk / g.kernel_w, kj = r % g.kernel_w;
        int64_t lo, hi;
        const int64_t x_offset = kj * g.dilation_w - g.pad_left;
        valid_range(x_offset, g.stride_w, g.in_w, g.out_w, lo, hi);
        const float* src = col + r * cols;
        for (int64_t i = 0; i < count; ++i) {
          float* plane = dx + (i * g.in_channels + c) * g.in_spatial();
          for (int64_t oy = 0; oy < g.out_h; ++oy, src += g.out_w) {
            const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
            if (iy < 0 || iy >= g.in_h || lo == hi) continue;
            float* dst = plane + iy * g.in_w + lo * g.stride_w + x_offset;
            for (int64_t j = 0; j < hi - lo; ++j) dst[j * g.stride_w] += src[lo + j];
          }
        }
      }
    }
  });
}

// dst = src + bias, through the ReLU if asked (restrict: lets the compiler vectorize).
void add_bias(const float* __restrict src, float bias, bool relu, float* __restrict dst, int64_t n) {
  if (relu)
    for (int64_t q = 0; q < n; ++q) dst[q] = std::max(src[q] + bias, 0.0f);
  else
    for (int64_t q = 0; q < n; ++q) dst[q] = src[q] + bias;
}

// dst = dy where the fused ReLU's output y is positive, else 0.
void relu_mask(const float* __restrict y, const float* __restrict dy, float* __restrict dst, int64_t n) {
  for (int64_t q = 0; q < n; ++q) {
    const float g = dy[q];  // loaded unconditionally, so the select vectorizes
    dst[q] = y[q] > 0.0f ? g : 0.0f;
  }
}

}  // namespace

void conv2d_f32_im2col(const ConvGeometry& g, const float* x, const float* w, const float* bias, Activation act,
                       float* y, Workspace& workspace) {
  const int64_t chunk = images_per_chunk(g), spatial = g.out_spatial();
  const int64_t k = g.patch(), mg = g.group_out();
  const int64_t most_cols = std::min(chunk, g.batch) * spatial;  // the largest chunk's
  float* col = workspace.take<float>(static_cast<size_t>(g.in_channels * g.kernel_h * g.kernel_w * most_cols));
  float* out = workspace.take<float>(static_cast<size_t>(g.out_channels * most_cols));
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, g.batch - n0), cols = count * spatial;
    im2col(g, x + n0 * g.in_channels * g.in_spatial(), count, col);
    for (int64_t grp = 0; grp < g.groups; ++grp)
      gemm_f32(Transpose::No, Transpose::No, mg, cols, k, 1.0f, w + grp * mg * k, k, col + grp * k * cols, cols,
               0.0f, out + grp * mg * cols, cols);
    // [Cout, count*OH*OW] -> NCHW, adding the bias and applying the activation on the way.
    parallel_for(count * g.out_channels, plane_grain(spatial), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = p / g.out_channels, m = p % g.out_channels;
        const float* src = out + m * cols + i * spatial;
        float* dst = y + ((n0 + i) * g.out_channels + m) * spatial;
        add_bias(src, bias ? bias[m] : 0.0f, act == Activation::Relu, dst, spatial);
      }
    });
  }
}

void conv2d_f32_backward(const ConvGeometry& g, const float* x, const float* w, const float* y, const float* dy, bool relu,
                         float* dx, float* dw, float* db, Workspace& workspace) {
  const int64_t chunk = images_per_chunk(g), spatial = g.out_spatial();
  const int64_t k = g.patch(), mg = g.group_out();
  std::vector<double> bias_sums(static_cast<size_t>(db ? g.out_channels : 0), 0.0);
  const int64_t most = std::min(chunk, g.batch), most_cols = most * spatial;  // the largest chunk's
  float* dyc = workspace.take<float>(static_cast<size_t>(g.out_channels * most_cols));
  float* plane_sums = workspace.take<float>(static_cast<size_t>(most * g.out_channels));
  float* col = workspace.take<float>(static_cast<size_t>(g.in_channels * g.kernel_h * g.kernel_w * most_cols));
  float* weight_t = workspace.take<float>(static_cast<size_t>(dw && k < mg ? g.groups * k * mg : 0));
  for (int64_t n0 = 0; n0 < g.batch; n0 += chunk) {
    const int64_t count = std::min(chunk, g.batch - n0), cols = count * spatial;
    // dY of the chunk as [Cout, count*OH*OW], zero where the fused ReLU clipped, and the sum of
    // each plane for db (eight independent partial sums: vectorizable, same order every time).
    parallel_for(count * g.out_channels, plane_grain(spatial), [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        const int64_t i = p / g.out_channels, m = p % g.out_channels;
        const float* src = dy + ((n0 + i) * g.out_channels + m) * spatial;
        const float* yp = y + ((n0 + i) * g.out_channels + m) * spatial;
        float* dst = dyc + m * cols + i * spatial;
        if (relu)
          relu_mask(yp, src, dst, spatial);
        else
          std::memcpy(dst, src, static_cast<size_t>(spatial) * sizeof(float));
        if (db) {
          float lanes[8] = {};
          int64_t q = 0;
          for (; q + 8 <= spatial; q += 8)
            for (int l = 0; l < 8; ++l) lanes[l] += dst[q + l];
          for (; q < spatial; ++q) lanes[q % 8] += dst[q];
          double sum = 0;
          for (float v : lanes) sum += v;
          plane_sums[p] = static_cast<float>(sum);
        }
      }
    });
    if (db)
      for (int64_t p = 0; p < count * g.out_channels; ++p) bias_sums[p % g.out_channels] += plane_sums[p];
    if (!dw && !dx) continue;
    if (dw) {  // dW_g[Cout/G, K] (+)= dY_g * col_g^T, accumulated over chunks
      im2col(g, x + n0 * g.in_channels * g.in_spatial(), count, col);
      // With K < Cout/G (e.g. a first layer on one channel) the transposed product
      // dW_g^T[K, Cout/G] = col_g * dY_g^T suits the GEMM's tiles better; transposed back at the end.
      const bool transposed = k < mg;
      for (int64_t grp = 0; grp < g.groups; ++grp)
        if (transposed)
          gemm_f32(Transpose::No, Transpose::Yes, k, mg, cols, 1.0f, col + grp * k * cols, cols,
                   dyc + grp * mg * cols, cols, n0 == 0 ? 0.0f : 1.0f, weight_t + grp * k * mg, mg);
        else
          gemm_f32(Transpose::No, Transpose::Yes, mg, k, cols, 1.0f, dyc + grp * mg * cols, cols,
                   col + grp * k * cols, cols, n0 == 0 ? 0.0f : 1.0f, dw + grp * mg * k, k);
      if (transposed && n0 + count == g.batch)
        for (int64_t grp = 0; grp < g.groups; ++grp)
          for (int64_t m = 0; m < mg; ++m)
            for (int64_t j = 0; j < k; ++j)
              dw[(grp * mg + m) * k + j] = weight_t[(grp * k + j) * mg + m];
    }
    if (dx) {  // dcol_g[K, cols] = W_g^T * dY_g, then scattered back to the images
      for (int64_t grp = 0; grp < g.groups; ++grp)
        gemm_f32(Transpose::Yes, Transpose::No, k, cols, mg, 1.0f, w + grp * mg * k, k, dyc + grp * mg * cols, cols,
                 0.0f, col + grp * k * cols, cols);
      col2im(g, col, count, dx + n0 * g.in_channels * g.in_spatial());
    }
  }
  if (db)
    for (int64_t m = 0; m < g.out_channels; ++m) db[m] = static_cast<float>(bias_sums[m]);
  if (dw && g.batch == 0) std::fill_n(dw, g.out_channels * g.patch(), 0.0f);
}

}  // namespace lowbit::kernels
