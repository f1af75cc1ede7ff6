// AVX-512 VNNI block-quantized product (kernels/blockq.h), from the Avx512Vnni panel layout: 16
// columns, one per 32-bit lane, four codes of a column in the lane's four bytes. One vpdpbusd per
// group of four codes multiplies the 16 columns' codes (unsigned) with the row's four s8 values
// (broadcast) and adds the products to the columns' s32 sums: no s16 step, no horizontal
// reduction. Codes are unpacked in registers: 4 bits one AND or one shift + AND per group, 2 bits
// a shift + AND, 3 bits as 4 bits for six groups of eight, the other two from the spare bits.
// Up to four rows share each unpacked vector. The integer sums are exact and the float steps are
// the reference's operations in the reference's order (16 columns at once), so the output is
// bit-identical to the reference.
//
// Compiled with AVX-512 flags: everything but the entry point has internal linkage, and no
// standard-library template is instantiated here (see avx512_common.h).
// GCC 12 flags the pass-through operand of its own AVX-512 intrinsic wrappers as possibly
// uninitialized once inlined (as avx512_common.h says); every lane used is computed.
#if defined(__GNUC__) && !defined(__clang__)  // (clang has no such warning)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

#include <immintrin.h>

#include <cstdint>
#include <cstring>

#include "kernels/paths.h"

namespace lowbit::kernels {
namespace {

constexpr int64_t P = BlockWeights::kVnniPanel;
constexpr int kMaxRows = 4;

inline __m512i dpbusd(__m512i acc, __m512i codes, __m512i x) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(codes), "v"(x));
  return acc;
}

// The four s8 values x[4g..4g+3] in every lane.
inline __m512i group_of(const int8_t* x) {
  int32_t v;
  std::memcpy(&v, x, 4);
  return _mm512_set1_epi32(v);
}

// One sub-block of 32 codes (64 * bytes-per-32 of the layout) times `rows` rows, added to acc.
template <int Bits, int Rows>
inline __attribute__((always_inline)) void sub_block(const uint8_t* codes, const int8_t* const* x, __m512i* acc) {
  if constexpr (Bits == 4) {
    const __m512i mask = _mm512_set1_epi8(15);
    for (int v = 0; v < 4; ++v) {
      const __m512i packed = _mm512_loadu_si512(codes + 64 * v);
      const __m512i lo = _mm512_and_si512(packed, mask), hi = _mm512_and_si512(_mm512_srli_epi16(packed, 4), mask);
      for (int r = 0; r < Rows; ++r) {
        acc[r] = dpbusd(acc[r], lo, group_of(x[r] + 8 * v));
        acc[r] = dpbusd(acc[r], hi, group_of(x[r] + 8 * v + 4));
      }
    }
  } else if constexpr (Bits == 3) {
    const __m512i mask = _mm512_set1_epi8(7);
    const __m512i v0 = _mm512_loadu_si512(codes), v1 = _mm512_loadu_si512(codes + 64), v2 = _mm512_loadu_si512(codes + 128);
    const __m512i packed[3] = {v0, v1, v2};
    for (int v = 0; v < 3; ++v) {
      const __m512i lo = _mm512_and_si512(packed[v], mask), hi = _mm512_and_si512(_mm512_srli_epi16(packed[v], 4), mask);
      for (int r = 0; r < Rows; ++r) {
        acc[r] = dpbusd(acc[r], lo, group_of(x[r] + 8 * v));
        acc[r] = dpbusd(acc[r], hi, group_of(x[r] + 8 * v + 4));
      }
    }
    // Groups 6 and 7: bit v of their codes sits in bits 3 and 7 of vector v; shifted to bits v and
    // 4 + v and selected into one byte (0xCA: a ? b : c), they are the low and high nibble.
    const __m512i a = _mm512_srli_epi16(v0, 3), b = _mm512_srli_epi16(v1, 2), c = _mm512_srli_epi16(v2, 1);
    const __m512i ab = _mm512_ternarylogic_epi32(_mm512_set1_epi8(0x11), a, b, 0xCA);
    const __m512i abc = _mm512_ternarylogic_epi32(_mm512_set1_epi8(0x44), c, ab, 0xCA);
    const __m512i g6 = _mm512_and_si512(abc, mask), g7 = _mm512_and_si512(_mm512_srli_epi16(abc, 4), mask);
    for (int r = 0; r < Rows; ++r) {
      acc[r] = dpbusd(acc[r], g6, group_of(x[r] + 24));
      acc[r] = dpbusd(acc[r], g7, group_of(x[r] + 28));
    }
  } else {
    const __m512i mask = _mm512_set1_epi8(3);
    for (int v = 0; v < 2; ++v) {
      const __m512i packed = _mm512_loadu_si512(codes + 64 * v);
      for (int j = 0; j < 4; ++j) {
        const __m512i q = _mm512_and_si512(j == 0 ? packed : _mm512_srli_epi16(packed, 2 * j), mask);
        for (int r = 0; r < Rows; ++r) acc[r] = dpbusd(acc[r], q, group_of(x[r] + 16 * v + 4 * j));
      }
    }
  }
}

template <int Bits, int Rows>
void panel_rows(int64_t r0, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out, float* y,
                int64_t ldy, int64_t p) {
  const int64_t blocks = w.blocks(), block = w.block(), subs = block / 32;
  const int64_t vectors_per_sub = Bits == 3 ? 3 : Bits;  // 64-byte vectors per 32 codes
  const int64_t panel_block_bytes = subs * vectors_per_sub * 64;
  const uint8_t* codes = w.panel_codes().data() + p * blocks * panel_block_bytes;
  const uint16_t* scales = w.panel_scales().data() + p * blocks * P;
  const uint8_t* zeros = w.panel_zero_points().data() + p * blocks * P;
  const bool symmetric = w.symmetric();
  const __m512i zero = _mm512_set1_epi32(1 << (Bits - 1));
  __m512 acc[Rows];
  for (int r = 0; r < Rows; ++r) acc[r] = _mm512_setzero_ps();
  for (int64_t b = 0; b < blocks; ++b) {
    __m512i sums[Rows];
    const int8_t* xb[Rows];
    for (int r = 0; r < Rows; ++r) sums[r] = _mm512_setzero_si512(), xb[r] = x.xq + (r0 + r) * x.stride + b * block;
    const uint8_t* cb = codes + b * panel_block_bytes;
    for (int64_t s = 0; s < subs; ++s) {
      sub_block<Bits, Rows>(cb + s * vectors_per_sub * 64, xb, sums);
      for (int r = 0; r < Rows; ++r) xb[r] += 32;
    }
    const __m512i z = symmetric ? zero : _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(zeros + b * P)));
    const __m512 d = _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(scales + b * P)));
    for (int r = 0; r < Rows; ++r) {
      const int64_t i = (r0 + r) * x.blocks + b;
      const __m512i dot = _mm512_sub_epi32(sums[r], _mm512_mullo_epi32(z, _mm512_set1_epi32(x.t[i])));
      acc[r] = _mm512_fmadd_ps(_mm512_mul_ps(d, _mm512_set1_ps(x.s[i])), _mm512_cvtepi32_ps(dot), acc[r]);
    }
  }
  const int64_t remaining = w.n() - p * P, cols = remaining < P ? remaining : P;
  const __mmask16 store = static_cast<__mmask16>((1u << cols) - 1u);
  const __m512 bias = out.bias ? _mm512_maskz_loadu_ps(store, out.bias + p * P) : _mm512_setzero_ps();
  for (int r = 0; r < Rows; ++r) {
    __m512 v = out.bias ? _mm512_add_ps(acc[r], bias) : acc[r];
    if (out.relu) v = _mm512_max_ps(v, _mm512_setzero_ps());
    _mm512_mask_storeu_ps(y + (r0 + r) * ldy + p * P, store, v);
  }
}

template <int Bits>
void panels(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out, float* y, int64_t ldy,
            int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    int64_t r = 0;
    for (; r + kMaxRows <= m; r += kMaxRows) panel_rows<Bits, kMaxRows>(r, x, w, out, y, ldy, p);
    switch (m - r) {
      case 3: panel_rows<Bits, 3>(r, x, w, out, y, ldy, p); break;
      case 2: panel_rows<Bits, 2>(r, x, w, out, y, ldy, p); break;
      case 1: panel_rows<Bits, 1>(r, x, w, out, y, ldy, p); break;
      default: break;
    }
  }
}

}  // namespace

void block_gemm_s8_avx512vnni(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out,
                              float* y, int64_t ldy, int64_t p0, int64_t p1) {
  switch (w.bits()) {
    case 4: return panels<4>(m, x, w, out, y, ldy, p0, p1);
    case 3: return panels<3>(m, x, w, out, y, ldy, p0, p1);
    default: return panels<2>(m, x, w, out, y, ldy, p0, p1);
  }
}

}  // namespace lowbit::kernels
