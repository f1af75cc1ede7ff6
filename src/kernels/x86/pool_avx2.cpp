// The forward max pooling (kernels/maxpool_plane.h) compiled for AVX2: the same loops as the
// portable build in kernels/pool.cpp, vectorized by the compiler (vpmaxsb, vmaxps), with the
// 2-wide stride-2 windows of a row written out here; the pooling tests compare the two builds.
#include <immintrin.h>

#include <cstring>

#include "kernels/maxpool_plane.h"
#include "kernels/paths.h"

namespace lowbit::kernels {
namespace {

// out[o] = max(row[2o], row[2o + 1]), 16 at a time: each pair is one s16 lane whose two bytes are
// sign-extended (shift left then arithmetic right, and arithmetic right), compared, and packed
// back to bytes. Reads up to 31 bytes past 2n (the row's slack).
void pairs_s8(const int8_t* row, int8_t* out, int64_t n) {
  for (int64_t o = 0; o < n; o += 16) {
    const __m256i w = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + 2 * o));
    const __m256i m = _mm256_max_epi16(_mm256_srai_epi16(_mm256_slli_epi16(w, 8), 8), _mm256_srai_epi16(w, 8));
    const __m128i b = _mm_packs_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
    if (n - o >= 16) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + o), b);
    } else {
      alignas(16) int8_t tail[16];
      _mm_store_si128(reinterpret_cast<__m128i*>(tail), b);
      std::memcpy(out + o, tail, static_cast<size_t>(n - o));
    }
  }
}

// The same for f32, 8 at a time: even and odd elements split by vshufps, then vmaxps(odd, even),
// which is max_of(even, odd) (the first operand when it is greater, else the second), put back
// in order by one lane permutation.
void pairs_f32(const float* row, float* out, int64_t n) {
  int64_t o = 0;
  for (; o + 8 <= n; o += 8) {
    const __m256 a = _mm256_loadu_ps(row + 2 * o), b = _mm256_loadu_ps(row + 2 * o + 8);
    const __m256 m = _mm256_max_ps(_mm256_shuffle_ps(a, b, 0xDD), _mm256_shuffle_ps(a, b, 0x88));
    _mm256_storeu_ps(out + o, _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8)));
  }
  scalar_pairs(row + 2 * o, out + o, n - o);
}

}  // namespace

void maxpool_planes_avx2(const PoolGeometry& g, const float* x, float* y, int64_t p0, int64_t p1) {
  maxpool_planes(g, x, y, p0, p1, &pairs_f32);
}

void maxpool_planes_avx2(const PoolGeometry& g, const int8_t* x, int8_t* y, int64_t p0, int64_t p1) {
  maxpool_planes(g, x, y, p0, p1, &pairs_s8);
}

}  // namespace lowbit::kernels
