// Internal helpers shared by the AVX2 kernel files (compiled with -mavx2 -mfma). Everything here
// has internal linkage (static inline) so no AVX2 code can be chosen by the linker for files
// compiled without AVX2.
#pragma once

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "lowbit/quant_params.h"

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

// ------------------------------------------------------------------------------------------------
// Fixed-point requantization of s32 lanes (the integer GEMM and the direct convolution)

// 64-bit-lane requantization constants for 4 columns (even or odd lanes of an 8-column vector),
// with the sign flip and the 2^(63-s) bias of the shift trick folded in:
//   u = x * m + (2^(s-1) + 2^63)  (mod 2^64; = y + 2^63 with |y| < 2^63, so 0 < u < 2^64)
//   q = u >>> s = floor(y / 2^s) + B,  B = 2^(63-s)  (exact: 2^s divides 2^63)
//   clamp(q, lo + B, hi + B) = clamp(floor(y / 2^s), lo, hi) + B; B leaves with a 32-bit subtract.
struct Requant4 {
  __m256i m, shift, round, lo, hi;
};

// Even/odd constants of 8 columns, and add32 = zp - low32(B) for the 8 columns in order.
static inline __attribute__((always_inline)) void load_requant8(const FixedPointMultiplier* f, int32_t lo, int32_t hi, int32_t zp,
                                        Requant4& even, Requant4& odd, __m256i& add32) noexcept {
  const __m256i l0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(f));      // columns 0..3
  const __m256i l1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(f + 4));  // columns 4..7
  const __m256i one = _mm256_set1_epi64x(1);
  const __m256i vlo = _mm256_set1_epi64x(lo), vhi = _mm256_set1_epi64x(hi);
  __m256i bias[2];
  Requant4* q[2] = {&even, &odd};
  for (int h = 0; h < 2; ++h) {
    const __m256i ms = _mm256_permute4x64_epi64(h ? _mm256_unpackhi_epi64(l0, l1) : _mm256_unpacklo_epi64(l0, l1),
                                                0xD8);  // columns 0 2 4 6 / 1 3 5 7: 64-bit lanes (m, shift)
    Requant4& r = *q[h];
    r.m = ms;  // vpmuldq reads the low 32 bits
    r.shift = _mm256_srli_epi64(ms, 32);
    bias[h] = _mm256_sllv_epi64(one, _mm256_sub_epi64(_mm256_set1_epi64x(63), r.shift));
    r.round = _mm256_add_epi64(_mm256_sllv_epi64(one, _mm256_sub_epi64(r.shift, one)), _mm256_set1_epi64x(INT64_MIN));
    r.lo = _mm256_add_epi64(vlo, bias[h]);
    r.hi = _mm256_add_epi64(vhi, bias[h]);
  }
  add32 = _mm256_sub_epi32(_mm256_set1_epi32(zp), _mm256_blend_epi32(bias[0], _mm256_slli_epi64(bias[1], 32), 0xAA));
}

// clamp(floor((x * m + 2^(s-1)) / 2^s), lo, hi) + B for the low s32 of each 64-bit lane.
static inline __attribute__((always_inline)) __m256i requant4(__m256i x, const Requant4& q) noexcept {
  __m256i y = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, q.m), q.round), q.shift);
  y = _mm256_blendv_epi8(y, q.lo, _mm256_cmpgt_epi64(q.lo, y));
  return _mm256_blendv_epi8(y, q.hi, _mm256_cmpgt_epi64(y, q.hi));
}

// Whether each of the n multipliers is at most 1 (multiplier <= 2^shift): the requantized value
// of any int32 then fits int32 (|x * m / 2^s| <= |x|, rounding included), so the clamp can run on
// 32-bit lanes after the two halves are joined (requant8_narrow), with the same results.
static inline bool multipliers_at_most_one(const FixedPointMultiplier* f, int64_t n) noexcept {
  for (int64_t i = 0; i < n; ++i)
    if (f[i].multiplier > 0 && static_cast<int64_t>(f[i].multiplier) > (int64_t{1} << f[i].shift)) return false;
  return true;
}

// The requantization of 8 s32 lanes with load_requant8's constants when multipliers_at_most_one:
// the 64-bit products shifted as requant4 does (each low half = floor + low32(B)), joined, B
// removed (low_b = zp - add32), clamped to [lo, hi] (load_requant8's bounds) and zp added. Equal
// to the 64-bit clamp of requant4 then add32, in 5 fewer instructions per 8 values.
static inline __attribute__((always_inline)) __m256i requant8_narrow(__m256i x, const Requant4& e, const Requant4& o, __m256i low_b,
                                                                     __m256i lo, __m256i hi, __m256i zp) noexcept {
  const __m256i ye = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(x, e.m), e.round), e.shift);
  const __m256i yo = _mm256_srlv_epi64(_mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(x, 32), o.m), o.round), o.shift);
  const __m256i v = _mm256_sub_epi32(_mm256_blend_epi32(ye, _mm256_slli_epi64(yo, 32), 0xAA), low_b);
  return _mm256_add_epi32(_mm256_min_epi32(_mm256_max_epi32(v, lo), hi), zp);
}

// Stores the first nv (< 16) bytes of v, piecewise (no memcpy call, no masked stores).
static inline __attribute__((always_inline)) void store_partial_bytes(int8_t* dst, __m128i v, int nv) noexcept {
  if (nv & 8) {
    _mm_storel_epi64(reinterpret_cast<__m128i*>(dst), v);
    dst += 8;
    v = _mm_srli_si128(v, 8);
  }
  if (nv & 4) {
    const int32_t x = _mm_cvtsi128_si32(v);
    std::memcpy(dst, &x, 4);
    dst += 4;
    v = _mm_srli_si128(v, 4);
  }
  const uint32_t rest = static_cast<uint32_t>(_mm_cvtsi128_si32(v));
  if (nv & 2) {
    const uint16_t x = static_cast<uint16_t>(rest);
    std::memcpy(dst, &x, 2);
    dst += 2;
    if (nv & 1) *dst = static_cast<int8_t>(rest >> 16);
  } else if (nv & 1) {
    *dst = static_cast<int8_t>(rest);
  }
}

}  // namespace lowbit::kernels::avx2
