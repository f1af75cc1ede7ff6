// Batch normalization, forward and backward (kernels/batchnorm_f32.h).
#include "kernels/batchnorm_f32.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/grain.h"
#include "kernels/sum_run.h"
#include "lowbit/runtime_config.h"

namespace lowbit::kernels {
namespace {

// sum(dy * (x - center)) over a run, as sum_run (sum((x - center)^2) is squares_run, sum_run.h).
double sum_product_deviation(const float* __restrict dy, const float* __restrict x, float center, int64_t n) {
  float lanes[8] = {};
  int64_t q = 0;
  for (; q + 8 <= n; q += 8)
    for (int l = 0; l < 8; ++l) lanes[l] += dy[q + l] * (x[q + l] - center);
  for (; q < n; ++q) lanes[q % 8] += dy[q] * (x[q] - center);
  double sum = 0;
  for (float v : lanes) sum += v;
  return sum;
}

// dst = src * a + b (two roundings: -ffp-contract=off keeps it the same on every path).
void scale_shift(const float* __restrict src, float a, float b, float* __restrict dst, int64_t n) {
  for (int64_t q = 0; q < n; ++q) dst[q] = src[q] * a + b;
}

// The mean and biased variance of every channel of x: two passes (mean, then squared deviations
// from the float mean), each channel in one thread.
void batch_statistics(const NormGeometry& g, const float* x, std::vector<float>& mean, std::vector<double>& variance) {
  mean.assign(static_cast<size_t>(g.channels), 0.0f);
  variance.assign(static_cast<size_t>(g.channels), 0.0);
  const double count = static_cast<double>(g.per_channel());
  parallel_for(g.channels, plane_grain(g.per_channel()), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum = 0;
      for (int64_t n = 0; n < g.batch; ++n) sum += sum_run(x + g.plane(n, c), g.spatial);
      const float m = static_cast<float>(sum / count);
      double squares = 0;
      for (int64_t n = 0; n < g.batch; ++n) squares += squares_run(x + g.plane(n, c), m, g.spatial);
      mean[c] = m;
      variance[c] = squares / count;
    }
  });
}

// y[n, c, ...] = x[n, c, ...] * a[c] + b[c], in parallel over planes.
void apply_per_channel(const NormGeometry& g, const float* x, const std::vector<float>& a, const std::vector<float>& b,
                       float* y) {
  parallel_for(g.batch * g.channels, plane_grain(g.spatial), [&](int64_t p0, int64_t p1) {
    for (int64_t p = p0; p < p1; ++p) {
      const int64_t c = p % g.channels;
      scale_shift(x + p * g.spatial, a[c], b[c], y + p * g.spatial, g.spatial);
    }
  });
}

}  // namespace

void batchnorm_inference_f32(const NormGeometry& g, const float* x, const float* scale, const float* bias,
                             const float* running_mean, const float* running_var, float epsilon, float* y) {
  std::vector<float> a(static_cast<size_t>(g.channels)), b(static_cast<size_t>(g.channels));
  for (int64_t c = 0; c < g.channels; ++c) {
    a[c] = static_cast<float>(scale[c] / std::sqrt(static_cast<double>(running_var[c]) + epsilon));
    b[c] = bias[c] - running_mean[c] * a[c];
  }
  apply_per_channel(g, x, a, b, y);
}

void batchnorm_training_f32(const NormGeometry& g, const float* x, const float* scale, const float* bias,
                            float* running_mean, float* running_var, float epsilon, float momentum, float* y) {
  if (g.per_channel() == 0) return;  // an empty batch has no statistics: nothing to update
  std::vector<float> mean;
  std::vector<double> variance;
  batch_statistics(g, x, mean, variance);
  const double m = static_cast<double>(g.per_channel());
  const double correction = m > 1 ? m / (m - 1) : 1.0;
  const double keep = momentum, take = 1.0 - keep;
  std::vector<float> a(static_cast<size_t>(g.channels)), b(static_cast<size_t>(g.channels));
  for (int64_t c = 0; c < g.channels; ++c) {
    a[c] = static_cast<float>(scale[c] / std::sqrt(variance[c] + epsilon));
    b[c] = bias[c] - mean[c] * a[c];
    running_mean[c] = static_cast<float>(keep * running_mean[c] + take * mean[c]);
    running_var[c] = static_cast<float>(keep * running_var[c] + take * variance[c] * correction);
  }
  apply_per_channel(g, x, a, b, y);
}

void batchnorm_backward_f32(const NormGeometry& g, const float* x, const float* scale, const float* dy, float epsilon,
                            float* dx, float* dscale, float* dbias) {
  if (g.per_channel() == 0) {
    if (dscale) std::fill_n(dscale, g.channels, 0.0f);
    if (dbias) std::fill_n(dbias, g.channels, 0.0f);
    return;
  }
  std::vector<float> mean;
  std::vector<double> variance;
  batch_statistics(g, x, mean, variance);
  const double m = static_cast<double>(g.per_channel());
  parallel_for(g.channels, plane_grain(2 * g.per_channel()), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      double sum_dy = 0, sum_dy_centered = 0;
      for (int64_t n = 0; n < g.batch; ++n) {
        sum_dy += sum_run(dy + g.plane(n, c), g.spatial);
        sum_dy_centered += sum_product_deviation(dy + g.plane(n, c), x + g.plane(n, c), mean[c], g.spatial);
      }
      const double inv_std = 1.0 / std::sqrt(variance[c] + epsilon);
      const double sum_dy_xhat = sum_dy_centered * inv_std;
      if (dbias) dbias[c] = static_cast<float>(sum_dy);
      if (dscale) dscale[c] = static_cast<float>(sum_dy_xhat);
      if (!dx) continue;
      // dx = k_dy * dy + k_x * (x - mean) + k_0
      const double k_dy = scale[c] * inv_std;
      const float a = static_cast<float>(k_dy);
      const float b = static_cast<float>(-k_dy * inv_std * sum_dy_xhat / m);
      const float k0 = static_cast<float>(-k_dy * sum_dy / m);
      const float center = mean[c];
      for (int64_t n = 0; n < g.batch; ++n) {
        const float* __restrict dyp = dy + g.plane(n, c);
        const float* __restrict xp = x + g.plane(n, c);
        float* __restrict dxp = dx + g.plane(n, c);
        for (int64_t q = 0; q < g.spatial; ++q) dxp[q] = a * dyp[q] + (b * (xp[q] - center) + k0);
      }
    }
  });
}

}  // namespace lowbit::kernels
