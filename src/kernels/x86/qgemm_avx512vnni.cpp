// The AVX-512 VNNI integer GEMM (x86 CPUs with AVX-512 F/BW/VL + VNNI, e.g. AMD Zen 4, Intel Ice
// Lake and later). Same contract as the AVX2 and reference kernels (lowbit/qgemm.h), bit-exact
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
// Micro-kernel: 8 rows x 32 columns (two panels) in 16 zmm accumulators; per 4-k group 2 weight
// loads and 8 broadcasts of 4 activation bytes feed 16 vpdpbusd (1024 multiply-adds). Full tiles
// (full_tile_deferred) run this loop as asm with the broadcasts inside vpdpbusd ({1to16}); the
// others use the dpbusd wrapper (inline asm too: GCC 12's intrinsic cost ~2% at 1024^3). The
// accumulators start at the column offset minus the row's 128 * sum_k a, so the output stage adds
// neither. The output stage: weight-zero-point term, then either the fixed-point requantization in
// 64-bit lanes (vpmuldq, variable arithmetic shift per column) with a saturating pack to s8, or the
// float scaling (same operation order as the reference, no FMA contraction). Full tiles with the
// plain s8 stage defer it into the next tile's k loop. Threads split rows (or columns for short
// batches), never K.
//
// Measured on Zen 4 (2 vCPUs), 1024^3, 1 thread, lowbit vs oneDNN u8s8s32 with AVX-512 VNNI, each
// variant alternating with oneDNN in the same process: 0.93-0.95x at first; + asm vpdpbusd
// 0.96-0.97x; + cheaper requantization 0.96-0.98x (it cost ~4% of the GEMM at about 18 vector
// operations per 16 outputs; now 9 when every result of a panel fits s32 and the clamp is the plain
// s8 one, 12 with another clamp or zero point, 15 in the general case, see requantize); + the output
// stage of full tiles interleaved into the next tile's k loop 400-421 -> 426-430 GOP/s; + weights as
// the unsigned operand (A read in place) 430-433 GOP/s best of 3, against oneDNN's 412-434: parity
// within noise. Tried and dropped, all slower or no better at
// 1024^3: K blocking (kc = 256 or 512 k, s32 partial tiles kept between blocks, so that a
// two-panel weight slice fits the 32 KiB L1D): 8% / 4% slower, the per-tile start-up and partial
// loads/stores cost more than the L2 traffic they save; blocking rows so that A stays in L2 (8 to
// 32 tiles): no change; 12x32, 6x64 and 8x48 tiles (one generic R x P template): 0-3% slower than
// 8x32 built the same way; software prefetch of the weights 8 or 16 groups ahead: no gain;
// unrolling the k loop by 2: 3% slower; padding A's rows by 64 or 128 bytes: no change.
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>

#include "lowbit/qgemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/x86/avx512_common.h"

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
    auto value = [&](int r) {  // the reference's s32 accumulator, column offset included
      __m512i v = acc[r][p];
      if (out.weight_zero_point) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(wzp, _mm512_set1_epi32(out.row_offset[row0 + r])));
      return v;
    };
    if constexpr (kF32) {
      const __m512 cs = _mm512_maskz_loadu_ps(mask, out.column_scale + col);
      const __m512 bias = out.bias ? _mm512_maskz_loadu_ps(mask, out.bias + col) : _mm512_setzero_ps();
      for (int r = 0; r < R; ++r) {
        __m512 f = _mm512_cvtepi32_ps(value(r));
        if (out.row_scale) f = _mm512_mul_ps(f, _mm512_set1_ps(out.row_scale[row0 + r]));
        f = _mm512_mul_ps(f, cs);
        if (out.bias) f = _mm512_add_ps(f, bias);
        if (out.relu) f = _mm512_max_ps(f, _mm512_setzero_ps());
        _mm512_mask_storeu_ps(static_cast<float*>(c) + (row0 + r) * ldc + col, mask, f);
      }
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

// Full 8 x 32 tiles with the plain s8 output stage (the bulk of a large GEMM): the k loop is written
// in asm, one 4-k group per two statements, so that the 16 accumulators stay pinned in registers
// while the previous tile's requantization (requantize<Clamp::kPlain>, as `tile` uses) is
// interleaved into the loop, one 16-lane vector between groups. Issued after the loop (as `tile`
// does), those ~200 operations leave the multiply-add pipes idle for part of every tile;
// interleaved, the out-of-order core runs them alongside. (With the k loop in intrinsics, GCC
// spilled the accumulators around the interleaved code.)
struct Deferred {
  alignas(64) int32_t sums[kRows * 2][kPanel];
  int8_t* dst[kRows * 2];
  const PanelConstants* pc[kRows * 2];
  int count = 0;
  const ClampConstants* cc = nullptr;
  void flush(int j) const {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst[j]), requantize<Clamp::kPlain>(_mm512_load_si512(sums[j]), *pc[j], *cc));
  }
};

void full_tile_deferred(const int8_t* a, int64_t a_stride, int64_t groups, const uint8_t* w0, const uint8_t* w1,
                        const PanelConstants* pc, const int32_t* row_correction, int8_t* dst, int64_t ldc, Deferred& d) {
  auto start = [&](int r, int p) { return _mm512_sub_epi32(pc[p].offset, _mm512_set1_epi32(row_correction[r])); };
  __m512i c00 = start(0, 0), c01 = start(0, 1), c10 = start(1, 0), c11 = start(1, 1), c20 = start(2, 0), c21 = start(2, 1),
          c30 = start(3, 0), c31 = start(3, 1), c40 = start(4, 0), c41 = start(4, 1), c50 = start(5, 0), c51 = start(5, 1),
          c60 = start(6, 0), c61 = start(6, 1), c70 = start(7, 0), c71 = start(7, 1);
  const int64_t s1 = a_stride, s3 = 3 * a_stride;
  const int8_t* a4 = a + 4 * a_stride;
  // Two statements of 8 accumulators each (an asm statement takes at most 30 operands); the
  // weights travel from the first to the second as operands.
  auto step = [&](int64_t g) __attribute__((always_inline)) {
    __m512i b0, b1;
    asm volatile(
        "vmovdqa64 (%[w0]), %[b0]\n\t"
        "vmovdqa64 (%[w1]), %[b1]\n\t"
        "vpdpbusd (%[p])%{1to16%}, %[b0], %[c00]\n\t"
        "vpdpbusd (%[p])%{1to16%}, %[b1], %[c01]\n\t"
        "vpdpbusd (%[p],%[s1])%{1to16%}, %[b0], %[c10]\n\t"
        "vpdpbusd (%[p],%[s1])%{1to16%}, %[b1], %[c11]\n\t"
        "vpdpbusd (%[p],%[s1],2)%{1to16%}, %[b0], %[c20]\n\t"
        "vpdpbusd (%[p],%[s1],2)%{1to16%}, %[b1], %[c21]\n\t"
        "vpdpbusd (%[p],%[s3])%{1to16%}, %[b0], %[c30]\n\t"
        "vpdpbusd (%[p],%[s3])%{1to16%}, %[b1], %[c31]\n\t"
        : [c00] "+v"(c00), [c01] "+v"(c01), [c10] "+v"(c10), [c11] "+v"(c11), [c20] "+v"(c20), [c21] "+v"(c21),
          [c30] "+v"(c30), [c31] "+v"(c31), [b0] "=&v"(b0), [b1] "=&v"(b1)
        : [w0] "r"(w0 + g * 64), [w1] "r"(w1 + g * 64), [p] "r"(a + g * 4), [s1] "r"(s1), [s3] "r"(s3)
        : "memory");
    asm volatile(
        "vpdpbusd (%[p])%{1to16%}, %[b0], %[c40]\n\t"
        "vpdpbusd (%[p])%{1to16%}, %[b1], %[c41]\n\t"
        "vpdpbusd (%[p],%[s1])%{1to16%}, %[b0], %[c50]\n\t"
        "vpdpbusd (%[p],%[s1])%{1to16%}, %[b1], %[c51]\n\t"
        "vpdpbusd (%[p],%[s1],2)%{1to16%}, %[b0], %[c60]\n\t"
        "vpdpbusd (%[p],%[s1],2)%{1to16%}, %[b1], %[c61]\n\t"
        "vpdpbusd (%[p],%[s3])%{1to16%}, %[b0], %[c70]\n\t"
        "vpdpbusd (%[p],%[s3])%{1to16%}, %[b1], %[c71]\n\t"
        : [c40] "+v"(c40), [c41] "+v"(c41), [c50] "+v"(c50), [c51] "+v"(c51), [c60] "+v"(c60), [c61] "+v"(c61),
          [c70] "+v"(c70), [c71] "+v"(c71)
        : [b0] "v"(b0), [b1] "v"(b1), [p] "r"(a4 + g * 4), [s1] "r"(s1), [s3] "r"(s3)
        : "memory");
  };
  const int pending = d.count;
  int64_t g = 0;
  for (int j = 0; j < pending; ++j) {
    for (const int64_t end = groups * (j + 1) / (pending + 1); g < end; ++g) step(g);
    d.flush(j);
  }
  for (; g < groups; ++g) step(g);
  // This tile's sums wait for the next tile (or the final flush).
  const __m512i results[kRows][2] = {{c00, c01}, {c10, c11}, {c20, c21}, {c30, c31},
                                     {c40, c41}, {c50, c51}, {c60, c61}, {c70, c71}};
  d.count = 0;
  for (int r = 0; r < kRows; ++r)
    for (int p = 0; p < 2; ++p) {
      _mm512_store_si512(d.sums[d.count], results[r][p]);
      d.dst[d.count] = dst + r * ldc + p * kPanel, d.pc[d.count] = pc + p;
      ++d.count;
    }
}

void flush_all(Deferred& d) {
  for (int j = 0; j < d.count; ++j) d.flush(j);
  d.count = 0;
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
  if ((!in_place && !packed.reserve(static_cast<size_t>(m * stride))) || !corrections.reserve(static_cast<size_t>(m)) ||
      !constants.reserve(static_cast<size_t>(panels)))
    return false;
  // The workers must not name the thread_local buffers.
  const int8_t* const a_rows = in_place ? a : packed.data;
  int8_t* const a_packed = packed.data;
  int32_t* const row_correction = corrections.data;
  // Per row: 128 * sum_k a (modulo 2^32), and the copy when A is not read in place. Done by the
  // thread that computes the rows, just before their first tile (see work below).
  const __m512i ones = _mm512_set1_epi8(1);
  auto prepare_rows = [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      const int8_t* src = a + i * lda;
      __m512i sum = _mm512_setzero_si512();
      for (int64_t p = 0; p < k; p += 64) {
        const int64_t valid = std::min<int64_t>(64, k - p);
        const __mmask64 mask = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
        sum = dpbusd(sum, ones, _mm512_maskz_loadu_epi8(mask, src + p));
      }
      row_correction[i] = static_cast<int32_t>(128u * static_cast<uint32_t>(_mm512_reduce_add_epi32(sum)));
      if (in_place) continue;
      int8_t* row = a_packed + i * stride;
      for (int64_t p = 0; p < stride; p += 64) {  // bytes past K become 0
        const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(64, k - p)), store = std::min<int64_t>(64, stride - p);
        const __mmask64 mask = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
        const __mmask64 store_mask = store == 64 ? ~__mmask64{0} : ((__mmask64{1} << store) - 1);
        _mm512_mask_storeu_epi8(row + p, store_mask, _mm512_maskz_loadu_epi8(mask, src + p));
      }
    }
  };
  for (int64_t q = 0; q < panels; ++q) {
    int32_t offset[kPanel] = {}, mult[kPanel] = {}, shift[kPanel] = {};
    for (int64_t j = q * kPanel; j < std::min(n, (q + 1) * kPanel); ++j) {
      offset[j % kPanel] = out.column_offset[j];
      if (kF32) continue;
      mult[j % kPanel] = out.multiplier[j].multiplier, shift[j % kPanel] = out.multiplier[j].shift;
    }
    constants.data[q] = panel_constants(offset, mult, shift);
  }
  const Clamp clamp = clamp_kind(out);
  const ClampConstants cc = clamp_constants(out);
  const uint8_t* layout = static_cast<const uint8_t*>(w.vnni_layout().raw());
  const int64_t row_tiles = (m + kRows - 1) / kRows, pairs = (panels + 1) / 2;
  const PanelConstants* pcs = constants.data;
  // prepare: this worker owns rows [t0, t1) tiles and prepares them during its first pair of panels.
  // Full tiles defer their output stage (see full_tile_deferred) when it is the plain s8 one.
  const bool defer = !kF32 && clamp == Clamp::kPlain && !out.weight_zero_point;
  auto work = [&](int64_t t0, int64_t t1, int64_t q0, int64_t q1, bool prepare) {
    Deferred deferred;
    deferred.cc = &cc;
    for (int64_t q = q0; q < q1; ++q) {  // a pair of panels stays in L1 while the row tiles pass
      const uint8_t* w0 = layout + (2 * q) * groups * 64;
      const bool two = 2 * q + 1 < panels;
      const bool full_pair = defer && 2 * q * kPanel + 2 * kPanel <= n && pcs[2 * q].fits_s32 && pcs[2 * q + 1].fits_s32;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row0 = t * kRows;
        if (prepare && q == q0) prepare_rows(row0, std::min<int64_t>(m, row0 + kRows));
        if (full_pair && row0 + kRows <= m) {
          full_tile_deferred(a_rows + row0 * stride, stride, groups, w0, w0 + groups * 64, pcs + 2 * q, row_correction + row0,
                             static_cast<int8_t*>(c) + row0 * ldc + 2 * q * kPanel, ldc, deferred);
          continue;
        }
        run_tile<kF32>(static_cast<int>(std::min<int64_t>(kRows, m - row0)), a_rows + row0 * stride, stride, groups, w0,
                       w0 + groups * 64, two, pcs + 2 * q, row_correction + row0, row0, 2 * q * kPanel, n, out, clamp, cc, c,
                       ldc);
      }
    }
    flush_all(deferred);
  };
  const int threads = (m * n * k < (int64_t{1} << 18)) ? 1 : num_threads();
  if (threads <= 1) {
    work(0, row_tiles, 0, pairs, true);
    return true;
  }
  const bool split_rows = row_tiles >= 2 * threads || row_tiles >= pairs;
  if (!split_rows) prepare_rows(0, m);  // every thread reads every row: prepare them first (few rows)
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
    if (split_rows)
      work(row_tiles * id / count, row_tiles * (id + 1) / count, 0, pairs, true);
    else
      work(0, row_tiles, pairs * id / count, pairs * (id + 1) / count, false);
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
