// AVX2 element-wise kernels: the reference's operations, 8 lanes at a time, same order.
#include <immintrin.h>

#include <cmath>

#include "lowbit/elementwise.h"

namespace lowbit::kernels {

void minmax_f32_avx2(int64_t n, const float* x, float* min, float* max) {
  if (n < 32) return minmax_f32_ref(n, x, min, max);
  // min_ps(v, acc) returns acc when v is NaN, so NaNs never enter accumulators that start at
  // +inf / -inf; four independent pairs keep the loop throughput-bound (one dependent min per
  // 32 values instead of a compare-blend chain per 8). Min and max do not depend on the order,
  // except that a result of zero may come out as -0 where the reference gives +0 or the reverse.
  __m256 lo[4], hi[4];
  for (int j = 0; j < 4; ++j) lo[j] = _mm256_set1_ps(INFINITY), hi[j] = _mm256_set1_ps(-INFINITY);
  int64_t i = 0;
  for (; i + 32 <= n; i += 32)
    for (int j = 0; j < 4; ++j) {
      const __m256 v = _mm256_loadu_ps(x + i + 8 * j);
      lo[j] = _mm256_min_ps(v, lo[j]);
      hi[j] = _mm256_max_ps(v, hi[j]);
    }
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    lo[0] = _mm256_min_ps(v, lo[0]);
    hi[0] = _mm256_max_ps(v, hi[0]);
  }
  const __m256 l4 = _mm256_min_ps(_mm256_min_ps(lo[0], lo[1]), _mm256_min_ps(lo[2], lo[3]));
  const __m256 h4 = _mm256_max_ps(_mm256_max_ps(hi[0], hi[1]), _mm256_max_ps(hi[2], hi[3]));
  alignas(32) float l[8], h[8];
  _mm256_store_ps(l, l4);
  _mm256_store_ps(h, h4);
  float rl = l[0], rh = h[0];
  for (int j = 1; j < 8; ++j) rl = std::min(rl, l[j]), rh = std::max(rh, h[j]);
  if (rl > rh) rl = rh = NAN;  // every vector value was NaN
  float tl = NAN, th = NAN;
  if (i < n) minmax_f32_ref(n - i, x + i, &tl, &th);
  *min = std::isnan(rl) || tl < rl ? tl : rl;
  *max = std::isnan(rh) || th > rh ? th : rh;
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

namespace {

// nearbyint(x / s) without a division in the common case. y = x * (1/s) is within about
// 2^-23 |x/s| of the correctly rounded quotient, so both round to the same integer unless a
// half-integer lies within that distance; such lanes (exact ties like x = 2.5 s included) are
// recomputed with the IEEE division the reference uses. The integer, and so every output, is
// identical to the reference's; `t` (the quotient, for LSQ's gradient) may differ by an ulp.
inline __m256 rounded_quotient(__m256 x, __m256 s, __m256 inv, __m256& t) {
  constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
  t = _mm256_mul_ps(x, inv);
  __m256 r = _mm256_round_ps(t, kNearest);
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 tie_distance = _mm256_and_ps(_mm256_sub_ps(_mm256_and_ps(_mm256_sub_ps(t, r), abs_mask), _mm256_set1_ps(0.5f)), abs_mask);
  const __m256 tolerance = _mm256_add_ps(_mm256_mul_ps(_mm256_and_ps(t, abs_mask), _mm256_set1_ps(0x1p-20f)), _mm256_set1_ps(0x1p-20f));
  const __m256 near_tie = _mm256_cmp_ps(tie_distance, tolerance, _CMP_LE_OQ);
  if (_mm256_movemask_ps(near_tie)) {
    const __m256 exact = _mm256_div_ps(x, s);
    t = _mm256_blendv_ps(t, exact, near_tie);
    r = _mm256_blendv_ps(r, _mm256_round_ps(exact, kNearest), near_tie);
  }
  return r;
}

}  // namespace

void fake_quantize_f32_avx2(int64_t n, const float* x, const FakeQuantGrid& g, float* y) {
  const __m256 s = _mm256_set1_ps(g.scale), inv = _mm256_set1_ps(1.0f / g.scale), zp = _mm256_set1_ps(static_cast<float>(g.zero_point));
  const __m256 lo = _mm256_set1_ps(static_cast<float>(g.qmin)), hi = _mm256_set1_ps(static_cast<float>(g.qmax));
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 t;
    const __m256 r = rounded_quotient(_mm256_loadu_ps(x + i), s, inv, t);
    const __m256 q = _mm256_min_ps(_mm256_max_ps(_mm256_add_ps(r, zp), lo), hi);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_sub_ps(q, zp)));
  }
  fake_quantize_f32_ref(n - i, x + i, g, y + i);
}

double fake_quantize_backward_f32_avx2(int64_t n, const float* x, const float* dy, const FakeQuantGrid& g, float* dx,
                                       bool scale_gradient) {
  const __m256 s = _mm256_set1_ps(g.scale), inv = _mm256_set1_ps(1.0f / g.scale), zp = _mm256_set1_ps(static_cast<float>(g.zero_point));
  const __m256 lo = _mm256_set1_ps(static_cast<float>(g.qmin)), hi = _mm256_set1_ps(static_cast<float>(g.qmax));
  const __m256 below = _mm256_sub_ps(lo, zp), above = _mm256_sub_ps(hi, zp);
  __m256d sum0 = _mm256_setzero_pd(), sum1 = _mm256_setzero_pd();
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 t;
    const __m256 r = rounded_quotient(_mm256_loadu_ps(x + i), s, inv, t);
    const __m256 q = _mm256_add_ps(r, zp);
    const __m256 is_low = _mm256_cmp_ps(q, lo, _CMP_LT_OQ), is_high = _mm256_cmp_ps(q, hi, _CMP_GT_OQ);
    const __m256 inside = _mm256_andnot_ps(_mm256_or_ps(is_low, is_high), _mm256_cmp_ps(q, q, _CMP_ORD_Q));
    const __m256 d = _mm256_loadu_ps(dy + i);
    if (dx) _mm256_storeu_ps(dx + i, _mm256_and_ps(d, inside));
    if (!scale_gradient) continue;
    // Same selection as the reference: inside -> r - t, below -> qmin - zp, otherwise qmax - zp.
    const __m256 outside = _mm256_blendv_ps(above, below, is_low);
    const __m256 prod = _mm256_mul_ps(d, _mm256_blendv_ps(outside, _mm256_sub_ps(r, t), inside));
    sum0 = _mm256_add_pd(sum0, _mm256_cvtps_pd(_mm256_castps256_ps128(prod)));
    sum1 = _mm256_add_pd(sum1, _mm256_cvtps_pd(_mm256_extractf128_ps(prod, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum0, sum1));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) +
         fake_quantize_backward_f32_ref(n - i, x + i, dy + i, g, dx ? dx + i : nullptr, scale_gradient);
}

}  // namespace lowbit::kernels
