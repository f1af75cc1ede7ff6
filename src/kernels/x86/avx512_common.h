// Internal to the AVX-512 VNNI kernels (*_avx512vnni.cpp, compiled with AVX-512 flags):
// vpdpbusd / vpdpwssd wrappers and the fixed-point requantization of 16
// s32 lanes shared by the integer GEMM and the direct integer convolution. Everything here has
// internal linkage on purpose: nothing compiled with AVX-512 flags (no inline library template)
// may be picked by the linker for other files, which run on CPUs without AVX-512.
#pragma once

// GCC 12 flags the "undefined" pass-through operand of its own AVX-512 intrinsic wrappers
// (avx512fintrin.h: _mm512_mul_epi32, _mm512_srav_epi64, _mm512_cvtepi8_epi32, ...) as possibly
// uninitialized once they are inlined into loops; every lane the kernels use is computed.
#if defined(__GNUC__) && !defined(__clang__)  // (clang has no such warning)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "kernels/x86/scratch.h"
#include "kernels/qgemm.h"

namespace lowbit::kernels {
namespace {

constexpr int kPanel = 16;  // output columns (GEMM) or pixels (convolution) per 16-lane vector

// vpdpbusd (4 u8 x s8 products per s32 lane) and vpdpwssd (2 s16 x s16 products per lane), both
// without saturation, through inline asm. With the intrinsics, GCC 12 only allocates the
// accumulator to zmm0-15 and, holding 16 accumulators plus operands, copies them between
// zmm16-31 and zmm0-15 around every multiply-add (2 extra moves each, and stack spills): 0.95x
// -> 0.97x of oneDNN at 1024^3 when fixed. "+v" lets the accumulators live in any of zmm0-31.
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}
inline __m512i dpwssd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpwssd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// The mask of the first n bytes of a 64-byte vector (n <= 0: none, n >= 64: all).
inline __mmask64 first_bytes(int64_t n) {
  return n >= 64 ? ~__mmask64{0} : n <= 0 ? __mmask64{0} : (__mmask64{1} << n) - 1;
}

// Output-stage constants of 16 lanes (16 GEMM columns, or one output channel broadcast).
struct alignas(64) PanelConstants {
  __m512i offset;                    // GEMM: column offset - 128 * sum_k w, the accumulators' start value
  __m512i mult, mult_odd;            // multiplier of the even / odd s32 lanes, in the low half of a 64-bit lane
  __m512i shift_even, shift_odd;     // per 64-bit lane
  __m512i round_even, round_odd;     // 2^(shift - 1)
  bool fits_s32;                     // every requantized value of these lanes fits s32 (see requantize)
};

// From 16 offsets, multipliers and shifts (shift 0 in unused lanes: f32 output or padding).
inline PanelConstants panel_constants(__m512i offset, __m512i m32, __m512i s32) {
  PanelConstants pc;
  // Per lane: shift 0, shift >= 32, or shift 31 with a multiplier other than -2^31.
  const __mmask16 fits = _mm512_cmpeq_epi32_mask(s32, _mm512_setzero_si512()) |
                         _mm512_cmpge_epi32_mask(s32, _mm512_set1_epi32(32)) |
                         (_mm512_cmpeq_epi32_mask(s32, _mm512_set1_epi32(31)) &
                          _mm512_cmpneq_epi32_mask(m32, _mm512_set1_epi32(INT32_MIN)));
  pc.fits_s32 = fits == 0xFFFF;
  pc.offset = offset;
  const __m512i low32 = _mm512_set1_epi64(0xffffffffLL), one = _mm512_set1_epi64(1);
  pc.mult = m32;
  pc.mult_odd = _mm512_srli_epi64(m32, 32);
  pc.shift_even = _mm512_and_si512(s32, low32);
  pc.shift_odd = _mm512_srli_epi64(s32, 32);
  pc.round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(pc.shift_even, one));
  pc.round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(pc.shift_odd, one));
  return pc;
}
inline PanelConstants panel_constants(const int32_t* offset, const int32_t* mult, const int32_t* shift) {
  return panel_constants(_mm512_loadu_si512(offset), _mm512_loadu_si512(mult), _mm512_loadu_si512(shift));
}

// The GEMM's columns [col, col + valid) (valid <= 16; the other lanes 0): offsets, and unless f32
// output, the multipliers and shifts of FixedPointMultiplier pairs.
inline PanelConstants panel_constants(const QOutputStage& out, int64_t col, int64_t valid, bool f32) {
  const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
  const __m512i offset = _mm512_maskz_loadu_epi32(mask, out.column_offset + col);
  if (f32) return panel_constants(offset, _mm512_setzero_si512(), _mm512_setzero_si512());
  // 16 {multiplier, shift} pairs: two loads, then the even / odd 32-bit lanes of both.
  static_assert(sizeof(FixedPointMultiplier) == 8 && offsetof(FixedPointMultiplier, shift) == 4,
                "FixedPointMultiplier is {int32 multiplier, int32 shift}");
  const char* pairs = reinterpret_cast<const char*>(out.multiplier + col);
  const __mmask16 lo = static_cast<__mmask16>(valid >= 8 ? 0xFFFF : (1u << (2 * valid)) - 1);
  const __mmask16 hi = static_cast<__mmask16>(valid <= 8 ? 0 : (1u << (2 * (valid - 8))) - 1);
  const __m512i p0 = _mm512_maskz_loadu_epi32(lo, pairs), p1 = _mm512_maskz_loadu_epi32(hi, pairs + 64);
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
  return panel_constants(offset, _mm512_permutex2var_epi32(p0, even, p1), _mm512_permutex2var_epi32(p0, odd, p1));
}

// Per-call clamp: kPlain when the zero point is 0 and [clamp_min, clamp_max] contains [-128, 127]
// (the saturating s32 -> s8 pack is then the whole clamp); kS32 when clamp_min - zp and
// clamp_max - zp fit s32; kS64 otherwise.
enum class Clamp { kPlain, kS32, kS64 };

struct ClampConstants {
  __m512i lo64, hi64, lo32, hi32, zero_point;
};

inline Clamp clamp_kind(const QOutputStage& out) {
  const int64_t zp = out.output_zero_point, lo = out.clamp_min - zp, hi = out.clamp_max - zp;
  return zp == 0 && out.clamp_min <= -128 && out.clamp_max >= 127                  ? Clamp::kPlain
         : lo >= INT32_MIN && lo <= INT32_MAX && hi >= INT32_MIN && hi <= INT32_MAX ? Clamp::kS32
                                                                                    : Clamp::kS64;
}

inline ClampConstants clamp_constants(const QOutputStage& out) {
  const int64_t zp = out.output_zero_point, lo = out.clamp_min - zp, hi = out.clamp_max - zp;
  return {_mm512_set1_epi64(lo), _mm512_set1_epi64(hi),
          _mm512_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(lo, INT32_MIN, INT32_MAX))),
          _mm512_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(hi, INT32_MIN, INT32_MAX))),
          _mm512_set1_epi32(out.output_zero_point)};
}

// (v * m + 2^(s-1)) >> s per lane, then the clamp, zero point and saturating pack to 16 bytes.
// vpmuldq multiplies the even s32 lanes to 64 bits; the odd lanes go through a 32-bit shift.
// If the lanes' results fit s32 (shift >= 32, or 31 with a multiplier other than -2^31, which
// bounds |(v * m + 2^(s-1)) >> s| below 2^31) the two halves are merged at once (one vpshufd with
// a merge mask) and clamped in s32; otherwise (kS64) they are clamped to [clamp_min - zp,
// clamp_max - zp] in 64 bits before the merge. The final + zp wraps modulo 2^32 like the
// reference's int64 sum of two values whose result is in [clamp_min, clamp_max], so it is exact.
template <Clamp kClamp>
inline __m128i requantize(__m512i v, const PanelConstants& pc, const ClampConstants& cc) {
  __m512i even = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, pc.mult), pc.round_even), pc.shift_even);
  __m512i odd = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), pc.mult_odd), pc.round_odd),
                                  pc.shift_odd);
  if constexpr (kClamp == Clamp::kS64) {
    even = _mm512_min_epi64(_mm512_max_epi64(even, cc.lo64), cc.hi64);
    odd = _mm512_min_epi64(_mm512_max_epi64(odd, cc.lo64), cc.hi64);
  }
  // Low 32 bits of even 64-bit lanes in the even s32 lanes, of odd ones (swapped down) in the odd.
  __m512i y = _mm512_mask_shuffle_epi32(even, 0xAAAA, odd, _MM_PERM_CDAB);
  if constexpr (kClamp == Clamp::kS32) y = _mm512_min_epi32(_mm512_max_epi32(y, cc.lo32), cc.hi32);
  if constexpr (kClamp != Clamp::kPlain) y = _mm512_add_epi32(y, cc.zero_point);
  return _mm512_cvtsepi32_epi8(y);
}

}  // namespace
}  // namespace lowbit::kernels
