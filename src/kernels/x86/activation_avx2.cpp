// AVX2 paths of kernels/activation.h: activation_math.h's formulas, 8 lanes at a time, the same
// operations in the same order (no FMA), the tails through the scalar formulas.
#include <immintrin.h>

#include <algorithm>

#include "kernels/activation_math.h"
#include "kernels/paths.h"

namespace lowbit::kernels {
namespace {

__m256 exp8(__m256 x) {
  const __m256 hi = _mm256_set1_ps(act::kExpHi), lo = _mm256_set1_ps(act::kExpLo);
  const __m256 xc = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(act::kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_sub_ps(xc, _mm256_mul_ps(n, _mm256_set1_ps(act::kLn2Hi)));
  r = _mm256_sub_ps(r, _mm256_mul_ps(n, _mm256_set1_ps(act::kLn2Lo)));
  const __m256 r2 = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(act::kExpP[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_add_ps(_mm256_mul_ps(p, r), _mm256_set1_ps(act::kExpP[i]));
  p = _mm256_mul_ps(p, r2);
  p = _mm256_add_ps(p, r);
  p = _mm256_add_ps(p, _mm256_set1_ps(1.0f));
  const __m256i bits = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(bits));
  y = _mm256_blendv_ps(y, _mm256_set1_ps(INFINITY), _mm256_cmp_ps(x, hi, _CMP_GT_OQ));
  y = _mm256_blendv_ps(y, _mm256_setzero_ps(), _mm256_cmp_ps(x, lo, _CMP_LT_OQ));
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

// Phi(x) and e^(-x^2 / 2), as act::normal_cdf.
__m256 normal_cdf8(__m256 x, __m256* gauss) {
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 u = _mm256_mul_ps(_mm256_and_ps(x, abs_mask), _mm256_set1_ps(act::kInvSqrt2));
  const __m256 one = _mm256_set1_ps(1.0f), half = _mm256_set1_ps(0.5f);
  const __m256 t = _mm256_div_ps(one, _mm256_add_ps(one, _mm256_mul_ps(half, u)));
  __m256 r = _mm256_set1_ps(act::kErfcxC[9]);
  for (int i = 8; i >= 0; --i) r = _mm256_add_ps(_mm256_mul_ps(r, t), _mm256_set1_ps(act::kErfcxC[i]));
  const __m256 minus_u2 = _mm256_xor_ps(_mm256_mul_ps(u, u), _mm256_set1_ps(-0.0f));
  const __m256 e = exp8(minus_u2);
  const __m256 half_erfc = _mm256_mul_ps(half, _mm256_mul_ps(e, r));
  *gauss = e;
  return _mm256_blendv_ps(_mm256_sub_ps(one, half_erfc), half_erfc, _mm256_cmp_ps(x, _mm256_setzero_ps(), _CMP_LT_OQ));
}

__m256 tanh_sigmoid8(__m256 x) {
  const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
  const __m256 v = _mm256_mul_ps(_mm256_set1_ps(act::kSqrt2OverPi), _mm256_add_ps(x, _mm256_mul_ps(_mm256_set1_ps(act::kCubic), x3)));
  const __m256 minus_2v = _mm256_xor_ps(_mm256_add_ps(v, v), _mm256_set1_ps(-0.0f));
  const __m256 one = _mm256_set1_ps(1.0f);
  return _mm256_div_ps(one, _mm256_add_ps(one, exp8(minus_2v)));
}

}  // namespace

void exp_f32_avx2(int64_t n, const float* x, float* y) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, exp8(_mm256_loadu_ps(x + i)));
  exp_f32_ref(n - i, x + i, y + i);
}

void softmax_row_f32_avx2(int64_t n, const float* x, float* y) {
  const int64_t whole = n / 8 * 8;
  __m256 peak8 = _mm256_set1_ps(-INFINITY);
  for (int64_t i = 0; i < whole; i += 8) peak8 = _mm256_max_ps(_mm256_loadu_ps(x + i), peak8);
  alignas(32) float lanes[8];
  _mm256_store_ps(lanes, peak8);
  float peak = -INFINITY;
  for (float v : lanes) peak = std::max(peak, v);
  for (int64_t i = whole; i < n; ++i) peak = std::max(peak, x[i]);
  const __m256 p = _mm256_set1_ps(peak);
  __m256 sum8 = _mm256_setzero_ps();
  for (int64_t i = 0; i < whole; i += 8) {
    const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), p));
    _mm256_storeu_ps(y + i, e);
    sum8 = _mm256_add_ps(sum8, e);
  }
  for (int64_t i = whole; i < n; ++i) y[i] = act::exp(x[i] - peak);
  const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(sum8), _mm256_extractf128_ps(sum8, 1));
  const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
  float sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
  for (int64_t i = whole; i < n; ++i) sum += y[i];
  const float inv = 1.0f / sum;
  const __m256 inv8 = _mm256_set1_ps(inv);
  for (int64_t i = 0; i < whole; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), inv8));
  for (int64_t i = whole; i < n; ++i) y[i] *= inv;
}

void gelu_f32_avx2(int64_t n, const float* x, float* y, bool tanh_form) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    __m256 e;
    const __m256 s = tanh_form ? tanh_sigmoid8(v) : normal_cdf8(v, &e);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(v, s));
  }
  gelu_f32_ref(n - i, x + i, y + i, tanh_form);
}

void gelu_backward_f32_avx2(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form) {
  const __m256 one = _mm256_set1_ps(1.0f), lo = _mm256_set1_ps(-act::kGradClamp), hi = _mm256_set1_ps(act::kGradClamp);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256 v = _mm256_loadu_ps(x + i);
    const __m256 vc = _mm256_min_ps(hi, _mm256_max_ps(lo, v));  // act::grad_x: NaN (second operand) stays NaN
    __m256 grad;
    if (tanh_form) {
      const __m256 s = tanh_sigmoid8(v);
      const __m256 dv = _mm256_mul_ps(_mm256_set1_ps(act::kSqrt2OverPi),
                                      _mm256_add_ps(one, _mm256_mul_ps(_mm256_set1_ps(3.0f * act::kCubic), _mm256_mul_ps(vc, vc))));
      grad = _mm256_add_ps(s, _mm256_mul_ps(vc, _mm256_mul_ps(_mm256_mul_ps(_mm256_add_ps(s, s), _mm256_sub_ps(one, s)), dv)));
    } else {
      __m256 e;
      const __m256 phi = normal_cdf8(v, &e);
      grad = _mm256_add_ps(phi, _mm256_mul_ps(vc, _mm256_mul_ps(e, _mm256_set1_ps(act::kInvSqrt2Pi))));
    }
    _mm256_storeu_ps(dx + i, _mm256_mul_ps(_mm256_loadu_ps(dy + i), grad));
  }
  gelu_backward_f32_ref(n - i, x + i, dy + i, dx + i, tanh_form);
}

}  // namespace lowbit::kernels
