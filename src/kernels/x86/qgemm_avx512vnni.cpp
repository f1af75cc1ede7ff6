// The AVX-512 VNNI integer GEMM (x86 CPUs with AVX-512 F/BW/VL + VNNI, e.g. AMD Zen 4, Intel Ice
// Lake and later). Same contract as the AVX2 and reference kernels (kernels/qgemm.h), bit-exact
// with them.
//
// vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products to an s32 lane,
// with no intermediate saturation (unlike AVX2's vpmaddubsw). The weights are the unsigned operand,
// stored offset (w + 128, once, at pack time), and the s8 activations the signed one, read where
// they are (no copy of A when K is a multiple of 4); the offset is removed per row:
//   sum_k a w = sum_k a (w + 128) - 128 * sum_k a[m][k]
// (the row sums take one read of A). Every step wraps modulo 2^32 exactly as the reference's s32
// sum does, so results are identical.
//
// Layout (QWeights::vnni_layout, built at pack time when the CPU has VNNI): panels of 16 output
// columns; per panel, ceil(K/4) groups of 16 columns x 4 consecutive k (64 bytes, one zmm load),
// zero-padded in K and N. All weight storages (s8, s4, s2, ...) are unpacked to u8 in this layout:
// batch >= 5 GEMMs are compute-bound, so bytes are cheaper than unpacking in the loop. Batch 1-4
// GEMVs on packed low-bit weights stay on the AVX2 kernel, which streams the packed nibbles.
//
// Micro-kernels, two panels (32 columns) wide. The bulk of a GEMM with f32 output (dynamic
// quantization), or with s8 output and no weight zero points (quantized Linear and Conv layers with
// symmetric weights), runs through FullTiles:
// 6 rows x 32 columns in 12 zmm accumulators, per 4-k group 2 weight loads and 6 broadcasts of 4
// activation bytes feed 12 vpdpbusd; the k loop is asm, and each tile's sums stay in registers to
// be requantized (or scaled to f32) and stored inside the next tile's k loop. Everything else
// (other s8 output stages, rows past whole 6-row tiles, partial pairs) takes `tile`: 8 rows x 32
// columns in 16 accumulators (the dpbusd wrapper is inline asm too: GCC 12's intrinsic cost ~2% at
// 1024^3), then the output stage. The accumulators start at the column offset minus the row's
// 128 * sum_k a, so the output stage adds neither. The output stage: weight-zero-point term, then
// either the fixed-point requantization in 64-bit lanes (vpmuldq, variable arithmetic shift per
// column) with a saturating pack to s8, or the float scaling (same operation order as the
// reference, no FMA contraction). Loop order: blocks of pairs whose weights fill half the L2;
// within a block, each row tile visits every pair while its rows stay in L1. Threads split rows
// (FullTiles' row tiles claimed one at a time), or columns for short batches; never K.
//
// Measured on Zen 4 (2 vCPUs; vpdpbusd peak 458-466 GOP/s on one core, 902-926 on both, from
// peak_vpdpbusd in bench/bench_qgemm.cpp), 1024^3, lowbit vs oneDNN u8s8s32 with AVX-512 VNNI,
// alternating in one process: 0.93-0.95x at first; + asm vpdpbusd 0.96-0.97x; + cheaper
// requantization 0.96-0.98x (9 vector operations per 16 outputs when every result of a panel fits
// s32 and the clamp is the plain s8 one, 12 with another clamp or zero point, 15 in the general
// case, see requantize); + the output stage of 8x32 tiles interleaved into the next tile's k loop
// (sums parked in memory); + weights as the unsigned operand (A read in place): about parity
// (0.99-1.00x median). Then, measured with scratch loops: of the other vector operations only
// vpmuldq and vmulps take vpdpbusd slots (one each; shifts, shuffles, adds, packs, loads and single
// stores run alongside for free), but a burst of 16 stores (parking 16 sums) costs ~2%; hence 6x32
// tiles with the sums kept in registers (+1.5%), blocks of pairs (+1%), dynamic row tiles on 2
// threads: median 1.03x at 1 thread, 1.04x at 2 over 21 runs of bench/qgemm_ratios.py (median 95%
// and 97.5% of the vpdpbusd peak; oneDNN 94% and 95%; see the README). Tried and dropped, all slower or no
// better at 1024^3: K blocking (kc = 256 or 512 k, s32 partial tiles kept between blocks): 8% / 4%
// slower; 12x32, 6x64 and 8x48 tiles with sums parked in memory: 0-3% slower than 8x32; software
// prefetch of the weights: no gain; unrolling the k loop by 2: 3% slower; padding A's rows: no
// change; broadcasts as vpdpbusd memory operands ({1to16}) instead of vpbroadcastd: ~1% slower;
// preparing the row sums lazily (per row tile, on its first visit) instead of in one pass: no
// change; streaming (non-temporal) output stores: no gain.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>

#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/x86/avx512_common.h"
#include "kernels/paths.h"

namespace lowbit::kernels {
namespace {

constexpr int kRows = 8;

// Accumulators start at the panel's offset minus the row's 128 * sum_k a (integer addition is
// associative, so this ends as the reference's sum + offset exactly) and take 4 k per step for all
// R rows and one or two panels.
template <int R, bool kTwo>
void accumulate(const int8_t* a, int64_t a_stride, int64_t groups, const uint8_t* w0, const uint8_t* w1, __m512i offset0,
                __m512i offset1, const int32_t* row_correction, __m512i (&acc)[R][2]) {
  for (int r = 0; r < R; ++r) {
    const __m512i corr = _mm512_set1_epi32(row_correction[r]);
    acc[r][0] = _mm512_sub_epi32(offset0, corr), acc[r][1] = _mm512_sub_epi32(offset1, corr);
  }
  for (int64_t g = 0; g < groups; ++g) {
    const __m512i b0 = _mm512_load_si512(w0 + g * 64);
    const __m512i b1 = kTwo ? _mm512_load_si512(w1 + g * 64) : _mm512_setzero_si512();
    for (int r = 0; r < R; ++r) {
      // One broadcast load of 4 activation bytes (vpbroadcastd from memory).
      int32_t four;
      std::memcpy(&four, a + r * a_stride + g * 4, 4);
      const __m512i av = _mm512_set1_epi32(four);
      acc[r][0] = dpbusd(acc[r][0], b0, av);
      if constexpr (kTwo) acc[r][1] = dpbusd(acc[r][1], b1, av);
    }
  }
}

// The reference's s32 accumulator of 16 columns of one row from the tile's sums (column offset
// included): less the weight-zero-point term when there is one (wzp: those columns' zero points).
inline __m512i less_zero_points(__m512i v, const QOutputStage& out, int64_t row, __m512i wzp) {
  return out.weight_zero_point ? _mm512_sub_epi32(v, _mm512_mullo_epi32(wzp, _mm512_set1_epi32(out.row_offset[row]))) : v;
}

// The float output stage of those 16 columns, as the reference computes it: times the row's scale,
// times the column scales, plus the bias, then ReLU. The column vectors (cs, bias) are the caller's,
// loaded once per panel or per vector, masked at the edge.
inline __m512 float_stage(__m512i v, const QOutputStage& out, int64_t row, __m512 cs, __m512 bias) {
  __m512 f = _mm512_cvtepi32_ps(v);
  if (out.row_scale) f = _mm512_mul_ps(f, _mm512_set1_ps(out.row_scale[row]));
  f = _mm512_mul_ps(f, cs);
  if (out.bias) f = _mm512_add_ps(f, bias);
  if (out.relu) f = _mm512_max_ps(f, _mm512_setzero_ps());
  return f;
}

template <int R, bool kF32>
void tile(const int8_t* a, int64_t a_stride, int64_t groups, const uint8_t* w0, const uint8_t* w1, bool two_panels,
          const PanelConstants* pc, const int32_t* row_correction, int64_t row0, int64_t col0, int64_t n,
          const QOutputStage& out, Clamp clamp, const ClampConstants& cc, void* c, int64_t ldc) {
  __m512i acc[R][2];
  if (two_panels)
    accumulate<R, true>(a, a_stride, groups, w0, w1, pc[0].offset, pc[1].offset, row_correction, acc);
  else
    accumulate<R, false>(a, a_stride, groups, w0, w1, pc[0].offset, _mm512_setzero_si512(), row_correction, acc);
  const int panels = two_panels ? 2 : 1;
  for (int p = 0; p < panels; ++p) {
    const int64_t col = col0 + p * kPanel;
    const int64_t valid = std::min<int64_t>(kPanel, n - col);
    if (valid <= 0) continue;
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
    const __m512i wzp = out.weight_zero_point ? _mm512_maskz_loadu_epi32(mask, out.weight_zero_point + col) : _mm512_setzero_si512();
    auto value = [&](int r) { return less_zero_points(acc[r][p], out, row0 + r, wzp); };
    if constexpr (kF32) {
      const __m512 cs = _mm512_maskz_loadu_ps(mask, out.column_scale + col);
      const __m512 bias = out.bias ? _mm512_maskz_loadu_ps(mask, out.bias + col) : _mm512_setzero_ps();
      for (int r = 0; r < R; ++r)
        _mm512_mask_storeu_ps(static_cast<float*>(c) + (row0 + r) * ldc + col, mask,
                              float_stage(value(r), out, row0 + r, cs, bias));
    } else {
      int8_t* dst = static_cast<int8_t*>(c) + row0 * ldc + col;
      const PanelConstants& k = pc[p];
      switch (k.fits_s32 ? clamp : Clamp::kS64) {
        case Clamp::kPlain:
          for (int r = 0; r < R; ++r) _mm_mask_storeu_epi8(dst + r * ldc, mask, requantize<Clamp::kPlain>(value(r), k, cc));
          break;
        case Clamp::kS32:
          for (int r = 0; r < R; ++r) _mm_mask_storeu_epi8(dst + r * ldc, mask, requantize<Clamp::kS32>(value(r), k, cc));
          break;
        case Clamp::kS64:
          for (int r = 0; r < R; ++r) _mm_mask_storeu_epi8(dst + r * ldc, mask, requantize<Clamp::kS64>(value(r), k, cc));
          break;
      }
    }
  }
}

// Full 6 x 32 tiles with an s8 output stage without weight zero points (the bulk of a large GEMM
// or of a quantized layer), run back to back by one function so that each tile's 12 accumulators
// stay in registers after its k loop: they are requantized (requantize<kPlain or kS32>, as `tile`
// uses) inside the next tile's k loop, one 16-lane vector between two stretches of groups, and
// stored there as 16 s8 results. The k loop is asm so that the accumulators stay pinned: 12
// accumulators + 12 pending sums + 2 weight vectors + 3 broadcasts = 29 of the 32 zmm registers
// (the requantization's temporaries reuse the broadcasts'). Why: anything issued as a burst
// between two k loops idles the multiply-add pipe (measured: 16 zmm stores in a row cost ~2% of a
// 1024^3 GEMM, the same 16 stores spread over the loop nothing), and an 8-row tile has no
// registers left to keep its sums in.
constexpr int kFullRows = 6;
constexpr int64_t kPairBlockBytes = int64_t{512} << 10;  // see `block` in qgemm_vnni

// What FullTiles' flush writes: s8 through requantize<kPlain> or <kS32>, or f32 (tile's float
// stage, the same operations in the same order: weight-zero-point term, then scales and bias).
enum class FullOut { kPlain, kS32, kF32 };

struct FullTiles {
  const int8_t* a;                      // row r at a + r * a_stride, whole 4-byte groups
  int64_t a_stride, groups;
  const uint8_t* layout;                // QWeights::vnni_layout
  const PanelConstants* pcs;            // per panel
  const int32_t* row_correction;        // per row
  void* c;                              // int8_t or float (kF32)
  int64_t ldc;
  const QOutputStage* out;              // the float stage's scales, bias and weight zero points
  // `tiles` row tiles of kFullRows rows from row r0, panel pairs [q0, q1), visited as
  //   for each block of `pair_block` pairs: for each row tile: for each pair of the block
  // (the block's weights stay in L2 while the rows pass; each row tile's activations are
  // reused from L1 across the block's pairs). Pairs with fast[q] false are skipped.
  // With `next` (shared by the threads, starting at 0), the (block, row tile) items are claimed
  // one at a time in that order instead: dynamic scheduling across threads.
  // The output stage: s8 through requantize<kPlain or kS32> with cc from clamp_constants, or f32.
  template <FullOut kOut>
  void run(int64_t r0, int64_t tiles, int64_t q0, int64_t q1, int64_t pair_block, const bool* fast,
           const ClampConstants& cc, std::atomic<int64_t>* next = nullptr) const;
};

template <FullOut kOut>
void FullTiles::run(int64_t r0, int64_t tiles, int64_t q0, int64_t q1, int64_t pair_block, const bool* fast,
                    const ClampConstants& cc, std::atomic<int64_t>* next) const {
  const int64_t s1 = a_stride;
  int64_t ends[2 * kFullRows];  // the pending vector j is flushed after group ends[j]
  for (int j = 0; j < 2 * kFullRows; ++j) ends[j] = groups * (j + 1) / (2 * kFullRows + 1);
  __m512i p00, p01, p10, p11, p20, p21, p30, p31, p40, p41, p50, p51;  // the previous tile's sums
  const PanelConstants* ppc = nullptr;  // its panel constants (null: nothing pending)
  int64_t prow = 0, pcol = 0;           // and its first row and column
  auto flush = [&](__m512i v, int j) __attribute__((always_inline)) {
    const int64_t row = prow + (j >> 1), col = pcol + (j & 1) * kPanel;
    if constexpr (kOut == FullOut::kF32) {  // whole pairs: no masks
      const QOutputStage& o = *out;
      const __m512i wzp = o.weight_zero_point ? _mm512_loadu_si512(o.weight_zero_point + col) : _mm512_setzero_si512();
      const __m512 bias = o.bias ? _mm512_loadu_ps(o.bias + col) : _mm512_setzero_ps();
      _mm512_storeu_ps(static_cast<float*>(c) + row * ldc + col,
                       float_stage(less_zero_points(v, o, row, wzp), o, row, _mm512_loadu_ps(o.column_scale + col), bias));
    } else {
      constexpr Clamp kClamp = kOut == FullOut::kPlain ? Clamp::kPlain : Clamp::kS32;
      _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<int8_t*>(c) + row * ldc + col), requantize<kClamp>(v, ppc[j & 1], cc));
    }
  };
  const int64_t items = (q1 - q0 + pair_block - 1) / pair_block * tiles;
  for (int64_t i = 0;; ++i) {
    const int64_t item = next != nullptr ? next->fetch_add(1, std::memory_order_relaxed) : i;
    if (item >= items) break;
    const int64_t qb = q0 + item / tiles * pair_block, t = item % tiles;
    for (int64_t q = qb; q < std::min(q1, qb + pair_block); ++q) {
      if (!fast[q]) continue;
      const int64_t row0 = r0 + t * kFullRows;
      const int8_t* a0 = a + row0 * a_stride;
      const int8_t* a3 = a0 + 3 * a_stride;
      const uint8_t* w0 = layout + 2 * q * groups * 64;
      const uint8_t* w1 = w0 + groups * 64;
      const PanelConstants* pc = pcs + 2 * q;
      const int32_t* corr = row_correction + row0;
      auto start = [&](int r, int p) { return _mm512_sub_epi32(pc[p].offset, _mm512_set1_epi32(corr[r])); };
      __m512i c00 = start(0, 0), c01 = start(0, 1), c10 = start(1, 0), c11 = start(1, 1), c20 = start(2, 0),
              c21 = start(2, 1), c30 = start(3, 0), c31 = start(3, 1), c40 = start(4, 0), c41 = start(4, 1),
              c50 = start(5, 0), c51 = start(5, 1);
      // Two statements (an asm statement takes at most 30 operands); the weights travel from the
      // first to the second as operands.
      auto step = [&](int64_t g) __attribute__((always_inline)) {
        __m512i b0, b1, x0, x1, x2;
        asm volatile(
            "vmovdqa64 (%[w0]), %[b0]\n\t"
            "vmovdqa64 (%[w1]), %[b1]\n\t"
            "vpbroadcastd (%[p]), %[x0]\n\t"
            "vpbroadcastd (%[p],%[s1]), %[x1]\n\t"
            "vpbroadcastd (%[p],%[s1],2), %[x2]\n\t"
            "vpdpbusd %[x0], %[b0], %[c00]\n\t"
            "vpdpbusd %[x0], %[b1], %[c01]\n\t"
            "vpdpbusd %[x1], %[b0], %[c10]\n\t"
            "vpdpbusd %[x1], %[b1], %[c11]\n\t"
            "vpdpbusd %[x2], %[b0], %[c20]\n\t"
            "vpdpbusd %[x2], %[b1], %[c21]\n\t"
            : [c00] "+v"(c00), [c01] "+v"(c01), [c10] "+v"(c10), [c11] "+v"(c11), [c20] "+v"(c20), [c21] "+v"(c21),
              [b0] "=&v"(b0), [b1] "=&v"(b1), [x0] "=&v"(x0), [x1] "=&v"(x1), [x2] "=&v"(x2)
            : [w0] "r"(w0 + g * 64), [w1] "r"(w1 + g * 64), [p] "r"(a0 + g * 4), [s1] "r"(s1)
            : "memory");
        asm volatile(
            "vpbroadcastd (%[p]), %[x0]\n\t"
            "vpbroadcastd (%[p],%[s1]), %[x1]\n\t"
            "vpbroadcastd (%[p],%[s1],2), %[x2]\n\t"
            "vpdpbusd %[x0], %[b0], %[c30]\n\t"
            "vpdpbusd %[x0], %[b1], %[c31]\n\t"
            "vpdpbusd %[x1], %[b0], %[c40]\n\t"
            "vpdpbusd %[x1], %[b1], %[c41]\n\t"
            "vpdpbusd %[x2], %[b0], %[c50]\n\t"
            "vpdpbusd %[x2], %[b1], %[c51]\n\t"
            : [c30] "+v"(c30), [c31] "+v"(c31), [c40] "+v"(c40), [c41] "+v"(c41), [c50] "+v"(c50), [c51] "+v"(c51),
              [x0] "=&v"(x0), [x1] "=&v"(x1), [x2] "=&v"(x2)
            : [b0] "v"(b0), [b1] "v"(b1), [p] "r"(a3 + g * 4), [s1] "r"(s1)
            : "memory");
      };
      int64_t g = 0;
      if (ppc != nullptr) {
#define LOWBIT_CHUNK(J, P) \
  for (; g < ends[J]; ++g) step(g); \
  flush(P, J);
        LOWBIT_CHUNK(0, p00) LOWBIT_CHUNK(1, p01) LOWBIT_CHUNK(2, p10) LOWBIT_CHUNK(3, p11)
        LOWBIT_CHUNK(4, p20) LOWBIT_CHUNK(5, p21) LOWBIT_CHUNK(6, p30) LOWBIT_CHUNK(7, p31)
        LOWBIT_CHUNK(8, p40) LOWBIT_CHUNK(9, p41) LOWBIT_CHUNK(10, p50) LOWBIT_CHUNK(11, p51)
#undef LOWBIT_CHUNK
      }
      for (; g < groups; ++g) step(g);
      p00 = c00, p01 = c01, p10 = c10, p11 = c11, p20 = c20, p21 = c21;
      p30 = c30, p31 = c31, p40 = c40, p41 = c41, p50 = c50, p51 = c51;
      ppc = pc, prow = row0, pcol = 2 * q * kPanel;
    }
  }
  if (ppc != nullptr) {
    flush(p00, 0), flush(p01, 1), flush(p10, 2), flush(p11, 3), flush(p20, 4), flush(p21, 5);
    flush(p30, 6), flush(p31, 7), flush(p40, 8), flush(p41, 9), flush(p50, 10), flush(p51, 11);
  }
}

template <bool kF32>
void run_tile(int rows, const int8_t* a, int64_t a_stride, int64_t groups, const uint8_t* w0, const uint8_t* w1, bool two,
              const PanelConstants* pc, const int32_t* row_correction, int64_t row0, int64_t col0, int64_t n,
              const QOutputStage& out, Clamp clamp, const ClampConstants& cc, void* c, int64_t ldc) {
#define LOWBIT_TILE(R) tile<R, kF32>(a, a_stride, groups, w0, w1, two, pc, row_correction, row0, col0, n, out, clamp, cc, c, ldc)
  switch (rows) {
    case 8: return LOWBIT_TILE(8);
    case 7: return LOWBIT_TILE(7);
    case 6: return LOWBIT_TILE(6);
    case 5: return LOWBIT_TILE(5);
    case 4: return LOWBIT_TILE(4);
    case 3: return LOWBIT_TILE(3);
    case 2: return LOWBIT_TILE(2);
    default: return LOWBIT_TILE(1);
  }
#undef LOWBIT_TILE
}

// Returns false (nothing written) if a buffer cannot be had; the caller then uses another path.
template <bool kF32>
bool qgemm_vnni(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, void* c, int64_t ldc) {
  const int64_t n = w.n(), k = w.k(), groups = (k + 3) / 4, panels = (n + kPanel - 1) / kPanel;
  // A is read in place when its rows are whole 4-byte groups; otherwise rows are copied with zero
  // padding to whole groups (from K = 64 on, to whole cache lines); the padding meets zero weights.
  const bool in_place = k % 4 == 0;
  const int64_t stride = in_place ? lda : groups * 4 < 64 ? groups * 4 : (groups * 4 + 63) / 64 * 64;
  thread_local Buffer<int8_t> packed;
  thread_local Buffer<int32_t> corrections;
  thread_local Buffer<PanelConstants> constants;
  thread_local Buffer<bool> fast_pairs;
  if ((!in_place && !packed.reserve(static_cast<size_t>(m * stride))) || !corrections.reserve(static_cast<size_t>(m)) ||
      !constants.reserve(static_cast<size_t>(panels)) || !fast_pairs.reserve(static_cast<size_t>((panels + 1) / 2)))
    return false;
  // The workers must not name the thread_local buffers.
  const int8_t* const a_rows = in_place ? a : packed.data;
  int8_t* const a_packed = packed.data;
  int32_t* const row_correction = corrections.data;
  // Per row: 128 * sum_k a (modulo 2^32), and the copy when A is not read in place. Done by the
  // threads that compute the rows (see work and the parallel region below).
  const __m512i ones = _mm512_set1_epi8(1);
  auto prepare_rows = [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const int8_t* src = a + i * lda;
      __m512i sum = _mm512_setzero_si512();
      for (int64_t p = 0; p < k; p += 64) {
        sum = dpbusd(sum, ones, _mm512_maskz_loadu_epi8(first_bytes(k - p), src + p));
      }
      row_correction[i] = static_cast<int32_t>(128u * static_cast<uint32_t>(_mm512_reduce_add_epi32(sum)));
      if (in_place) continue;
      int8_t* row = a_packed + i * stride;
      for (int64_t p = 0; p < stride; p += 64)  // bytes past K become 0
        _mm512_mask_storeu_epi8(row + p, first_bytes(stride - p), _mm512_maskz_loadu_epi8(first_bytes(k - p), src + p));
    }
  };
  for (int64_t q = 0; q < panels; ++q)
    constants.data[q] = panel_constants(out, q * kPanel, std::min<int64_t>(kPanel, n - q * kPanel), kF32);
  const Clamp clamp = clamp_kind(out);
  const ClampConstants cc = clamp_constants(out);
  const uint8_t* layout = static_cast<const uint8_t*>(w.vnni_layout().raw());
  const PanelConstants* pcs = constants.data;
  // f32 output, and s8 output without weight zero points (and with a sane output zero point), run
  // full 6-row tiles of full pairs through FullTiles (the output stage interleaved into the k
  // loops); everything else goes through `tile`, 8 rows at a time.
  const bool defer = kF32 || (clamp != Clamp::kS64 && !out.weight_zero_point);
  const int64_t row_tiles = (m + kRows - 1) / kRows, pairs = (panels + 1) / 2;
  bool* const fast = fast_pairs.data;
  for (int64_t q = 0; q < pairs; ++q)
    fast[q] = defer && 2 * q * kPanel + 2 * kPanel <= n && (kF32 || (pcs[2 * q].fits_s32 && pcs[2 * q + 1].fits_s32));
  const FullTiles full{a_rows, stride, groups, layout, pcs, row_correction, c, ldc, &out};
  // Pairs per block: their weights fill about half of a 1 MiB L2 (16 pairs at K = 1024).
  const int64_t block =
      std::clamp<int64_t>(kPairBlockBytes / (std::max<int64_t>(groups, 1) * 128), 1, std::max<int64_t>(pairs, 1));
  auto run_full = [&](int64_t r0, int64_t tiles, int64_t q0, int64_t q1, std::atomic<int64_t>* next) {
    if constexpr (kF32)
      full.run<FullOut::kF32>(r0, tiles, q0, q1, block, fast, cc, next);
    else if (clamp == Clamp::kPlain)
      full.run<FullOut::kPlain>(r0, tiles, q0, q1, block, fast, cc, next);
    else
      full.run<FullOut::kS32>(r0, tiles, q0, q1, block, fast, cc, next);
  };
  // Tiles that FullTiles does not take (all rows of the other pairs, the rows past whole 6-row
  // tiles of the fast ones), 8 rows at a time: rows [r0, r1) of pair q, of which the first
  // `full_rows` are done if the pair is fast. With `prepare`, each tile's rows are prepared
  // just before it (the caller's first pair).
  auto rest = [&](int64_t r0, int64_t r1, int64_t full_rows, int64_t q, bool prepare) {
    const uint8_t* w0 = layout + (2 * q) * groups * 64;
    for (int64_t row0 = r0 + (fast[q] ? full_rows : 0); row0 < r1; row0 += kRows) {
      const int64_t rows = std::min<int64_t>(kRows, r1 - row0);
      if (prepare) prepare_rows(row0, row0 + rows);
      run_tile<kF32>(static_cast<int>(rows), a_rows + row0 * stride, stride, groups, w0, w0 + groups * 64, 2 * q + 1 < panels,
                     pcs + 2 * q, row_correction + row0, row0, 2 * q * kPanel, n, out, clamp, cc, c, ldc);
    }
  };
  // Rows [r0, r1) x pairs [q0, q1) by one thread; `prepare`: those rows are not prepared yet.
  auto work = [&](int64_t r0, int64_t r1, int64_t q0, int64_t q1, bool prepare) {
    int64_t full_rows = 0;
    if (defer) {
      if (prepare) prepare_rows(r0, r1);
      prepare = false;
      const int64_t tiles = (r1 - r0) / kFullRows;
      run_full(r0, tiles, q0, q1, nullptr);
      full_rows = tiles * kFullRows;
    }
    for (int64_t q = q0; q < q1; ++q) rest(r0, r1, full_rows, q, prepare && q == q0);  // a pair stays in L1 while rows pass
  };
  const int threads = (m * n * k < (int64_t{1} << 18)) ? 1 : num_threads();
  if (threads <= 1) {
    work(0, m, 0, pairs, true);
    return true;
  }
  const bool split_rows = row_tiles >= 2 * threads || row_tiles >= pairs;
  // Rows split with FullTiles: the threads prepare their share of the rows, then claim FullTiles'
  // row tiles one at a time (per block of pairs), so that a thread slowed down by something else
  // on the machine does not hold up the call; the leftover tiles are split by pairs.
  const bool dynamic = defer && split_rows;
  std::atomic<int64_t> next{0};
  if (!split_rows) prepare_rows(0, m);  // every thread reads every row: prepare them first (few rows)
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
    if (dynamic) {
      prepare_rows(m * id / count, m * (id + 1) / count);
#pragma omp barrier
      const int64_t full_tiles = m / kFullRows;
      run_full(0, full_tiles, 0, pairs, &next);
      for (int64_t q = id; q < pairs; q += count) rest(0, m, full_tiles * kFullRows, q, false);
    } else if (split_rows) {  // whole 8-row tiles
      auto bound = [&](int64_t i) { return std::min(m, row_tiles * i / count * kRows); };
      work(bound(id), bound(id + 1), 0, pairs, true);
    } else {
      work(0, m, pairs * id / count, pairs * (id + 1) / count, false);
    }
  }
  return true;
}

}  // namespace

bool qgemm_s8_vnni(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
                   int64_t ldc) {
  return qgemm_vnni<false>(m, a, lda, w, out, c, ldc);
}

bool qgemm_s8_f32_vnni(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                       int64_t ldc) {
  return qgemm_vnni<true>(m, a, lda, w, out, c, ldc);
}

}  // namespace lowbit::kernels
