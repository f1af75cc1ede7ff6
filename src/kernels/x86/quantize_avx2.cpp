// AVX2 activation quantize / dequantize, bit-exact with the reference: the same IEEE division,
// round-half-even (vroundps, as nearbyint in the default rounding mode), the same clamp order
// (max with -128 first, so NaN becomes -128, as fmax/fmin do).
#include <immintrin.h>

#include "kernels/qgemm.h"
#include "kernels/paths.h"

namespace lowbit::kernels {

void quantize_s8_avx2(int64_t n, const float* x, float scale, int32_t zero_point, int8_t* q) {
  const __m256 s = _mm256_set1_ps(scale), zp = _mm256_set1_ps(static_cast<float>(zero_point));
  const __m256 lo = _mm256_set1_ps(-128.0f), hi = _mm256_set1_ps(127.0f);
  auto convert = [&](__m256 v) {
    v = _mm256_add_ps(_mm256_round_ps(_mm256_div_ps(v, s), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC), zp);
    return _mm256_cvtps_epi32(_mm256_min_ps(_mm256_max_ps(v, lo), hi));
  };
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m256i a = convert(_mm256_loadu_ps(x + i)), b = convert(_mm256_loadu_ps(x + i + 8));
    const __m256i c = convert(_mm256_loadu_ps(x + i + 16)), d = convert(_mm256_loadu_ps(x + i + 24));
    // packs work within 128-bit lanes: fix the order with one cross-lane permute.
    const __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    const __m256i bytes = _mm256_packs_epi16(ab, cd);
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i),
                        _mm256_permutevar8x32_epi32(bytes, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7)));
  }
  kernels::quantize_s8_ref(n - i, x + i, scale, zero_point, q + i);
}

namespace {
// y = scale * (q - zero_point) over 8 codes at a time; `widen` turns 8 codes into 8 int32 (sign-
// or zero-extending), `tail` is the reference for the last n % 8.
template <class Code, class Widen, class Tail>
void dequantize_avx2(int64_t n, const Code* q, float scale, int32_t zero_point, float* y, Widen widen, Tail tail) {
  const __m256 s = _mm256_set1_ps(scale);
  const __m256i zp = _mm256_set1_epi32(zero_point);
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    const __m256i v = _mm256_sub_epi32(widen(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(q + i))), zp);
    _mm256_storeu_ps(y + i, _mm256_mul_ps(s, _mm256_cvtepi32_ps(v)));
  }
  tail(n - i, q + i, scale, zero_point, y + i);
}
}  // namespace

void dequantize_s8_avx2(int64_t n, const int8_t* q, float scale, int32_t zero_point, float* y) {
  dequantize_avx2(n, q, scale, zero_point, y, [](__m128i v) { return _mm256_cvtepi8_epi32(v); }, dequantize_s8_ref);
}

void dequantize_u8_avx2(int64_t n, const uint8_t* q, float scale, int32_t zero_point, float* y) {
  dequantize_avx2(n, q, scale, zero_point, y, [](__m128i v) { return _mm256_cvtepu8_epi32(v); }, dequantize_u8_ref);
}

}  // namespace lowbit::kernels
