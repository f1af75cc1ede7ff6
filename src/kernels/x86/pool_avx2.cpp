// The forward max pooling (kernels/maxpool_plane.h) compiled for AVX2: the same loops as the
// portable build in kernels/pool.cpp, vectorized by the compiler (vpmaxsb, vmaxps), with the
// 2x2 stride-2 windows written out here (two input rows to one output row in registers); the
// pooling tests compare the two builds.
#include <immintrin.h>

#include <algorithm>
#include <cstring>

#include "kernels/maxpool_plane.h"
#include "kernels/paths.h"
#include "kernels/x86/avx2_util.h"

namespace lowbit::kernels {
namespace {

// 16 outputs from 32 bytes of each row: the rows' maximum, then each byte pair (one s16 lane)
// sign-extended both ways (shift left then arithmetic right; arithmetic right) and compared,
// and the 16 s16 packed back to bytes.
inline __m128i pool16(__m256i a, __m256i b) {
  const __m256i v = _mm256_max_epi8(a, b);
  const __m256i m = _mm256_max_epi16(_mm256_srai_epi16(_mm256_slli_epi16(v, 8), 8), _mm256_srai_epi16(v, 8));
  return _mm_packs_epi16(_mm256_castsi256_si128(m), _mm256_extracti128_si256(m, 1));
}

// 8 outputs from 16 floats of each row: the rows' maximum, then odd and even elements split by
// vshufps and vmaxps(odd, even) = max_of(even, odd) (its first operand when greater, else the
// second), put back in order by one lane permutation.
inline __m256 pool8(const float* first, const float* second) {
  const __m256 a = _mm256_max_ps(_mm256_loadu_ps(second), _mm256_loadu_ps(first));
  const __m256 b = _mm256_max_ps(_mm256_loadu_ps(second + 8), _mm256_loadu_ps(first + 8));
  const __m256 m = _mm256_max_ps(_mm256_shuffle_ps(a, b, 0xDD), _mm256_shuffle_ps(a, b, 0x88));
  return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(m), 0xD8));
}

// Loads read whole vectors past the row (the bytes after it are the plane's, or the next
// plane's: ignored lanes) while they stay before `end`, the end of the input; only the last rows
// of the input take the copying path. Stores write exactly the n outputs.
struct Avx2Pool2x2 {
  const void* end;
  void operator()(const int8_t* first, const int8_t* second, int8_t* out, int64_t n) const {
    const int8_t* limit = static_cast<const int8_t*>(end);
    for (int64_t o = 0; o < n; o += 16) {
      __m128i r;
      if (second + 2 * o + 32 <= limit) {
        r = pool16(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(first + 2 * o)),
                   _mm256_loadu_si256(reinterpret_cast<const __m256i*>(second + 2 * o)));
      } else {
        const size_t bytes = static_cast<size_t>(2 * std::min<int64_t>(16, n - o));
        alignas(32) int8_t a[32] = {}, b[32] = {};
        std::memcpy(a, first + 2 * o, bytes);
        std::memcpy(b, second + 2 * o, bytes);
        r = pool16(_mm256_load_si256(reinterpret_cast<const __m256i*>(a)), _mm256_load_si256(reinterpret_cast<const __m256i*>(b)));
      }
      if (n - o >= 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(out + o), r);
      else
        avx2::store_partial_bytes(out + o, r, static_cast<int>(n - o));
    }
  }
  void operator()(const float* first, const float* second, float* out, int64_t n) const {
    const float* limit = static_cast<const float*>(end);
    for (int64_t o = 0; o < n; o += 8) {
      __m256 r;
      if (second + 2 * o + 16 <= limit) {
        r = pool8(first + 2 * o, second + 2 * o);
      } else {
        const size_t count = static_cast<size_t>(2 * std::min<int64_t>(8, n - o));
        alignas(32) float a[16] = {}, b[16] = {};
        std::memcpy(a, first + 2 * o, sizeof(float) * count);
        std::memcpy(b, second + 2 * o, sizeof(float) * count);
        r = pool8(a, b);
      }
      if (n - o >= 8) {
        _mm256_storeu_ps(out + o, r);
      } else {
        const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
        _mm256_maskstore_ps(out + o, _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n - o)), lane), r);
      }
    }
  }
};

}  // namespace

void maxpool_planes_avx2(const PoolGeometry& g, const float* x, float* y, int64_t p0, int64_t p1) {
  maxpool_planes(g, x, y, p0, p1, Avx2Pool2x2{x + g.batch * g.channels * g.in_h * g.in_w});
}

void maxpool_planes_avx2(const PoolGeometry& g, const int8_t* x, int8_t* y, int64_t p0, int64_t p1) {
  maxpool_planes(g, x, y, p0, p1, Avx2Pool2x2{x + g.batch * g.channels * g.in_h * g.in_w});
}

}  // namespace lowbit::kernels
