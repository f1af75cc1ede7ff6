// AVX2 element-wise kernels: the reference's operations, 8 lanes at a time, same order.
#include <immintrin.h>

#include <cmath>

#include "lowbit/elementwise.h"

namespace lowbit::kernels {

void minmax_f32_avx2(int64_t n, const float* x, float* min, float* max) {
  if (n < 16) return minmax_f32_ref(n, x, min, max);
  // min_ps(v, acc) returns acc when v is NaN: NaNs never enter the accumulators once they hold a
  // number; lanes still NaN at the end (all their values NaN) are dropped by the final reduction.
  __m256 lo = _mm256_set1_ps(NAN), hi = _mm256_set1_ps(NAN);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 lo_nan = _mm256_cmp_ps(lo, lo, _CMP_UNORD_Q), hi_nan = _mm256_cmp_ps(hi, hi, _CMP_UNORD_Q);
    lo = _mm256_blendv_ps(_mm256_min_ps(v, lo), v, lo_nan);
    hi = _mm256_blendv_ps(_mm256_max_ps(v, hi), v, hi_nan);
  }
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, lo);
  _mm256_store_ps(h, hi);
  float rl, rh, tl, th;
  minmax_f32_ref(8, l, &rl, &tl);
  minmax_f32_ref(8, h, &th, &rh);
  minmax_f32_ref(n - i, x + i, &tl, &th);
  *min = (n - i == 0 || std::isnan(tl) || rl <= tl) ? rl : tl;
  *max = (n - i == 0 || std::isnan(th) || rh >= th) ? rh : th;
  if (std::isnan(*min)) *min = tl;
  if (std::isnan(*max)) *max = th;
}

void adam_update_f32_avx2(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c) {
  const __m256 b1 = _mm256_set1_ps(c.beta1), b2 = _mm256_set1_ps(c.beta2);
  const __m256 one_minus_b1 = _mm256_set1_ps(1.0f - c.beta1), one_minus_b2 = _mm256_set1_ps(1.0f - c.beta2);
  const __m256 step = _mm256_set1_ps(c.step), inv_root = _mm256_set1_ps(c.inv_root), eps = _mm256_set1_ps(c.epsilon);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 gi = _mm256_loadu_ps(g + i);
    const __m256 mi = _mm256_add_ps(_mm256_mul_ps(b1, _mm256_loadu_ps(m + i)), _mm256_mul_ps(one_minus_b1, gi));
    const __m256 vi = _mm256_add_ps(_mm256_mul_ps(b2, _mm256_loadu_ps(v + i)), _mm256_mul_ps(_mm256_mul_ps(one_minus_b2, gi), gi));
    _mm256_storeu_ps(m + i, mi);
    _mm256_storeu_ps(v + i, vi);
    const __m256 denominator = _mm256_add_ps(_mm256_mul_ps(_mm256_sqrt_ps(vi), inv_root), eps);
    _mm256_storeu_ps(w + i, _mm256_sub_ps(_mm256_loadu_ps(w + i), _mm256_div_ps(_mm256_mul_ps(step, mi), denominator)));
  }
  adam_update_f32_ref(n - i, w + i, g + i, m + i, v + i, c);
}

}  // namespace lowbit::kernels
