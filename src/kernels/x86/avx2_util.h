// Internal helpers shared by the AVX2 kernel files (compiled with -mavx2 -mfma). Everything here
// has internal linkage (static inline) so no AVX2 code can be chosen by the linker for files
// compiled without AVX2.
#pragma once

#include <immintrin.h>

namespace lowbit::kernels::avx2 {

// Stores the first nv (< 16) floats of v0:v1. Piecewise plain stores: vmaskmovps stores are
// microcoded and slow on AMD cores (measured ~20 cycles each on Zen 4).
static inline __attribute__((always_inline)) void store_partial(float* dst, __m256 v0, __m256 v1, int nv) noexcept {
  __m256 v = v0;
  if (nv >= 8) {
    _mm256_storeu_ps(dst, v0);
    dst += 8;
    nv -= 8;
    v = v1;
  }
  __m128 x = _mm256_castps256_ps128(v);
  if (nv >= 4) {
    _mm_storeu_ps(dst, x);
    dst += 4;
    nv -= 4;
    x = _mm256_extractf128_ps(v, 1);
  }
  if (nv >= 2) {
    _mm_storel_pi(reinterpret_cast<__m64*>(dst), x);
    dst += 2;
    nv -= 2;
    x = _mm_movehl_ps(x, x);
  }
  if (nv >= 1) _mm_store_ss(dst, x);
}

}  // namespace lowbit::kernels::avx2
