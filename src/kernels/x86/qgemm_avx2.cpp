// The AVX2 integer GEMM: s8 activations x (s8 | packed 4-bit | packed 2-bit) weights, exact s32
// accumulation, fused requantization to s8 or scaling to f32 (contract: kernels/qgemm.h).
//
// Exactness (the "16-bit saturation" of vpmaddubsw, which multiplies u8 x s8 and adds each pair
// of products into s16 with saturation):
//   s8 weights:   no vpmaddubsw at all. Weights are prepacked as s16 (QWeights layout) and A is
//                 widened to s16 while packed; vpmaddwd multiplies s16 x s16 and adds each pair
//                 into s32: |pair| <= 2 * 128 * 127 = 32512, exact (vpmaddwd can only wrap for
//                 two products of -32768 * -32768). The alternative the design note describes,
//                 vpmaddubsw(|a|, vpsignb(w, a)) (exact too: |a| <= 128 as u8, w * sign(a) in
//                 [-127, 127], pairs <= 32512), needs vpsignb + vpmaddubsw + vpmaddwd per 32
//                 multiply-adds, and on Zen the three seem to share the two multiply pipes
//                 (a first vpsignb kernel ran at 142 GOP/s at 1024^3 on one thread, this one at
//                 175; that vpsignb build also had GCC storing accumulators every k step, so the
//                 comparison is indicative, not exact).
//   4/2-bit:      weights are stored unsigned (code + 8 / + 2, in [0, 15] / [0, 3]) and are the
//                 unsigned operand of vpmaddubsw, a the signed one: pair sums <= 2 * 15 * 128 =
//                 3840, so two such results (one 8-k group) are even added in s16 before
//                 widening. The offset is removed afterwards: raw = sum a * u - offset * sum_k a.
//   vpmaddwd widens to s32 (with ones for the low-bit path) and vpaddd accumulates, wrapping like
//   the reference's s32 sum.
//
// Micro-kernels (C tile in ymm s32 accumulators, weights streamed with unit stride from the
// prepacked 16-column panels, A read from the packed copy by 4-byte broadcasts):
//   s8:      6 rows x 16 columns, 12 accumulators; per 2-k group 2 weight loads, 6 broadcasts,
//            12 vpmaddwd + 12 vpaddd for 192 multiply-adds (the 4 vector ALU pipes are full).
//   4/2-bit: 4 rows x 16 columns; per group two 32-byte loads are unpacked in registers (one
//            shift and one AND per plane, shared by the 4 rows), then per row and 8 k
//            2 vpmaddubsw + vpaddw + vpmaddwd + vpaddd.
// A is copied once per call into rows padded to whole groups (zeros; s16 for s8 weights), with
// the row sums for the low-bit offset.
//
// Blocking: for each block of MC rows of packed A (<= ~192 KiB, L2) the 16-column weight panels
// are swept one by one, each panel staying in L1/L2 while all the block's row tiles pass over it.
// K is not blocked: a tile owns the whole reduction (so the output stage runs once, on finished
// sums, with no s32 scratch); for large K the panel streams from L2 at 32 bytes per 192
// multiply-adds, far below L2 bandwidth. Batch 1-4 (GEMV) is the same loop with one tile of M
// rows per panel: the weights stream once, and packed 4-bit panels are unpacked in registers.
//
// Output stage, vectorized over 8 columns: acc = raw + column_offset - wzp * row_offset (vpmulld,
// wrapping), then either the fixed-point requantization (x * m + 2^(s-1)) >> s in 64-bit lanes:
// vpmuldq on the even and the odd s32 lanes, and an arithmetic right shift built from the logical
// one (AVX2 has no vpsraq) by flipping the sign bit: for |y| < 2^63, floor(y / 2^s) =
// ((y ^ 2^63) >>> s) - 2^(63-s); then clamps (the int32 saturation is subsumed by the clamp to
// [clamp_lo - zp, clamp_hi - zp], which lies inside int32) and packs to s8. Or, for f32 output,
// ((float(acc) * row_scale) * column_scale) + bias, ReLU: the reference's operations exactly
// (no FMA contraction), so f32 results are bit-identical to the reference too.
//
// Threads: C is split into a tm x tn grid of row tiles x column panels (split along M and N only,
// never K: every output gets the same operations for any thread count). A is packed
// cooperatively (rows split among the team, then a barrier). Column splits fall on whole
// 64-byte lines of C (no false sharing). Below 250k multiply-adds the call stays on the caller.
// The packed-A buffer is thread_local to the caller, 64-byte aligned, grown on demand; if it
// cannot be had the call runs the reference (kernels never throw).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "kernels/x86/avx2_util.h"
#include "kernels/x86/scratch.h"
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

#define LOWBIT_ALWAYS_INLINE inline __attribute__((always_inline))

namespace lowbit::kernels {
namespace {

constexpr int kNR = 16;  // == QWeights::kLayoutPanel
static_assert(kNR == QWeights::kLayoutPanel);
constexpr int64_t kABlockBytes = 192 * 1024;

// ------------------------------------------------------------------------------------------------
// Buffers

// Packed A and its row sums, per thread (kernels/x86/scratch.h).
Buffer<uint8_t>& a_buffer() noexcept {
  thread_local Buffer<uint8_t> buffer;
  return buffer;
}

LOWBIT_ALWAYS_INLINE __m256i bcast4(const int8_t* p) noexcept {
  int32_t v;
  std::memcpy(&v, p, 4);
  return _mm256_set1_epi32(v);
}

// ------------------------------------------------------------------------------------------------
// Micro-kernels: acc[r][h] (8 s32 lanes, columns 8h..8h+7 of the panel) = sum over the groups.

// s8 weights widened to s16 pairs (QWeights layout), A packed as s16: vpmaddwd + vpaddd.
template <int MR>
LOWBIT_ALWAYS_INLINE void dot_s16(int64_t groups, const int8_t* __restrict a, int64_t lda, const uint8_t* __restrict w,
                                  __m256i (&acc)[MR][2]) noexcept {
  // Local accumulators (not the caller's 2-D array, which GCC keeps in memory).
  __m256i c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm256_setzero_si256();
#pragma GCC unroll 2
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i w0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i w1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256i av = bcast4(a + r * lda + 4 * g);
      c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(w0, av));
      c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(w1, av));
    }
    w += 64;
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = c0[r];
    acc[r][1] = c1[r];
  }
}

// Packed BITS-bit weights (unsigned, offset applied): P = 8 / BITS planes per byte, a group
// covers 4 * P k. Planes are taken two at a time and their vpmaddubsw results added in s16
// (|pair| <= 2 * 15 * 128 = 3840, so the sum of two stays far inside s16).
template <int MR, int BITS>
LOWBIT_ALWAYS_INLINE void dot_lowbit(int64_t groups, const int8_t* __restrict a, int64_t lda,
                                     const uint8_t* __restrict w, __m256i (&acc)[MR][2]) noexcept {
  constexpr int P = 8 / BITS;
  constexpr int KG = 4 * P;
  const __m256i ones = _mm256_set1_epi16(1);
  const __m256i mask = _mm256_set1_epi8(static_cast<char>((1 << BITS) - 1));
  __m256i c0[MR], c1[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) c0[r] = c1[r] = _mm256_setzero_si256();
  for (int64_t g = 0; g < groups; ++g) {
    const __m256i v0 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w));
    const __m256i v1 = _mm256_load_si256(reinterpret_cast<const __m256i*>(w + 32));
#pragma GCC unroll 4
    for (int t = 0; t < P; t += 2) {
      const __m256i w00 = _mm256_and_si256(t == 0 ? v0 : _mm256_srli_epi16(v0, BITS * t), mask);
      const __m256i w01 = _mm256_and_si256(_mm256_srli_epi16(v0, BITS * (t + 1)), mask);
      const __m256i w10 = _mm256_and_si256(t == 0 ? v1 : _mm256_srli_epi16(v1, BITS * t), mask);
      const __m256i w11 = _mm256_and_si256(_mm256_srli_epi16(v1, BITS * (t + 1)), mask);
#pragma GCC unroll 4
      for (int r = 0; r < MR; ++r) {
        const int8_t* ar = a + r * lda + KG * g + 4 * t;
        const __m256i a0 = bcast4(ar), a1 = bcast4(ar + 4);
        const __m256i s0 = _mm256_add_epi16(_mm256_maddubs_epi16(w00, a0), _mm256_maddubs_epi16(w01, a1));
        const __m256i s1 = _mm256_add_epi16(_mm256_maddubs_epi16(w10, a0), _mm256_maddubs_epi16(w11, a1));
        c0[r] = _mm256_add_epi32(c0[r], _mm256_madd_epi16(s0, ones));
        c1[r] = _mm256_add_epi32(c1[r], _mm256_madd_epi16(s1, ones));
      }
    }
    w += 64;
  }
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    acc[r][0] = c0[r];
    acc[r][1] = c1[r];
  }
}

// ------------------------------------------------------------------------------------------------
// Problem description

struct PaddedColumns {
  int32_t col_off[kNR];
  int32_t wzp[kNR];
  FixedPointMultiplier mult[kNR];
  float cscale[kNR];
  float bias[kNR];
};

enum class Kind { S8, Bits4, Bits2 };
// Rows per micro-tile: 6 x 16 for the s16 kernel (12 accumulators, 2 weight vectors, 1
// broadcast, 1 temporary), 4 x 16 for the low-bit kernels (4 unpacked weight planes live too).
constexpr int mr_of(Kind k) { return k == Kind::S8 ? 6 : 4; }

struct Problem {
  int64_t m, n, k;
  Kind kind;
  const uint8_t* layout;
  int64_t groups;      // per panel
  int64_t panels;
  int64_t kp;          // packed A row stride (bytes): groups * k_per_group codes (s16 for s8
                       // weights), padded to a multiple of 32 bytes
  int32_t offset;      // weight code offset (low-bit signed storage), 0 otherwise
  const int8_t* a;     // caller's A
  int64_t lda;
  int8_t* ap;          // packed A [m][kp]: s16 codes (s8 weights) or s8 codes (low-bit)
  int32_t* asum;       // sum_k a[m][k] (offset != 0) or nullptr
  const QOutputStage* out;
  bool f32;
  int8_t* c8;
  float* c32;
  int64_t ldc;
  int32_t lo, hi, zp;  // s8 output: clamp acc' = apply(acc) to [lo, hi], then add zp
  bool narrow;         // every multiplier is at most 1: requant8_narrow
  int64_t mc;          // rows per A block (multiple of MR)
  const PaddedColumns* ragged;  // parameters of the last panel when N % 16 != 0
};

// Copies rows [r0, r1) of A into the packed rows (zero padded), with the row sums.
void pack_a_rows(const Problem& p, int64_t r0, int64_t r1) noexcept {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i zero = _mm256_setzero_si256();
  if (p.kind == Kind::S8) {  // widen to s16
    for (int64_t i = r0; i < r1; ++i) {
      const int8_t* src = p.a + i * p.lda;
      int8_t* dst = p.ap + i * p.kp;
      int64_t c = 0;
      for (; c + 16 <= p.k; c += 16)
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 2 * c),
                           _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + c))));
      if (c < p.k) {
        alignas(16) int8_t tail[16] = {};
        std::memcpy(tail, src + c, static_cast<size_t>(p.k - c));
        _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 2 * c),
                           _mm256_cvtepi8_epi16(_mm_load_si128(reinterpret_cast<const __m128i*>(tail))));
        c += 16;
      }
      for (; 2 * c < p.kp; c += 16) _mm256_store_si256(reinterpret_cast<__m256i*>(dst + 2 * c), zero);
    }
    return;
  }
  for (int64_t i = r0; i < r1; ++i) {
    const int8_t* src = p.a + i * p.lda;
    int8_t* dst = p.ap + i * p.kp;
    int64_t c = 0;
    for (; c + 32 <= p.k; c += 32)
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + c),
                         _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + c)));
    if (c < p.k) {
      alignas(32) int8_t tail[32] = {};
      std::memcpy(tail, src + c, static_cast<size_t>(p.k - c));
      _mm256_store_si256(reinterpret_cast<__m256i*>(dst + c), _mm256_load_si256(reinterpret_cast<const __m256i*>(tail)));
      c += 32;
    }
    for (; c < p.kp; c += 32) _mm256_store_si256(reinterpret_cast<__m256i*>(dst + c), zero);
    if (p.asum) {  // sum of (a + 128) by vpsadbw, minus 128 per byte (padding zeros included)
      __m256i s = zero;
      for (c = 0; c < p.kp; c += 32)
        s = _mm256_add_epi64(
            s, _mm256_sad_epu8(_mm256_xor_si256(_mm256_load_si256(reinterpret_cast<const __m256i*>(dst + c)), flip), zero));
      alignas(32) int64_t l[4];
      _mm256_store_si256(reinterpret_cast<__m256i*>(l), s);
      p.asum[i] = static_cast<int32_t>(static_cast<uint32_t>(l[0] + l[1] + l[2] + l[3] - 128 * p.kp));
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Output stage

// Requant4, load_requant8, requant4 and store_partial_bytes: avx2_util.h.
using avx2::load_requant8;
using avx2::requant4;
using avx2::Requant4;
using avx2::store_partial_bytes;

// Column parameters of one panel: pointers into the caller's arrays, or (ragged last panel)
// into padded copies.
struct Columns {
  const int32_t* col_off;
  const int32_t* wzp;
  const FixedPointMultiplier* mult;
  const float* cscale;
  const float* bias;
};

void fill_padded_columns(const Problem& p, int64_t j, int nv, PaddedColumns& pad) noexcept {
  const QOutputStage& o = *p.out;
  for (int c = 0; c < kNR; ++c) {
    const bool in = c < nv;
    pad.col_off[c] = in ? o.column_offset[j + c] : 0;
    pad.wzp[c] = in && o.weight_zero_point ? o.weight_zero_point[j + c] : 0;
    pad.mult[c] = in && !p.f32 ? o.multiplier[j + c] : FixedPointMultiplier{0, 1};
    pad.cscale[c] = in && p.f32 ? o.column_scale[j + c] : 0.0f;
    pad.bias[c] = in && p.f32 && o.bias ? o.bias[j + c] : 0.0f;
  }
}

// The column parameters of the panel starting at column j (nv valid columns).
LOWBIT_ALWAYS_INLINE Columns panel_columns(const Problem& p, int64_t j, int nv) noexcept {
  const QOutputStage& o = *p.out;
  if (nv == kNR)
    return {o.column_offset + j, o.weight_zero_point ? o.weight_zero_point + j : nullptr,
            p.f32 ? nullptr : o.multiplier + j, p.f32 ? o.column_scale + j : nullptr,
            p.f32 && o.bias ? o.bias + j : nullptr};
  const PaddedColumns& pad = *p.ragged;  // the ragged last panel, padded once per call
  return {pad.col_off, o.weight_zero_point ? pad.wzp : nullptr, pad.mult, pad.cscale, o.bias ? pad.bias : nullptr};
}

template <int MR>
// Kept out of line: inlined into the tile, GCC merges the caller's accumulator array with the
// micro-kernel's registers and then stores it on every k step (measured 175 -> 166 GOP/s).
__attribute__((noinline)) void finish(const Problem& p, __m256i (&acc)[MR][2], int64_t i, int64_t j) noexcept {
  const int nv = static_cast<int>(std::min<int64_t>(kNR, p.n - j));
  const Columns col = panel_columns(p, j, nv);
  const QOutputStage& o = *p.out;
  // acc = raw (- offset * asum) + column_offset - wzp * row_offset
  const __m256i co0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col.col_off));
  const __m256i co1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col.col_off + 8));
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    __m256i add = _mm256_setzero_si256();
    if (p.asum) add = _mm256_set1_epi32(static_cast<int32_t>(0u - static_cast<uint32_t>(p.offset) * static_cast<uint32_t>(p.asum[i + r])));
    acc[r][0] = _mm256_add_epi32(acc[r][0], _mm256_add_epi32(co0, add));
    acc[r][1] = _mm256_add_epi32(acc[r][1], _mm256_add_epi32(co1, add));
  }
  if (col.wzp) {
    const __m256i z0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col.wzp));
    const __m256i z1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(col.wzp + 8));
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256i ro = _mm256_set1_epi32(o.row_offset[i + r]);
      acc[r][0] = _mm256_sub_epi32(acc[r][0], _mm256_mullo_epi32(z0, ro));
      acc[r][1] = _mm256_sub_epi32(acc[r][1], _mm256_mullo_epi32(z1, ro));
    }
  }

  if (p.f32) {
    const __m256 cs0 = _mm256_loadu_ps(col.cscale), cs1 = _mm256_loadu_ps(col.cscale + 8);
    __m256 b0 = _mm256_setzero_ps(), b1 = b0;
    if (col.bias) {
      b0 = _mm256_loadu_ps(col.bias);
      b1 = _mm256_loadu_ps(col.bias + 8);
    }
    const __m256 zero = _mm256_setzero_ps();
#pragma GCC unroll 4
    for (int r = 0; r < MR; ++r) {
      __m256 v0 = _mm256_cvtepi32_ps(acc[r][0]), v1 = _mm256_cvtepi32_ps(acc[r][1]);
      if (o.row_scale) {
        const __m256 rs = _mm256_set1_ps(o.row_scale[i + r]);
        v0 = _mm256_mul_ps(v0, rs);
        v1 = _mm256_mul_ps(v1, rs);
      }
      v0 = _mm256_mul_ps(v0, cs0);
      v1 = _mm256_mul_ps(v1, cs1);
      // Keep the product rounded on its own, as in the reference: without this barrier GCC
      // contracts mul + add into an FMA (-mfma), which differs after cancellation.
      __asm__("" : "+x"(v0), "+x"(v1));
      if (col.bias) {
        v0 = _mm256_add_ps(v0, b0);
        v1 = _mm256_add_ps(v1, b1);
      }
      if (o.relu) {
        v0 = _mm256_max_ps(v0, zero);
        v1 = _mm256_max_ps(v1, zero);
      }
      float* dst = p.c32 + (i + r) * p.ldc + j;
      if (nv == kNR) {
        _mm256_storeu_ps(dst, v0);
        _mm256_storeu_ps(dst + 8, v1);
      } else {
        avx2::store_partial(dst, v0, v1, nv);
      }
    }
    return;
  }

  Requant4 e0, o0, e1, o1;
  __m256i add0, add1;
  load_requant8(col.mult, p.lo, p.hi, p.zp, e0, o0, add0);
  load_requant8(col.mult + 8, p.lo, p.hi, p.zp, e1, o1, add1);
  const __m256i zp = _mm256_set1_epi32(p.zp), lo = _mm256_set1_epi32(p.lo), hi = _mm256_set1_epi32(p.hi);
  const __m256i low_b0 = _mm256_sub_epi32(zp, add0), low_b1 = _mm256_sub_epi32(zp, add1);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    __m256i v[2];
#pragma GCC unroll 2
    for (int h = 0; h < 2; ++h) {
      const __m256i x = acc[r][h];
      if (p.narrow) {
        v[h] = avx2::requant8_narrow(x, h ? e1 : e0, h ? o1 : o0, h ? low_b1 : low_b0, lo, hi, zp);
        continue;
      }
      const __m256i ye = requant4(x, h ? e1 : e0);
      const __m256i yo = requant4(_mm256_srli_epi64(x, 32), h ? o1 : o0);
      v[h] = _mm256_add_epi32(_mm256_blend_epi32(ye, _mm256_slli_epi64(yo, 32), 0xAA), h ? add1 : add0);
    }
    // 16 s32 in [-128, 127] -> 16 s8 in order.
    const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(v[0], v[1]), 0xD8);
    const __m128i b8 = _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
    int8_t* dst = p.c8 + (i + r) * p.ldc + j;
    if (nv == kNR)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b8);
    else
      store_partial_bytes(dst, b8, nv);
  }
}

// ------------------------------------------------------------------------------------------------
// Tiles and the driver

template <Kind K, int MR>
void tile(const Problem& p, int64_t i, int64_t panel) noexcept {
  __m256i acc[MR][2];
  const uint8_t* w = p.layout + panel * p.groups * 64;
  const int8_t* a = p.ap + i * p.kp;
  if constexpr (K == Kind::S8)
    dot_s16<MR>(p.groups, a, p.kp, w, acc);
  else if constexpr (K == Kind::Bits4)
    dot_lowbit<MR, 4>(p.groups, a, p.kp, w, acc);
  else
    dot_lowbit<MR, 2>(p.groups, a, p.kp, w, acc);
  finish<MR>(p, acc, i, panel * kNR);
}

template <Kind K>
void tile_rows(const Problem& p, int64_t i, int64_t q, int64_t rows) noexcept {
  switch (rows) {
    case 6: tile<K, 6>(p, i, q); break;
    case 5: tile<K, 5>(p, i, q); break;
    case 4: tile<K, 4>(p, i, q); break;
    case 3: tile<K, 3>(p, i, q); break;
    case 2: tile<K, 2>(p, i, q); break;
    default: tile<K, 1>(p, i, q); break;
  }
}

template <Kind K>
void compute_rect_kind(const Problem& p, int64_t m0, int64_t m1, int64_t q0, int64_t q1) noexcept {
  constexpr int MR = mr_of(K);
  for (int64_t ic = m0; ic < m1; ic += p.mc) {
    const int64_t ic_end = std::min(m1, ic + p.mc);
    for (int64_t q = q0; q < q1; ++q) {
      int64_t i = ic;
      for (; i + MR <= ic_end; i += MR) tile<K, MR>(p, i, q);
      if (i < ic_end) tile_rows<K>(p, i, q, ic_end - i);
    }
  }
}

// Rows [m0, m1) x panels [q0, q1), by one thread.
void compute_rect(const Problem& p, int64_t m0, int64_t m1, int64_t q0, int64_t q1) noexcept {
  switch (p.kind) {
    case Kind::S8: compute_rect_kind<Kind::S8>(p, m0, m1, q0, q1); break;
    case Kind::Bits4: compute_rect_kind<Kind::Bits4>(p, m0, m1, q0, q1); break;
    default: compute_rect_kind<Kind::Bits2>(p, m0, m1, q0, q1); break;
  }
}

struct Grid {
  int tm, tn;
};

Grid choose_grid(int64_t m_tiles, int64_t n_tiles, int threads) noexcept {
  Grid best{1, 1};
  int64_t best_cost = INT64_MAX;
  for (int tm = 1; tm <= threads; ++tm) {
    if (threads % tm) continue;
    const int tn = threads / tm;
    if (tm > m_tiles || tn > n_tiles) continue;
    // Largest share in row tiles x column units; column splits (shared A, private weights) win
    // ties.
    const int64_t cost = ((m_tiles + tm - 1) / tm) * ((n_tiles + tn - 1) / tn) * 8 + (tm > 1 ? 1 : 0);
    if (cost < best_cost) {
      best_cost = cost;
      best = {tm, tn};
    }
  }
  return best;
}

inline int64_t part(int64_t count, int64_t index, int64_t parts) noexcept { return count * index / parts; }

// Returns false when the packed-A buffer cannot be had (the caller then runs the reference).
bool run(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c8, float* c32,
         int64_t ldc) noexcept {
  Problem p;
  p.m = m;
  p.n = w.n();
  p.k = w.k();
  switch (w.storage()) {
    case DType::S8: p.kind = Kind::S8; break;
    case DType::S4: case DType::U4: p.kind = Kind::Bits4; break;
    default: p.kind = Kind::Bits2; break;
  }
  const int k_per_group = p.kind == Kind::S8 ? 2 : p.kind == Kind::Bits4 ? 8 : 16;
  const int code_bytes = p.kind == Kind::S8 ? 2 : 1;
  p.layout = w.kernel_layout().data<uint8_t>();
  p.groups = w.layout_groups();
  p.panels = (p.n + kNR - 1) / kNR;
  p.kp = (p.groups * k_per_group * code_bytes + 31) / 32 * 32;
  p.offset = w.storage() == DType::S4 ? 8 : w.storage() == DType::S2 ? 2 : 0;
  p.a = a;
  p.lda = lda;
  p.out = &out;
  p.f32 = c32 != nullptr;
  p.c8 = c8;
  p.c32 = c32;
  p.ldc = ldc;
  if (!p.f32) {
    // c = sat8(min(max(zp + v, clamp_min), clamp_max)) = min(max(zp + v, lo8), hi8), lo8 <= hi8,
    // = zp + clamp(v, lo8 - zp, hi8 - zp); both bounds fit int32 (zp range checked by the caller),
    // so the clamp also performs the int32 saturation of apply().
    const int64_t hi8 = std::clamp<int64_t>(out.clamp_max, -128, 127);
    const int64_t lo8 = std::clamp<int64_t>(std::min(out.clamp_min, out.clamp_max), -128, 127);
    p.zp = out.output_zero_point;
    p.lo = static_cast<int32_t>(lo8 - p.zp);
    p.hi = static_cast<int32_t>(hi8 - p.zp);
    p.narrow = avx2::multipliers_at_most_one(out.multiplier, p.n);
  } else {
    p.zp = p.lo = p.hi = 0;
    p.narrow = false;
  }
  PaddedColumns ragged;
  p.ragged = &ragged;
  if (p.n % kNR) fill_padded_columns(p, (p.panels - 1) * kNR, static_cast<int>(p.n % kNR), ragged);
  const int mr = mr_of(p.kind);
  p.mc = std::max<int64_t>(mr, kABlockBytes / std::max<int64_t>(p.kp, 1) / mr * mr);

  // Packed A: [m][kp] codes, then m row sums (offset != 0).
  const size_t a_bytes = static_cast<size_t>(m * p.kp);
  Buffer<uint8_t>& buffer = a_buffer();
  if (!buffer.reserve(a_bytes + static_cast<size_t>(m) * 4 + 128)) return false;  // + alignment of the sums, + 64 spare
  uint8_t* buf = buffer.data;
  p.ap = reinterpret_cast<int8_t*>(buf);
  p.asum = p.offset ? reinterpret_cast<int32_t*>(buf + (a_bytes + 63) / 64 * 64) : nullptr;

  const int64_t m_tiles = (m + mr - 1) / mr;
  const double macs = static_cast<double>(m) * static_cast<double>(p.n) * static_cast<double>(std::max<int64_t>(p.k, 16));
  // A second thread pays once the work clearly exceeds a fork/join plus the barrier after the
  // packing of A (~1-2 us here): from 250k multiply-adds (256x32x64: 113 -> 184 GOP/s).
  const int threads = macs < 2.5e5 ? 1 : num_threads();
  // Column splits fall on whole 64-byte lines of C: s8 rows split every 4 panels (64 columns),
  // or two threads would write the same cache line of every row (false sharing: 256x64x784 ran
  // slower on 2 threads than on 1).
  const int64_t unit = p.f32 ? 1 : 4;
  const int64_t n_units = (p.panels + unit - 1) / unit;
  const Grid g = choose_grid(m_tiles, n_units, threads);
  const int team = g.tm * g.tn;
  if (team <= 1) {
    pack_a_rows(p, 0, m);
    compute_rect(p, 0, m, 0, p.panels);
    return true;
  }
#pragma omp parallel num_threads(team)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    pack_a_rows(p, part(m, t, nt), part(m, t + 1, nt));
#pragma omp barrier
    // If the runtime gave fewer threads than asked, each one walks several grid cells.
    for (int cell = t; cell < team; cell += nt) {
      const int ti = cell / g.tn, tj = cell % g.tn;
      const int64_t m0 = part(m_tiles, ti, g.tm) * mr, m1 = std::min(m, part(m_tiles, ti + 1, g.tm) * mr);
      compute_rect(p, m0, m1, std::min(p.panels, part(n_units, tj, g.tn) * unit),
                   std::min(p.panels, part(n_units, tj + 1, g.tn) * unit));
    }
  }
  return true;
}

}  // namespace

void qgemm_s8_avx2(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
                   int64_t ldc) {
  if (m <= 0 || w.n() <= 0) return;
  if (!run(m, a, lda, w, out, c, nullptr, ldc)) qgemm_s8_ref(m, a, lda, w, out, c, ldc);
}

void qgemm_s8_f32_avx2(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                       int64_t ldc) {
  if (m <= 0 || w.n() <= 0) return;
  if (!run(m, a, lda, w, out, nullptr, c, ldc)) qgemm_s8_f32_ref(m, a, lda, w, out, c, ldc);
}

void row_sums_s8_avx2(int64_t m, int64_t k, const int8_t* a, int64_t lda, int32_t* sums) {
  const __m256i flip = _mm256_set1_epi8(static_cast<char>(0x80));
  const __m256i zero = _mm256_setzero_si256();
  for (int64_t i = 0; i < m; ++i) {
    const int8_t* row = a + i * lda;
    __m256i s = zero;
    int64_t c = 0;
    for (; c + 32 <= k; c += 32)
      s = _mm256_add_epi64(
          s, _mm256_sad_epu8(_mm256_xor_si256(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(row + c)), flip), zero));
    alignas(32) int64_t l[4];
    _mm256_store_si256(reinterpret_cast<__m256i*>(l), s);
    int64_t total = l[0] + l[1] + l[2] + l[3] - 128 * c;
    for (; c < k; ++c) total += row[c];
    sums[i] = static_cast<int32_t>(static_cast<uint32_t>(total));
  }
}

}  // namespace lowbit::kernels

#undef LOWBIT_ALWAYS_INLINE
