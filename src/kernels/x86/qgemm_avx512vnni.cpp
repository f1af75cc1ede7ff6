// The AVX-512 VNNI integer GEMM (x86 CPUs with AVX-512 F/BW/VL + VNNI, e.g. AMD Zen 4, Intel Ice
// Lake and later). Same contract as the AVX2 and reference kernels (lowbit/qgemm.h), bit-exact
// with them.
//
// vpdpbusd multiplies 4 unsigned bytes by 4 signed bytes and adds the 4 products to an s32 lane,
// with no intermediate saturation (unlike AVX2's vpmaddubsw). Activations are s8, so they are
// offset into u8 (a + 128, one XOR while A is packed) and the offset is removed afterwards:
//   sum_k a w = sum_k (a + 128) w - 128 * sum_k w[n][k]
// where the second term is a per-column constant folded into the column offset. Every step wraps
// modulo 2^32 exactly as the reference's s32 sum does, so results are identical.
//
// Layout (QWeights::vnni_layout, built at pack time when the CPU has VNNI): panels of 16 output
// columns; per panel, ceil(K/4) groups of 16 columns x 4 consecutive k (64 bytes, one zmm load),
// zero-padded in K and N. All weight storages (s8, s4, s2, ...) are unpacked to s8 in this layout:
// batch >= 5 GEMMs are compute-bound, so bytes are cheaper than unpacking in the loop. Batch 1-4
// GEMVs on packed low-bit weights stay on the AVX2 kernel, which streams the packed nibbles.
//
// Micro-kernel: 8 rows x 32 columns (two panels) in 16 zmm accumulators; per 4-k group 2 weight
// loads and 8 broadcasts of 4 activation bytes feed 16 vpdpbusd (1024 multiply-adds). vpdpbusd
// is issued through inline asm (see dpbusd: GCC 12's intrinsic cost ~2% at 1024^3). The
// accumulators start at the column offset, so the output stage does not add it. The output
// stage is fused on the finished tile: weight-zero-point term, then either the fixed-point
// requantization in 64-bit lanes (vpmuldq, variable arithmetic shift per column) with a
// saturating pack to s8, or the float scaling (same operation order as the reference, no FMA
// contraction). Threads split rows (or columns for short batches), never K.
//
// Measured on Zen 4 (2 vCPUs), 1024^3, 1 thread, lowbit vs oneDNN u8s8s32 with AVX-512 VNNI,
// each variant alternating with oneDNN in the same process: 0.93-0.95x before this revision;
// + asm vpdpbusd 0.96-0.97x; + cheaper output stage (below) 0.96-0.98x. The requantization used to
// cost ~4% of the whole GEMM (about 18 vector operations per 16 outputs, on the pipes vpdpbusd
// needs); it is now 9 when every result of a panel fits s32 and the clamp is the plain s8 one,
// 12 with another clamp or zero point, 15 in the general case (see requantize). Tried and
// dropped, all slower or no better at 1024^3: K blocking (kc = 256 or 512 k, s32 partial tiles
// kept between blocks, so that a two-panel weight slice fits the 32 KiB L1D): 8% / 4% slower, the
// per-tile start-up and partial loads/stores cost more than the L2 traffic they save; blocking
// rows so that A stays in L2: no change; 12x32, 6x64 and 8x48 tiles (one generic R x P
// template): 0-3% slower than 8x32 built the same way; software prefetch of the weights 8 or 16
// groups ahead: no gain; unrolling the k loop by 2: 3% slower.
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

// Accumulators start at the panel's offset (integer addition is associative, so this is the
// reference's sum + offset exactly) and take 4 k per step for all R rows and one or two panels.
template <int R, bool kTwo>
void accumulate(const uint8_t* a, int64_t a_stride, int64_t groups, const int8_t* w0, const int8_t* w1, __m512i offset0,
                __m512i offset1, __m512i (&acc)[R][2]) {
  for (int r = 0; r < R; ++r) acc[r][0] = offset0, acc[r][1] = offset1;
  for (int64_t g = 0; g < groups; ++g) {
    const __m512i b0 = _mm512_load_si512(w0 + g * 64);
    const __m512i b1 = kTwo ? _mm512_load_si512(w1 + g * 64) : _mm512_setzero_si512();
    for (int r = 0; r < R; ++r) {
      // One broadcast load of 4 activation bytes (vpbroadcastd from memory).
      const __m512i av = _mm512_set1_epi32(*reinterpret_cast<const int32_t*>(a + r * a_stride + g * 4));
      acc[r][0] = dpbusd(acc[r][0], av, b0);
      if constexpr (kTwo) acc[r][1] = dpbusd(acc[r][1], av, b1);
    }
  }
}

template <int R, bool kF32>
void tile(const uint8_t* a, int64_t a_stride, int64_t groups, const int8_t* w0, const int8_t* w1, bool two_panels,
          const PanelConstants* pc, int64_t row0, int64_t col0, int64_t n, const QOutputStage& out, Clamp clamp,
          const ClampConstants& cc, void* c, int64_t ldc) {
  __m512i acc[R][2];
  if (two_panels)
    accumulate<R, true>(a, a_stride, groups, w0, w1, pc[0].offset, pc[1].offset, acc);
  else
    accumulate<R, false>(a, a_stride, groups, w0, w1, pc[0].offset, _mm512_setzero_si512(), acc);
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

template <bool kF32>
void run_tile(int rows, const uint8_t* a, int64_t a_stride, int64_t groups, const int8_t* w0, const int8_t* w1, bool two,
              const PanelConstants* pc, int64_t row0, int64_t col0, int64_t n, const QOutputStage& out, Clamp clamp,
              const ClampConstants& cc, void* c, int64_t ldc) {
#define LOWBIT_TILE(R) tile<R, kF32>(a, a_stride, groups, w0, w1, two, pc, row0, col0, n, out, clamp, cc, c, ldc)
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
  // Packed rows of whole 4-byte groups; from K = 64 on, padded to whole cache lines.
  const int64_t stride = groups * 4 < 64 ? groups * 4 : (groups * 4 + 63) / 64 * 64;
  thread_local Buffer<uint8_t> packed;
  thread_local Buffer<PanelConstants> constants;
  if (!packed.reserve(static_cast<size_t>(m * stride)) || !constants.reserve(static_cast<size_t>(panels))) return false;
  // A as u8 (a + 128), rows padded to whole groups; the padding meets zero weights. Rows are packed
  // by the thread that computes them, just before their first tile (see work below).
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  uint8_t* const a_packed = packed.data;  // the workers must not name the thread_local buffer
  auto pack_rows = [&](int64_t r0, int64_t r1) {
    for (int64_t i = r0; i < r1; ++i) {
      uint8_t* row = a_packed + i * stride;
      const int8_t* src = a + i * lda;
      for (int64_t p = 0; p < stride; p += 64) {  // bytes past K become 0x80
        const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(64, k - p)), store = std::min<int64_t>(64, stride - p);
        const __mmask64 mask = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
        const __mmask64 store_mask = store == 64 ? ~__mmask64{0} : ((__mmask64{1} << store) - 1);
        _mm512_mask_storeu_epi8(row + p, store_mask, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, src + p), flip));
      }
    }
  };
  const int32_t* sums = w.row_sums().data();
  for (int64_t q = 0; q < panels; ++q) {
    int32_t offset[kPanel] = {}, mult[kPanel] = {}, shift[kPanel] = {};
    for (int64_t j = q * kPanel; j < std::min(n, (q + 1) * kPanel); ++j) {
      offset[j % kPanel] = static_cast<int32_t>(static_cast<uint32_t>(out.column_offset[j]) - 128u * static_cast<uint32_t>(sums[j]));
      if (kF32) continue;
      mult[j % kPanel] = out.multiplier[j].multiplier, shift[j % kPanel] = out.multiplier[j].shift;
    }
    constants.data[q] = panel_constants(offset, mult, shift);
  }
  const Clamp clamp = clamp_kind(out);
  const ClampConstants cc = clamp_constants(out);
  const int8_t* layout = static_cast<const int8_t*>(w.vnni_layout().raw());
  const int64_t row_tiles = (m + kRows - 1) / kRows, pairs = (panels + 1) / 2;
  const PanelConstants* pcs = constants.data;
  // pack: this worker owns rows [t0, t1) tiles and packs them during its first pair of panels.
  auto work = [&](int64_t t0, int64_t t1, int64_t q0, int64_t q1, bool pack) {
    for (int64_t q = q0; q < q1; ++q) {  // a pair of panels stays in L1 while the row tiles pass
      const int8_t* w0 = layout + (2 * q) * groups * 64;
      const bool two = 2 * q + 1 < panels;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row0 = t * kRows;
        if (pack && q == q0) pack_rows(row0, std::min<int64_t>(m, row0 + kRows));
        run_tile<kF32>(static_cast<int>(std::min<int64_t>(kRows, m - row0)), a_packed + row0 * stride, stride, groups, w0,
                       w0 + groups * 64, two, pcs + 2 * q, row0, 2 * q * kPanel, n, out, clamp, cc, c, ldc);
      }
    }
  };
  const int threads = (m * n * k < (int64_t{1} << 18)) ? 1 : num_threads();
  if (threads <= 1) {
    work(0, row_tiles, 0, pairs, true);
    return true;
  }
  const bool split_rows = row_tiles >= 2 * threads || row_tiles >= pairs;
  if (!split_rows) pack_rows(0, m);  // every thread reads every row: pack them first (few rows)
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
