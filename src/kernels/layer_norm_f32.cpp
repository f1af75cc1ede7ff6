#include "kernels/layer_norm_f32.h"

#include <cmath>

#include "kernels/sum_run.h"

namespace lowbit::kernels {
namespace {

void row_statistics(const float* x, int64_t n, float epsilon, float* mean, float* inv) {
  const float m = static_cast<float>(sum_run(x, n) / static_cast<double>(n));
  const double var = squares_run(x, m, n) / static_cast<double>(n);
  *mean = m;
  *inv = static_cast<float>(1.0 / std::sqrt(var + static_cast<double>(epsilon)));
}

}  // namespace

void layer_norm_statistics_f32(int64_t rows, int64_t n, const float* x, float epsilon, float* mean, float* inv) {
  for (int64_t r = 0; r < rows; ++r) row_statistics(x + r * n, n, epsilon, mean + r, inv + r);
}

void layer_norm_rows_f32(int64_t rows, int64_t n, const float* x, const float* scale, int64_t scale_step, const float* bias,
                         int64_t bias_step, float epsilon, float* y, float* mean_out, float* inv_out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict xr = x + r * n;
    float* __restrict yr = y + r * n;
    float mean, inv;
    row_statistics(xr, n, epsilon, &mean, &inv);
    if (scale_step && bias && bias_step) {  // the common case, vectorizable
      for (int64_t i = 0; i < n; ++i) yr[i] = (xr[i] - mean) * (inv * scale[i]) + bias[i];
    } else {
      for (int64_t i = 0; i < n; ++i) {
        const float shifted = (xr[i] - mean) * (inv * scale[i * scale_step]);
        yr[i] = bias ? shifted + bias[i * bias_step] : shifted;
      }
    }
    if (mean_out) mean_out[r] = mean;
    if (inv_out) inv_out[r] = inv;
  }
}

void layer_norm_backward_rows_f32(int64_t rows, int64_t n, const float* x, const float* dy, const float* scale,
                                  int64_t scale_step, const float* mean, const float* inv, float* dx, double* dscale_sum,
                                  double* dbias_sum) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* __restrict xr = x + r * n;
    const float* __restrict dyr = dy + r * n;
    const float m = mean[r], s = inv[r];
    if (dx) {
      double g_sum = 0, gx_sum = 0;
      for (int64_t i = 0; i < n; ++i) {
        const double g = static_cast<double>(dyr[i]) * scale[i * scale_step];
        g_sum += g;
        gx_sum += g * ((xr[i] - m) * s);
      }
      const float g_mean = static_cast<float>(g_sum / static_cast<double>(n));
      const float gx_mean = static_cast<float>(gx_sum / static_cast<double>(n));
      float* __restrict dxr = dx + r * n;
      for (int64_t i = 0; i < n; ++i) {
        const float g = dyr[i] * scale[i * scale_step];
        dxr[i] = s * (g - g_mean - ((xr[i] - m) * s) * gx_mean);
      }
    }
    if (dscale_sum)
      for (int64_t i = 0; i < n; ++i) dscale_sum[i] += static_cast<double>(dyr[i]) * ((xr[i] - m) * s);
    if (dbias_sum)
      for (int64_t i = 0; i < n; ++i) dbias_sum[i] += dyr[i];
  }
}

}  // namespace lowbit::kernels
