#include <cmath>

#include "lowbit/elementwise.h"

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

}  // namespace lowbit::kernels
