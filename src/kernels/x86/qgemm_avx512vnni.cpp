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

namespace lowbit::kernels {
namespace {

constexpr int kPanel = 16;
constexpr int kRows = 8;

// A grow-only, 64-byte aligned buffer. Internal linkage on purpose: nothing compiled here with
// AVX-512 flags (no inline library template) may be picked by the linker for other files, which
// run on CPUs without AVX-512.
template <typename T>
struct Buffer {
  T* data = nullptr;
  size_t capacity = 0;
  ~Buffer() { std::free(data); }
  bool reserve(size_t count) {
    if (count <= capacity) return true;
    void* p = std::aligned_alloc(64, (count * sizeof(T) + 63) / 64 * 64);
    if (!p) return false;
    std::free(data);
    data = static_cast<T*>(p);
    capacity = count;
    return true;
  }
};

// vpdpbusd through inline asm. With the intrinsic, GCC 12 only allocates the accumulator to
// zmm0-15 and, holding 16 accumulators plus operands, copies them between zmm16-31 and zmm0-15
// around every multiply-add (2 extra moves per vpdpbusd, and stack spills): 0.95x -> 0.97x of
// oneDNN at 1024^3 when fixed. "+v" lets the accumulators live in any of zmm0-31.
inline __m512i dpbusd(__m512i acc, __m512i a, __m512i b) {
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(a), "v"(b));
  return acc;
}

// Output-stage constants of one 16-column panel, built once per call (padding columns are 0).
struct alignas(64) PanelConstants {
  __m512i offset;                    // column offset - 128 * sum_k w, the accumulators' start value
  __m512i mult, mult_odd;            // multiplier of the even / odd s32 lanes, in the low half of a 64-bit lane
  __m512i shift_even, shift_odd;     // per 64-bit lane
  __m512i round_even, round_odd;     // 2^(shift - 1)
  bool fits_s32;                     // every requantized value of this panel fits s32 (see requantize)
};

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

// Per-call clamp: kPlain when the zero point is 0 and [clamp_min, clamp_max] contains [-128, 127]
// (the saturating s32 -> s8 pack is then the whole clamp); kS32 when clamp_min - zp and
// clamp_max - zp fit s32; kS64 otherwise.
enum class Clamp { kPlain, kS32, kS64 };

struct ClampConstants {
  __m512i lo64, hi64, lo32, hi32, zero_point;
};

// (v * m + 2^(s-1)) >> s per lane, then the clamp, zero point and saturating pack to 16 bytes.
// vpmuldq multiplies the even s32 lanes to 64 bits; the odd lanes go through a 32-bit shift.
// If the panel's results fit s32 (shift >= 32, or 31 with a multiplier other than -2^31, which
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
  const int64_t stride = (groups * 4 + 63) / 64 * 64;
  thread_local Buffer<uint8_t> packed;
  thread_local Buffer<PanelConstants> constants;
  if (!packed.reserve(static_cast<size_t>(m * stride)) || !constants.reserve(static_cast<size_t>(panels))) return false;
  // A as u8 (a + 128), rows padded to whole groups; the padding meets zero weights.
  const __m512i flip = _mm512_set1_epi8(static_cast<char>(0x80));
  for (int64_t i = 0; i < m; ++i) {
    uint8_t* row = packed.data + i * stride;
    const int8_t* src = a + i * lda;
    for (int64_t p = 0; p < stride; p += 64) {  // stride is a multiple of 64; bytes past K become 0x80
      const int64_t valid = std::max<int64_t>(0, std::min<int64_t>(64, k - p));
      const __mmask64 mask = valid == 64 ? ~__mmask64{0} : ((__mmask64{1} << valid) - 1);
      _mm512_storeu_si512(row + p, _mm512_xor_si512(_mm512_maskz_loadu_epi8(mask, src + p), flip));
    }
  }
  const int32_t* sums = w.row_sums().data();
  for (int64_t q = 0; q < panels; ++q) {
    int32_t offset[kPanel] = {}, mult[kPanel] = {}, shift[kPanel] = {};
    PanelConstants& pc = constants.data[q];
    pc.fits_s32 = true;
    for (int64_t j = q * kPanel; j < std::min(n, (q + 1) * kPanel); ++j) {
      offset[j % kPanel] = static_cast<int32_t>(static_cast<uint32_t>(out.column_offset[j]) - 128u * static_cast<uint32_t>(sums[j]));
      if (kF32) continue;
      mult[j % kPanel] = out.multiplier[j].multiplier, shift[j % kPanel] = out.multiplier[j].shift;
      pc.fits_s32 = pc.fits_s32 && (shift[j % kPanel] >= 32 || (shift[j % kPanel] == 31 && mult[j % kPanel] != INT32_MIN));
    }
    pc.offset = _mm512_loadu_si512(offset);
    const __m512i m32 = _mm512_loadu_si512(mult), s32 = _mm512_loadu_si512(shift);
    const __m512i low32 = _mm512_set1_epi64(0xffffffffLL), one = _mm512_set1_epi64(1);
    pc.mult = m32;
    pc.mult_odd = _mm512_srli_epi64(m32, 32);
    pc.shift_even = _mm512_and_si512(s32, low32);
    pc.shift_odd = _mm512_srli_epi64(s32, 32);
    pc.round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(pc.shift_even, one));
    pc.round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(pc.shift_odd, one));
  }
  const int64_t zp = out.output_zero_point, lo = out.clamp_min - zp, hi = out.clamp_max - zp;
  const Clamp clamp = zp == 0 && out.clamp_min <= -128 && out.clamp_max >= 127                  ? Clamp::kPlain
                      : lo >= INT32_MIN && lo <= INT32_MAX && hi >= INT32_MIN && hi <= INT32_MAX ? Clamp::kS32
                                                                                                 : Clamp::kS64;
  const ClampConstants cc{_mm512_set1_epi64(lo), _mm512_set1_epi64(hi),
                          _mm512_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(lo, INT32_MIN, INT32_MAX))),
                          _mm512_set1_epi32(static_cast<int32_t>(std::clamp<int64_t>(hi, INT32_MIN, INT32_MAX))),
                          _mm512_set1_epi32(out.output_zero_point)};
  const int8_t* layout = static_cast<const int8_t*>(w.vnni_layout().raw());
  const int64_t row_tiles = (m + kRows - 1) / kRows, pairs = (panels + 1) / 2;
  const PanelConstants* pcs = constants.data;
  const uint8_t* a_packed = packed.data;
  auto work = [&](int64_t t0, int64_t t1, int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {  // a pair of panels stays in L1 while the row tiles pass
      const int8_t* w0 = layout + (2 * q) * groups * 64;
      const bool two = 2 * q + 1 < panels;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row0 = t * kRows;
        run_tile<kF32>(static_cast<int>(std::min<int64_t>(kRows, m - row0)), a_packed + row0 * stride, stride, groups, w0,
                       w0 + groups * 64, two, pcs + 2 * q, row0, 2 * q * kPanel, n, out, clamp, cc, c, ldc);
      }
    }
  };
  const int threads = (m * n * k < (int64_t{1} << 18)) ? 1 : num_threads();
  if (threads <= 1) {
    work(0, row_tiles, 0, pairs);
    return true;
  }
  const bool split_rows = row_tiles >= 2 * threads || row_tiles >= pairs;
#pragma omp parallel num_threads(threads)
  {
    const int64_t id = omp_get_thread_num(), count = omp_get_num_threads();
    if (split_rows)
      work(row_tiles * id / count, row_tiles * (id + 1) / count, 0, pairs);
    else
      work(0, row_tiles, pairs * id / count, pairs * (id + 1) / count);
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
