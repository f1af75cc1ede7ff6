// AVX-512 paths of kernels/activation.h's element-wise kernels (e^x, GELU and its gradient):
// activation_math.h's formulas, 16 lanes at a time, the same operations in the same order as the
// reference and the AVX2 path (no FMA), the tails through the scalar formulas. Compiled with the
// AVX-512 flags of the *_avx512vnni.cpp files; run where active_isa() is Avx512Vnni (AVX-512 F).
// Softmax rows stay on the AVX2 path: their sum's eight-lane order is part of the definition.
// GCC 12 flags the "undefined" pass-through operand of its own AVX-512 intrinsic wrappers as
// possibly uninitialized (as avx512_common.h says); every lane used is computed.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cmath>

#include "kernels/activation_math.h"
#include "kernels/paths.h"

namespace lowbit::kernels {
namespace {

__m512 negate(__m512 v) { return _mm512_castsi512_ps(_mm512_xor_si512(_mm512_castps_si512(v), _mm512_set1_epi32(INT32_MIN))); }

__m512 exp16(__m512 x) {
  const __m512 hi = _mm512_set1_ps(act::kExpHi), lo = _mm512_set1_ps(act::kExpLo);
  const __m512 xc = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(xc, _mm512_set1_ps(act::kLog2e)), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_sub_ps(xc, _mm512_mul_ps(n, _mm512_set1_ps(act::kLn2Hi)));
  r = _mm512_sub_ps(r, _mm512_mul_ps(n, _mm512_set1_ps(act::kLn2Lo)));
  const __m512 r2 = _mm512_mul_ps(r, r);
  __m512 p = _mm512_set1_ps(act::kExpP[0]);
  for (int i = 1; i < 6; ++i) p = _mm512_add_ps(_mm512_mul_ps(p, r), _mm512_set1_ps(act::kExpP[i]));
  p = _mm512_mul_ps(p, r2);
  p = _mm512_add_ps(p, r);
  p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
  const __m512i bits = _mm512_slli_epi32(_mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23);
  __m512 y = _mm512_mul_ps(p, _mm512_castsi512_ps(bits));
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, hi, _CMP_GT_OQ), y, _mm512_set1_ps(INFINITY));
  y = _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, lo, _CMP_LT_OQ), y, _mm512_setzero_ps());
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, x, _CMP_UNORD_Q), y, x);
}

// Phi(x) and e^(-x^2 / 2), as act::normal_cdf.
__m512 normal_cdf16(__m512 x, __m512* gauss) {
  const __m512 u = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(act::kInvSqrt2));
  const __m512 one = _mm512_set1_ps(1.0f), half = _mm512_set1_ps(0.5f);
  const __m512 t = _mm512_div_ps(one, _mm512_add_ps(one, _mm512_mul_ps(half, u)));
  __m512 r = _mm512_set1_ps(act::kErfcxC[9]);
  for (int i = 8; i >= 0; --i) r = _mm512_add_ps(_mm512_mul_ps(r, t), _mm512_set1_ps(act::kErfcxC[i]));
  const __m512 e = exp16(negate(_mm512_mul_ps(u, u)));
  const __m512 half_erfc = _mm512_mul_ps(half, _mm512_mul_ps(e, r));
  *gauss = e;
  return _mm512_mask_blend_ps(_mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ), _mm512_sub_ps(one, half_erfc), half_erfc);
}

__m512 tanh_sigmoid16(__m512 x) {
  const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
  const __m512 v = _mm512_mul_ps(_mm512_set1_ps(act::kSqrt2OverPi), _mm512_add_ps(x, _mm512_mul_ps(_mm512_set1_ps(act::kCubic), x3)));
  const __m512 one = _mm512_set1_ps(1.0f);
  return _mm512_div_ps(one, _mm512_add_ps(one, exp16(negate(_mm512_add_ps(v, v)))));
}

}  // namespace

void exp_f32_avx512(int64_t n, const float* x, float* y) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, exp16(_mm512_loadu_ps(x + i)));
  exp_f32_ref(n - i, x + i, y + i);
}

// The reference's order exactly: the maximum (order-free), e^(x - max) 16 at a time, their sum in
// the reference's 8 lanes (each 16-vector adds its lower then its upper half, the AVX2 path's two
// consecutive 8-vectors), the same lane tree, then one reciprocal multiplied in.
void softmax_row_f32_avx512(int64_t n, const float* x, float* y) {
  const int64_t whole16 = n / 16 * 16, whole = n / 8 * 8;
  __m512 peak16 = _mm512_set1_ps(-INFINITY);
  for (int64_t i = 0; i < whole16; i += 16) peak16 = _mm512_max_ps(_mm512_loadu_ps(x + i), peak16);
  alignas(64) float lanes[16];
  _mm512_store_ps(lanes, peak16);
  float peak = -INFINITY;
  for (float v : lanes) peak = std::max(peak, v);
  for (int64_t i = whole16; i < n; ++i) peak = std::max(peak, x[i]);
  const __m512 p = _mm512_set1_ps(peak);
  __m256 sum8 = _mm256_setzero_ps();
  for (int64_t i = 0; i < whole16; i += 16) {
    const __m512 e = exp16(_mm512_sub_ps(_mm512_loadu_ps(x + i), p));
    _mm512_storeu_ps(y + i, e);
    sum8 = _mm256_add_ps(sum8, _mm512_castps512_ps256(e));
    sum8 = _mm256_add_ps(sum8, _mm256_loadu_ps(y + i + 8));  // the upper half, just stored
  }
  for (int64_t i = whole16; i < n; ++i) y[i] = act::exp(x[i] - peak);
  if (whole > whole16) sum8 = _mm256_add_ps(sum8, _mm256_loadu_ps(y + whole16));
  const __m128 quad = _mm_add_ps(_mm256_castps256_ps128(sum8), _mm256_extractf128_ps(sum8, 1));
  const __m128 pair = _mm_add_ps(quad, _mm_movehl_ps(quad, quad));
  float sum = _mm_cvtss_f32(_mm_add_ss(pair, _mm_shuffle_ps(pair, pair, 1)));
  for (int64_t i = whole; i < n; ++i) sum += y[i];
  const float inv = 1.0f / sum;
  const __m512 inv16 = _mm512_set1_ps(inv);
  for (int64_t i = 0; i < whole16; i += 16) _mm512_storeu_ps(y + i, _mm512_mul_ps(_mm512_loadu_ps(y + i), inv16));
  for (int64_t i = whole16; i < n; ++i) y[i] *= inv;
}

void gelu_f32_avx512(int64_t n, const float* x, float* y, bool tanh_form) {
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    __m512 e;
    const __m512 s = tanh_form ? tanh_sigmoid16(v) : normal_cdf16(v, &e);
    _mm512_storeu_ps(y + i, _mm512_mul_ps(v, s));
  }
  gelu_f32_ref(n - i, x + i, y + i, tanh_form);
}

void gelu_backward_f32_avx512(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form) {
  const __m512 one = _mm512_set1_ps(1.0f), lo = _mm512_set1_ps(-act::kGradClamp), hi = _mm512_set1_ps(act::kGradClamp);
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m512 v = _mm512_loadu_ps(x + i);
    const __m512 vc = _mm512_min_ps(hi, _mm512_max_ps(lo, v));  // act::grad_x: NaN (second operand) stays NaN
    __m512 grad;
    if (tanh_form) {
      const __m512 s = tanh_sigmoid16(v);
      const __m512 dv = _mm512_mul_ps(_mm512_set1_ps(act::kSqrt2OverPi),
                                      _mm512_add_ps(one, _mm512_mul_ps(_mm512_set1_ps(3.0f * act::kCubic), _mm512_mul_ps(vc, vc))));
      grad = _mm512_add_ps(s, _mm512_mul_ps(vc, _mm512_mul_ps(_mm512_mul_ps(_mm512_add_ps(s, s), _mm512_sub_ps(one, s)), dv)));
    } else {
      __m512 e;
      const __m512 phi = normal_cdf16(v, &e);
      grad = _mm512_add_ps(phi, _mm512_mul_ps(vc, _mm512_mul_ps(e, _mm512_set1_ps(act::kInvSqrt2Pi))));
    }
    _mm512_storeu_ps(dx + i, _mm512_mul_ps(_mm512_loadu_ps(dy + i), grad));
  }
  gelu_backward_f32_ref(n - i, x + i, dy + i, dx + i, tanh_form);
}

}  // namespace lowbit::kernels
