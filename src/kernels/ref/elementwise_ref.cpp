#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/paths.h"

namespace lowbit::kernels {

void minmax_f32_ref(int64_t n, const float* x, float* min, float* max) {
  float lo = NAN, hi = NAN;
  for (int64_t i = 0; i < n; ++i) {
    if (!(x[i] >= lo)) lo = std::isnan(x[i]) ? lo : x[i];  // also replaces the initial NaN
    if (!(x[i] <= hi)) hi = std::isnan(x[i]) ? hi : x[i];
  }
  *min = lo, *max = hi;
}

void adam_update_f32_ref(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c) {
  const float one_minus_b1 = 1.0f - c.beta1, one_minus_b2 = 1.0f - c.beta2;
  for (int64_t i = 0; i < n; ++i) {
    m[i] = c.beta1 * m[i] + one_minus_b1 * g[i];
    v[i] = c.beta2 * v[i] + one_minus_b2 * g[i] * g[i];
    w[i] -= c.step * m[i] / (std::sqrt(v[i]) * c.inv_root + c.epsilon);
  }
}

void fake_quantize_f32_ref(int64_t n, const float* x, const FakeQuantGrid& g, float* y) {
  const float zp = static_cast<float>(g.zero_point), lo = static_cast<float>(g.qmin), hi = static_cast<float>(g.qmax);
  for (int64_t i = 0; i < n; ++i) {
    const float q = std::fmin(std::fmax(std::nearbyint(x[i] / g.scale) + zp, lo), hi);
    y[i] = g.scale * (q - zp);
  }
}

double fake_quantize_backward_f32_ref(int64_t n, const float* x, const float* dy, const FakeQuantGrid& g, float* dx,
                                      bool scale_gradient) {
  const float zp = static_cast<float>(g.zero_point), lo = static_cast<float>(g.qmin), hi = static_cast<float>(g.qmax);
  double dscale = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const float t = x[i] / g.scale, r = std::nearbyint(t), q = r + zp;
    const bool inside = q >= lo && q <= hi;
    if (dx) dx[i] = inside ? dy[i] : 0.0f;
    if (!scale_gradient) continue;
    const float d = inside ? r - t : (q < lo ? lo - zp : hi - zp);
    dscale += static_cast<double>(dy[i] * d);
  }
  return dscale;
}

}  // namespace lowbit::kernels
