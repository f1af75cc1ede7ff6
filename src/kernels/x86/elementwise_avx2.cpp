// AVX2 element-wise kernels: the reference's operations, 8 lanes at a time, same order.
#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/elementwise.h"
#include "kernels/paths.h"

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

// nearbyint(x / s) without a division in the common case. t = x * (1/s) is within 3 * 2^-24 |x/s|
// of the correctly rounded quotient the reference rounds, so both round to the same integer
// unless a half-integer lies within that distance. Only lanes with |x/s| <= `reach` (the grid's
// farthest level from zero, plus one) can change an output: beyond it every candidate integer is
// clamped to the same bound. For those lanes the distance is below reach * 2^-22, so a lane whose
// fraction |t - r| is at least 0.5 - reach * 2^-20 (exact ties like x = 2.5 s included) is
// recomputed with the IEEE division the reference uses. The integer, and so every output, is
// identical to the reference's; `t` (the quotient, for LSQ's gradient) may differ by an ulp.
struct Grid8 {
  __m256 s, inv, low, high, near_tie;  // low, high: qmin - zp, qmax - zp
  explicit Grid8(const FakeQuantGrid& g) {
    const float lo = static_cast<float>(g.qmin - g.zero_point), hi = static_cast<float>(g.qmax - g.zero_point);
    const float reach = std::max(std::fabs(lo), std::fabs(hi)) + 1.0f;
    s = _mm256_set1_ps(g.scale), inv = _mm256_set1_ps(1.0f / g.scale);
    low = _mm256_set1_ps(lo), high = _mm256_set1_ps(hi), near_tie = _mm256_set1_ps(0.5f - reach * 0x1p-20f);
  }
  // Rounds x / s to the nearest integer (ties to even); t receives the quotient.
  __m256 round(__m256 x, __m256& t) const {
    constexpr int kNearest = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    t = _mm256_mul_ps(x, inv);
    __m256 r = _mm256_round_ps(t, kNearest);
    const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
    const __m256 near = _mm256_cmp_ps(_mm256_and_ps(_mm256_sub_ps(t, r), abs_mask), near_tie, _CMP_GE_OQ);  // NaN: false
    if (_mm256_movemask_ps(near)) {
      const __m256 exact = _mm256_div_ps(x, s);
      t = _mm256_blendv_ps(t, exact, near);
      r = _mm256_blendv_ps(r, _mm256_round_ps(exact, kNearest), near);
    }
    return r;
  }
};

}  // namespace

// clamp(r + zp, qmin, qmax) - zp is clamp(r, qmin - zp, qmax - zp) + 0 exactly (small integers in
// float; the reference's subtraction turns a -0 into +0, here the added zero does), and max_ps
// returns its second operand for a NaN lane, as fmax does in the reference.
void fake_quantize_f32_avx2(int64_t n, const float* x, const FakeQuantGrid& g, float* y) {
  const Grid8 grid(g);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    __m256 t;
    const __m256 r = grid.round(_mm256_loadu_ps(x + i), t);
    const __m256 q = _mm256_min_ps(_mm256_max_ps(r, grid.low), grid.high);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(grid.s, _mm256_add_ps(q, _mm256_setzero_ps())));  // -0 (from r) becomes +0
  }
  fake_quantize_f32_ref(n - i, x + i, g, y + i);
}

// The scale gradient's products are summed in float across 8 vectors (64 values), then in
// double: the float partial sums round at most 8 times each, |error| <= 8 * 2^-24 * sum |dy d|
// (the reference sums every product in double; the orders differ anyway).
double fake_quantize_backward_f32_avx2(int64_t n, const float* x, const float* dy, const FakeQuantGrid& g, float* dx,
                                       bool scale_gradient) {
  const Grid8 grid(g);
  // One vector: the mask applied to dy (stored when dx is wanted); returns dy * d y / d scale.
  auto step = [&](int64_t i) {
    __m256 t;
    const __m256 r = grid.round(_mm256_loadu_ps(x + i), t);
    // Ordered compares: a NaN lane is neither inside nor low, as in the reference.
    const __m256 inside = _mm256_and_ps(_mm256_cmp_ps(r, grid.low, _CMP_GE_OQ), _mm256_cmp_ps(r, grid.high, _CMP_LE_OQ));
    const __m256 d = _mm256_loadu_ps(dy + i);
    if (dx) _mm256_storeu_ps(dx + i, _mm256_and_ps(d, inside));
    // Same selection as the reference: inside -> r - t, below -> qmin - zp, otherwise qmax - zp.
    const __m256 outside = _mm256_blendv_ps(grid.high, grid.low, _mm256_cmp_ps(r, grid.low, _CMP_LT_OQ));
    return _mm256_mul_ps(d, _mm256_blendv_ps(outside, _mm256_sub_ps(r, t), inside));
  };
  int64_t i = 0;
  if (!scale_gradient) {
    for (; i + 8 <= n; i += 8) step(i);  // the unused product is dropped by the compiler
    fake_quantize_backward_f32_ref(n - i, x + i, dy + i, g, dx ? dx + i : nullptr, false);
    return 0.0;
  }
  __m256d sum0 = _mm256_setzero_pd(), sum1 = _mm256_setzero_pd();
  while (i + 8 <= n) {
    __m256 block = _mm256_setzero_ps();
    for (const int64_t end = std::min(n - 7, i + 64); i < end; i += 8) block = _mm256_add_ps(block, step(i));
    sum0 = _mm256_add_pd(sum0, _mm256_cvtps_pd(_mm256_castps256_ps128(block)));
    sum1 = _mm256_add_pd(sum1, _mm256_cvtps_pd(_mm256_extractf128_ps(block, 1)));
  }
  alignas(32) double lanes[4];
  _mm256_store_pd(lanes, _mm256_add_pd(sum0, sum1));
  return (lanes[0] + lanes[1]) + (lanes[2] + lanes[3]) + fake_quantize_backward_f32_ref(n - i, x + i, dy + i, g, dx ? dx + i : nullptr, true);
}

}  // namespace lowbit::kernels
