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
// loads and 8 broadcasts of 4 activation bytes feed 16 vpdpbusd (1024 multiply-adds). (12-row
// tiles measured 3% slower at 1024^3 and much slower for N = 10.) The output
// stage is fused on the finished tile: column offset, weight-zero-point term, then either the
// fixed-point requantization in 64-bit lanes (vpmuldq, variable arithmetic shift per column),
// clamp and saturating pack to s8, or the float scaling (same operation order as the reference,
// no FMA contraction). Threads split rows (or columns for short batches), never K.
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

struct Prepared {  // per call, per column
  Buffer<int32_t> column_offset, multiplier, shift;
};

template <int R, bool kTwo>
void accumulate(const uint8_t* a, int64_t a_stride, int64_t groups, const int8_t* w0, const int8_t* w1, __m512i (&acc)[R][2]) {
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_si512();
  for (int64_t g = 0; g < groups; ++g) {
    const __m512i b0 = _mm512_load_si512(w0 + g * 64);
    const __m512i b1 = kTwo ? _mm512_load_si512(w1 + g * 64) : _mm512_setzero_si512();
    for (int r = 0; r < R; ++r) {
      // One broadcast load of 4 activation bytes (vpbroadcastd from memory).
      const __m512i av = _mm512_broadcastd_epi32(_mm_loadu_si32(a + r * a_stride + g * 4));
      acc[r][0] = _mm512_dpbusd_epi32(acc[r][0], av, b0);
      if constexpr (kTwo) acc[r][1] = _mm512_dpbusd_epi32(acc[r][1], av, b1);
    }
  }
}

template <int R, bool kF32>
void tile(const uint8_t* a, int64_t a_stride, int64_t groups, const int8_t* w0, const int8_t* w1, bool two_panels,
          int64_t row0, int64_t col0, int64_t n, const QOutputStage& out, const Prepared& prep, void* c, int64_t ldc) {
  __m512i acc[R][2];
  if (two_panels)
    accumulate<R, true>(a, a_stride, groups, w0, w1, acc);
  else
    accumulate<R, false>(a, a_stride, groups, w0, w1, acc);
  const int panels = two_panels ? 2 : 1;
  for (int p = 0; p < panels; ++p) {
    const int64_t col = col0 + p * kPanel;
    const int64_t valid = std::min<int64_t>(kPanel, n - col);
    if (valid <= 0) continue;
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
    const __m512i offset = _mm512_maskz_loadu_epi32(mask, prep.column_offset.data + col);
    const __m512i wzp = out.weight_zero_point ? _mm512_maskz_loadu_epi32(mask, out.weight_zero_point + col) : _mm512_setzero_si512();
    if constexpr (kF32) {
      const __m512 cs = _mm512_maskz_loadu_ps(mask, out.column_scale + col);
      const __m512 bias = out.bias ? _mm512_maskz_loadu_ps(mask, out.bias + col) : _mm512_setzero_ps();
      for (int r = 0; r < R; ++r) {
        __m512i v = _mm512_add_epi32(acc[r][p], offset);
        if (out.weight_zero_point) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(wzp, _mm512_set1_epi32(out.row_offset[row0 + r])));
        __m512 f = _mm512_cvtepi32_ps(v);
        if (out.row_scale) f = _mm512_mul_ps(f, _mm512_set1_ps(out.row_scale[row0 + r]));
        f = _mm512_mul_ps(f, cs);
        if (out.bias) f = _mm512_add_ps(f, bias);
        if (out.relu) f = _mm512_max_ps(f, _mm512_setzero_ps());
        _mm512_mask_storeu_ps(static_cast<float*>(c) + (row0 + r) * ldc + col, mask, f);
      }
    } else {
      const __m512i mult = _mm512_maskz_loadu_epi32(mask, prep.multiplier.data + col);
      const __m512i shift = _mm512_maskz_loadu_epi32(mask, prep.shift.data + col);
      const __m512i low32 = _mm512_set1_epi64(0xffffffffLL);
      const __m512i shift_even = _mm512_and_si512(shift, low32), shift_odd = _mm512_srli_epi64(shift, 32);
      const __m512i one = _mm512_set1_epi64(1);
      const __m512i round_even = _mm512_sllv_epi64(one, _mm512_sub_epi64(shift_even, one));
      const __m512i round_odd = _mm512_sllv_epi64(one, _mm512_sub_epi64(shift_odd, one));
      const __m512i mult_odd = _mm512_srli_epi64(mult, 32);
      const __m512i lo = _mm512_set1_epi64(int64_t{out.clamp_min} - out.output_zero_point);
      const __m512i hi = _mm512_set1_epi64(int64_t{out.clamp_max} - out.output_zero_point);
      const __m512i zero_point = _mm512_set1_epi32(out.output_zero_point);
      for (int r = 0; r < R; ++r) {
        __m512i v = _mm512_add_epi32(acc[r][p], offset);
        if (out.weight_zero_point) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(wzp, _mm512_set1_epi32(out.row_offset[row0 + r])));
        // (v * m + 2^(s-1)) >> s in 64-bit lanes, even and odd s32 lanes separately.
        __m512i even = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, mult), round_even), shift_even);
        __m512i odd = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), mult_odd), round_odd),
                                        shift_odd);
        even = _mm512_min_epi64(_mm512_max_epi64(even, lo), hi);
        odd = _mm512_min_epi64(_mm512_max_epi64(odd, lo), hi);
        __m512i y = _mm512_or_si512(_mm512_and_si512(even, low32), _mm512_slli_epi64(odd, 32));
        y = _mm512_add_epi32(y, zero_point);
        _mm_mask_storeu_epi8(static_cast<int8_t*>(c) + (row0 + r) * ldc + col, mask, _mm512_cvtsepi32_epi8(y));
      }
    }
  }
}

template <bool kF32>
void run_tile(int rows, const uint8_t* a, int64_t a_stride, int64_t groups, const int8_t* w0, const int8_t* w1, bool two,
              int64_t row0, int64_t col0, int64_t n, const QOutputStage& out, const Prepared& prep, void* c, int64_t ldc) {
  switch (rows) {
    case 8: return tile<8, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    case 7: return tile<7, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    case 6: return tile<6, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    case 5: return tile<5, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    case 4: return tile<4, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    case 3: return tile<3, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    case 2: return tile<2, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
    default: return tile<1, kF32>(a, a_stride, groups, w0, w1, two, row0, col0, n, out, prep, c, ldc);
  }
}

// Returns false (nothing written) if a buffer cannot be had; the caller then uses another path.
template <bool kF32>
bool qgemm_vnni(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, void* c, int64_t ldc) {
  const int64_t n = w.n(), k = w.k(), groups = (k + 3) / 4, panels = (n + kPanel - 1) / kPanel;
  const int64_t stride = (groups * 4 + 63) / 64 * 64;
  thread_local Buffer<uint8_t> packed;
  thread_local Prepared prep;
  const size_t columns = static_cast<size_t>(panels * kPanel);
  if (!packed.reserve(static_cast<size_t>(m * stride)) || !prep.column_offset.reserve(columns) ||
      !prep.multiplier.reserve(columns) || !prep.shift.reserve(columns))
    return false;
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
  for (int64_t j = 0; j < n; ++j)
    prep.column_offset.data[j] = static_cast<int32_t>(static_cast<uint32_t>(out.column_offset[j]) - 128u * static_cast<uint32_t>(sums[j]));
  if (!kF32)
    for (int64_t j = 0; j < n; ++j) prep.multiplier.data[j] = out.multiplier[j].multiplier, prep.shift.data[j] = out.multiplier[j].shift;
  const int8_t* layout = static_cast<const int8_t*>(w.vnni_layout().raw());
  const int64_t row_tiles = (m + kRows - 1) / kRows, pairs = (panels + 1) / 2;
  const Prepared& p = prep;
  const uint8_t* a_packed = packed.data;
  auto work = [&](int64_t t0, int64_t t1, int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {  // a pair of panels stays in L1 while the row tiles pass
      const int8_t* w0 = layout + (2 * q) * groups * 64;
      const bool two = 2 * q + 1 < panels;
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t row0 = t * kRows;
        run_tile<kF32>(static_cast<int>(std::min<int64_t>(kRows, m - row0)), a_packed + row0 * stride, stride, groups, w0,
                       w0 + groups * 64, two, row0, 2 * q * kPanel, n, out, p, c, ldc);
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
