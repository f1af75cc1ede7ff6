// The AVX2/FMA fp32 GEMM: packed, cache-blocked, register-tiled (GotoBLAS/BLIS structure).
//
// C[M,N] = act(alpha * op(A) * op(B) + beta * C + bias), all row-major (contract: kernels/gemm.h).
//
// Loop nest, outermost first, and why each level exists (sizes for 32 KiB L1d, 512 KiB-1 MiB L2):
//   jc  over N in NC = 3072 columns: the packed B block (KC x NC, <= 3 MiB) lives in L3.
//   pc  over K in KC <= 256 steps:   one KC x NR micro-panel of B (16 KiB) stays in L1 while a
//                                    whole A block streams past it. KC depends only on K (equal
//                                    blocks, multiples of 8), never on the thread count.
//   ic  over M in MC = 168 rows:     the packed A block (MC x KC, 168 KiB) stays in L2 and is
//                                    reused by every B micro-panel of the jc block.
//   jr  over NR = 16 columns, ir over MR = 6 rows: the micro-kernel keeps a 6x16 tile of C in 12
//       ymm accumulators; per k step 2 B loads + 6 broadcasts feed 12 FMAs, so it is FMA-bound
//       (>= 95% of the 2 x 8-lane FMA/cycle peak when its operands are in L1).
// Packing copies op(A) into row panels laid out [k][rows] and op(B) into 16-column panels laid
// out [k][16] (zero-padded), so the micro-kernel streams both with unit stride whatever the
// storage; transposed storage is transposed 8x8 (or 4x8) at a time in registers while packing.
// Edges: a ragged end of M is cut into tiles of 4-6 rows where possible (tiles of 1-3 rows have
// too few accumulators to hide the FMA latency); a ragged end of N is computed 16 wide and stored
// piecewise (masked stores, vmaskmovps, are microcoded and slow on AMD).
//
// Small problems (the training shapes have M = 32): packing pays only when a panel is reused,
// and call overhead matters. B is read in place when op(B) rows are contiguous (B not
// transposed), K <= 64 and the row stride does not pile the rows into a few L1 sets; A is read in
// place when N <= 64 (a panel meets at most 4 B panels). With both in place and one K block, no
// buffer is touched at all.
//
// Epilogue: the first K block writes alpha*acc (+ beta*C when beta != 0; C is never read when
// beta == 0), later K blocks add alpha*acc, and the last one adds bias and applies ReLU, once,
// after the full reduction.
//
// Threads (lowbit::num_threads(), OpenMP): C is split into a grid of tm x tn rectangles, rows in
// multiples of MR and columns in multiples of NR, one per thread, choosing the grid with the
// smallest largest share (so M = 32 x N = 64 still splits into two 32 x 32 halves). With tm == 1
// every thread works on its own columns with its own buffers, no barrier at all. Otherwise the B
// block is packed cooperatively into one shared buffer (each thread packs a share of its panels,
// then a barrier) and each thread multiplies its row range against it. Work is never split
// along K, so every element of C gets the same sequence of FMAs for any thread count: 1 and N
// threads give bit-identical results. Below 400 kFLOP the call stays on the calling thread
// without entering an OpenMP region (a fork/join costs ~0.6 us, ~60 kFLOP of work, here).
//
// Buffers are thread_local, 64-byte aligned, grown on demand and reused: no allocation per call
// in steady state. If an allocation ever fails the call falls back to the reference kernel
// before writing anything (kernels never throw).
#include <immintrin.h>
#include <omp.h>

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#include "kernels/x86/avx2_util.h"
#include "kernels/gemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

namespace lowbit::kernels {
namespace {

constexpr int kMR = 6;
constexpr int kNR = 16;
constexpr int64_t kKCMax = 256;   // 16 KiB B micro-panel: half of L1d
constexpr int64_t kMCMax = 168;   // 168 x 256 x 4 = 168 KiB A block: well inside L2
constexpr int64_t kNCMax = 3072;  // 3 MiB B block: L3
constexpr int64_t kSlack = 16;    // floats after every buffer (A packing stores overrun by up to 7)

// ------------------------------------------------------------------------------------------------
// Buffers

struct AlignedBuffer {
  float* data = nullptr;
  size_t capacity = 0;  // floats
  AlignedBuffer() = default;
  AlignedBuffer(const AlignedBuffer&) = delete;
  AlignedBuffer& operator=(const AlignedBuffer&) = delete;
  ~AlignedBuffer() { std::free(data); }
  // Returns nullptr when the memory cannot be had.
  float* get(size_t floats) noexcept {
    floats += kSlack;
    if (floats > capacity) {
      std::free(data);
      capacity = 0;
      size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
      data = static_cast<float*>(std::aligned_alloc(64, bytes));
      if (!data) return nullptr;
      capacity = bytes / sizeof(float);
    }
    return data;
  }
};

AlignedBuffer& a_buffer() noexcept {
  thread_local AlignedBuffer buffer;
  return buffer;
}
AlignedBuffer& b_buffer() noexcept {
  thread_local AlignedBuffer buffer;
  return buffer;
}

// ------------------------------------------------------------------------------------------------
// Helpers

alignas(32) const int32_t kMaskTable[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};
inline __m256i lane_mask(int count) noexcept {  // lanes [0, count) set; count in [0, 8]
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kMaskTable + 8 - count));
}

#define LOWBIT_ALWAYS_INLINE inline __attribute__((always_inline))

LOWBIT_ALWAYS_INLINE void transpose8(__m256& r0, __m256& r1, __m256& r2, __m256& r3, __m256& r4, __m256& r5, __m256& r6,
                                     __m256& r7) noexcept {
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1);
  __m256 t2 = _mm256_unpacklo_ps(r2, r3), t3 = _mm256_unpackhi_ps(r2, r3);
  __m256 t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5);
  __m256 t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  __m256 s0 = _mm256_shuffle_ps(t0, t2, 0x44), s1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  __m256 s2 = _mm256_shuffle_ps(t1, t3, 0x44), s3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  __m256 s4 = _mm256_shuffle_ps(t4, t6, 0x44), s5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  __m256 s6 = _mm256_shuffle_ps(t5, t7, 0x44), s7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r0 = _mm256_permute2f128_ps(s0, s4, 0x20);
  r1 = _mm256_permute2f128_ps(s1, s5, 0x20);
  r2 = _mm256_permute2f128_ps(s2, s6, 0x20);
  r3 = _mm256_permute2f128_ps(s3, s7, 0x20);
  r4 = _mm256_permute2f128_ps(s0, s4, 0x31);
  r5 = _mm256_permute2f128_ps(s1, s5, 0x31);
  r6 = _mm256_permute2f128_ps(s2, s6, 0x31);
  r7 = _mm256_permute2f128_ps(s3, s7, 0x31);
}

// Loads 8 floats of each of `rows` (<= 8) rows starting at src (row stride ld), transposes them
// and returns them in v: v[q] holds element q of every row (zero for the missing rows).
LOWBIT_ALWAYS_INLINE void load_transpose8(const float* src, int64_t ld, int rows, __m256 v[8]) noexcept {
  if (rows <= 4) {  // half the shuffles: 4x8 -> 8 x 4, upper lanes zero
    __m256 r[4];
#pragma GCC unroll 8
    for (int i = 0; i < 4; ++i) r[i] = i < rows ? _mm256_loadu_ps(src + i * ld) : _mm256_setzero_ps();
    const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    const __m256 s[4] = {_mm256_shuffle_ps(t0, t2, 0x44), _mm256_shuffle_ps(t0, t2, 0xEE),
                         _mm256_shuffle_ps(t1, t3, 0x44), _mm256_shuffle_ps(t1, t3, 0xEE)};
#pragma GCC unroll 8
    for (int q = 0; q < 4; ++q) {
      v[q] = _mm256_zextps128_ps256(_mm256_castps256_ps128(s[q]));
      v[q + 4] = _mm256_zextps128_ps256(_mm256_extractf128_ps(s[q], 1));
    }
    return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) v[r] = r < rows ? _mm256_loadu_ps(src + r * ld) : _mm256_setzero_ps();
  transpose8(v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7]);
}

// Rows of the next micro-tile when `rows` remain. Tiles of 1..3 rows run at a fraction of the FMA
// rate (too few independent accumulators to cover the FMA latency), so ragged ends are cut into
// tiles of 4 and 5 rows where possible: 8 = 4+4, 9 = 5+4, 13 = 5+4+4 (7 = 4+3 is the exception).
inline int tile_rows(int64_t rows) noexcept {
  if (rows <= kMR) return static_cast<int>(rows);
  switch (rows % kMR) {
    case 1: return rows == 7 ? 4 : rows == 13 ? 5 : kMR;
    case 2: return rows == 8 ? 4 : kMR;
    case 3: return rows == 9 ? 5 : kMR;
    default: return kMR;
  }
}

// ------------------------------------------------------------------------------------------------
// Packing. op(A) panel of mr <= 6 rows: dst[p * mr + r] = op(A)(i + r, p0 + p).

void pack_a_panel(Transpose ta, const float* a, int64_t lda, int64_t i, int64_t mr, int64_t p0, int64_t kc,
                  float* dst) noexcept {
  if (ta == Transpose::No) {  // rows of A contiguous in k: transpose 8 k at a time
    const float* src = a + i * lda + p0;
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 v[8];
      load_transpose8(src + p, lda, static_cast<int>(mr), v);
      // Each store writes 8 floats of which mr belong to k step p+q; the rest is overwritten by
      // the next store (or lands in the next panel / the buffer slack, written later).
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(dst + (p + q) * mr, v[q]);
    }
    for (; p < kc; ++p)
      for (int r = 0; r < mr; ++r) dst[p * mr + r] = src[r * lda + p];
  } else {  // A stored [K, M]: the mr values of one k step are contiguous
    const float* src = a + p0 * lda + i;
    const __m256i mask = lane_mask(static_cast<int>(mr));
    for (int64_t p = 0; p < kc; ++p) _mm256_storeu_ps(dst + p * mr, _mm256_maskload_ps(src + p * lda, mask));
  }
}

// op(B) panel: dst[p * 16 + c] = op(B)(p0 + p, j + c), c < nv, zero for c >= nv.
void pack_b_panel(Transpose tb, const float* b, int64_t ldb, int64_t j, int64_t nv, int64_t p0, int64_t kc,
                  float* dst) noexcept {
  if (tb == Transpose::No) {  // rows of B contiguous in n
    const float* src = b + p0 * ldb + j;
    if (nv == kNR) {
      for (int64_t p = 0; p < kc; ++p) {
        _mm256_store_ps(dst + p * kNR, _mm256_loadu_ps(src + p * ldb));
        _mm256_store_ps(dst + p * kNR + 8, _mm256_loadu_ps(src + p * ldb + 8));
      }
    } else {
      const __m256i m0 = lane_mask(static_cast<int>(std::min<int64_t>(nv, 8)));
      const __m256i m1 = lane_mask(static_cast<int>(std::max<int64_t>(nv - 8, 0)));
      for (int64_t p = 0; p < kc; ++p) {
        _mm256_store_ps(dst + p * kNR, _mm256_maskload_ps(src + p * ldb, m0));
        _mm256_store_ps(dst + p * kNR + 8, _mm256_maskload_ps(src + p * ldb + 8, m1));
      }
    }
  } else {  // B stored [N, K]: column j of op(B) is row j of B, contiguous in k
    const float* src = b + j * ldb + p0;
    const int rows0 = static_cast<int>(std::min<int64_t>(nv, 8));
    const int rows1 = static_cast<int>(std::max<int64_t>(nv - 8, 0));
    int64_t p = 0;
    for (; p + 8 <= kc; p += 8) {
      __m256 v[8];
      load_transpose8(src + p, ldb, rows0, v);
#pragma GCC unroll 8
      for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (p + q) * kNR, v[q]);
      if (rows1 > 0) {
        load_transpose8(src + 8 * ldb + p, ldb, rows1, v);
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (p + q) * kNR + 8, v[q]);
      } else {
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) _mm256_store_ps(dst + (p + q) * kNR + 8, _mm256_setzero_ps());
      }
    }
    for (; p < kc; ++p)
      for (int c = 0; c < kNR; ++c) dst[p * kNR + c] = c < nv ? src[c * ldb + p] : 0.0f;
  }
}

using avx2::store_partial;

// ------------------------------------------------------------------------------------------------
// Micro-kernel: the M x nv tile of C at c gets alpha * sum_p op(A)(r, p) op(B)(p, c) through the
// tile epilogue. The K loop is unrolled twice only: deeper unrolling made GCC spill an accumulator
// in the remainder code, which costs more than it saves for the small K of the training shapes.

struct TileEpilogue {
  float alpha;
  float beta;         // multiplier of the old C when load_c
  bool load_c;        // false: C is write-only
  const float* bias;  // bias + column of the tile, or nullptr (also nullptr before the last K block)
  bool relu;          // only on the last K block
  bool plain;         // alpha == 1 and none of the above: C = acc
};

// kRowContig: op(A)(r, p) = a[r + p * a_step] (packed panels: a_step = rows; A stored [K, M]: lda).
// Otherwise  op(A)(r, p) = a[r * a_step + p] (A stored [M, K], read in place).
// op(B)(p, c) = b[p * b_step + c], 16 readable floats per k step.
template <int M, bool kRowContig>
LOWBIT_ALWAYS_INLINE void micro_kernel(int64_t kc, const float* __restrict a, int64_t a_step, const float* __restrict b,
                                       int64_t b_step, float* __restrict c, int64_t ldc, int nv,
                                       const TileEpilogue& e) noexcept {
  __m256 acc0[M], acc1[M];
#pragma GCC unroll 6
  for (int r = 0; r < M; ++r) acc0[r] = acc1[r] = _mm256_setzero_ps();
  if (e.load_c) {
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) {
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc), _MM_HINT_T0);
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 15), _MM_HINT_T0);
    }
  }

  if constexpr (kRowContig) {
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; ++p) {
      const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
      for (int r = 0; r < M; ++r) {
        const __m256 av = _mm256_broadcast_ss(a + r);
        acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
      }
      a += a_step;
      b += b_step;
    }
  } else {
    const float* ar[M];
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) ar[r] = a + r * a_step;
#pragma GCC unroll 2
    for (int64_t p = 0; p < kc; ++p) {
      const __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
      for (int r = 0; r < M; ++r) {
        const __m256 av = _mm256_broadcast_ss(ar[r] + p);
        acc0[r] = _mm256_fmadd_ps(av, b0, acc0[r]);
        acc1[r] = _mm256_fmadd_ps(av, b1, acc1[r]);
      }
      b += b_step;
    }
  }

  if (nv == kNR && e.plain) {  // C = acc: the common case of a single K block, nothing fused
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) {
      _mm256_storeu_ps(c + r * ldc, acc0[r]);
      _mm256_storeu_ps(c + r * ldc + 8, acc1[r]);
    }
    return;
  }
  const bool scale = e.alpha != 1.0f;
  const __m256 valpha = _mm256_set1_ps(e.alpha);
  const __m256 vbeta = _mm256_set1_ps(e.beta);
  const __m256 zero = _mm256_setzero_ps();
  if (nv == kNR) {
    __m256 bias0 = zero, bias1 = zero;
    if (e.bias) {
      bias0 = _mm256_loadu_ps(e.bias);
      bias1 = _mm256_loadu_ps(e.bias + 8);
    }
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) {
      float* cr = c + r * ldc;
      __m256 v0 = acc0[r], v1 = acc1[r];
      if (scale) {
        v0 = _mm256_mul_ps(valpha, v0);
        v1 = _mm256_mul_ps(valpha, v1);
      }
      if (e.load_c) {
        v0 = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cr), v0);
        v1 = _mm256_fmadd_ps(vbeta, _mm256_loadu_ps(cr + 8), v1);
      }
      if (e.bias) {
        v0 = _mm256_add_ps(v0, bias0);
        v1 = _mm256_add_ps(v1, bias1);
      }
      if (e.relu) {
        v0 = _mm256_max_ps(v0, zero);
        v1 = _mm256_max_ps(v1, zero);
      }
      _mm256_storeu_ps(cr, v0);
      _mm256_storeu_ps(cr + 8, v1);
    }
  } else {
    const __m256i m0 = lane_mask(std::min(nv, 8)), m1 = lane_mask(std::max(nv - 8, 0));
    __m256 bias0 = zero, bias1 = zero;
    if (e.bias) {
      bias0 = _mm256_maskload_ps(e.bias, m0);
      bias1 = _mm256_maskload_ps(e.bias + 8, m1);
    }
#pragma GCC unroll 6
    for (int r = 0; r < M; ++r) {
      float* cr = c + r * ldc;
      __m256 v0 = acc0[r], v1 = acc1[r];
      if (scale) {
        v0 = _mm256_mul_ps(valpha, v0);
        v1 = _mm256_mul_ps(valpha, v1);
      }
      if (e.load_c) {
        v0 = _mm256_fmadd_ps(vbeta, _mm256_maskload_ps(cr, m0), v0);
        v1 = _mm256_fmadd_ps(vbeta, _mm256_maskload_ps(cr + 8, m1), v1);
      }
      if (e.bias) {
        v0 = _mm256_add_ps(v0, bias0);
        v1 = _mm256_add_ps(v1, bias1);
      }
      if (e.relu) {
        v0 = _mm256_max_ps(v0, zero);
        v1 = _mm256_max_ps(v1, zero);
      }
      store_partial(cr, v0, v1, nv);
    }
  }
}

// One column panel (nv <= 16 columns of op(B) at b) against rows [0, rows) of the current A block:
// tile after tile, kernels inlined. Tile t starts at a + (row offset) * a_row and steps a_step
// per k, where packed panels step by their own height.
template <bool kRowContig>
void panel_tiles(int64_t kc, const float* a, int64_t a_row, bool a_packed, int64_t a_step, const float* b,
                 int64_t b_step, float* c, int64_t ldc, int64_t rows, int nv, const TileEpilogue& e) noexcept {
  for (int64_t i = 0, mr; i < rows; i += mr) {
    mr = tile_rows(rows - i);
    const float* ap = a + i * a_row;
    const int64_t as = a_packed ? mr : a_step;
    float* cp = c + i * ldc;
    switch (mr) {
      case 6: micro_kernel<6, kRowContig>(kc, ap, as, b, b_step, cp, ldc, nv, e); break;
      case 5: micro_kernel<5, kRowContig>(kc, ap, as, b, b_step, cp, ldc, nv, e); break;
      case 4: micro_kernel<4, kRowContig>(kc, ap, as, b, b_step, cp, ldc, nv, e); break;
      case 3: micro_kernel<3, kRowContig>(kc, ap, as, b, b_step, cp, ldc, nv, e); break;
      case 2: micro_kernel<2, kRowContig>(kc, ap, as, b, b_step, cp, ldc, nv, e); break;
      default: micro_kernel<1, kRowContig>(kc, ap, as, b, b_step, cp, ldc, nv, e); break;
    }
  }
}

// ------------------------------------------------------------------------------------------------
// Driver

// Whether `rows` rows `ld` floats apart, one cache line read from each, can stay in L1 together
// (32 KiB, 8-way: 64 sets of 64 B). Strides that are multiples of a large power of two map all
// rows to a few sets (ld = 1024: every row to the same set), and the panel thrashes.
inline bool l1_friendly_stride(int64_t ld, int64_t rows) noexcept {
  const int64_t bytes = ld * static_cast<int64_t>(sizeof(float));
  if (bytes % 64 != 0) return true;  // rows start at varying offsets within lines: spread out
  // 64 / gcd(line stride, 64) distinct sets: the gcd with a power of two is a power of two.
  const int64_t line_stride = bytes / 64;
  const int64_t sets = 64 >> std::min(__builtin_ctzll(static_cast<unsigned long long>(line_stride)), 6);
  return rows <= 4 * sets;  // leave half of each set to A and C
}

struct Problem {
  Transpose ta, tb;
  int64_t m, n, k;
  float alpha;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float beta;
  float* c;
  int64_t ldc;
  const float* bias;
  bool relu;
  int64_t kc;   // K block; depends only on K (bit-identical results for any thread count)
  int64_t mc;   // M block (multiple of MR)
  int64_t nc;   // N block (multiple of NR)
  bool pack_a;  // copy A blocks into panels (else read A in place)
  bool pack_b;  // copy B blocks into panels (else read B in place; needs tb == No)
};

TileEpilogue tile_epilogue(const Problem& p, int64_t pc, int64_t kc, int64_t j) noexcept {
  const bool first = pc == 0, last = pc + kc == p.k;
  TileEpilogue e;
  e.alpha = p.alpha;
  e.beta = first ? p.beta : 1.0f;
  e.load_c = !first || p.beta != 0.0f;
  e.bias = last && p.bias ? p.bias + j : nullptr;
  e.relu = last && p.relu;
  e.plain = e.alpha == 1.0f && !e.load_c && !e.bias && !e.relu;
  return e;
}

// Multiplies rows [m0, m1) of the current A block by B panels [j0, j1) (columns) of the K block
// starting at pc. `bpack` holds the packed B panels of the block whose first column is jb.
// `apack` is this thread's A buffer (mc x kc) or nullptr when A is read in place.
void macro_kernel(const Problem& p, int64_t pc, int64_t kc, int64_t m0, int64_t m1, int64_t j0, int64_t j1,
                  const float* bpack, int64_t jb, const float* apack, float* edge_b) noexcept {
  for (int64_t j = j0; j < j1; j += kNR) {
    const int nv = static_cast<int>(std::min<int64_t>(kNR, p.n - j));
    const float* bp;
    int64_t b_step;
    if (bpack) {
      bp = bpack + (j - jb) * kc;
      b_step = kNR;
    } else if (nv == kNR) {
      bp = p.b + pc * p.ldb + j;
      b_step = p.ldb;
    } else {  // the ragged last panel cannot be read 16 wide in place
      pack_b_panel(p.tb, p.b, p.ldb, j, nv, pc, kc, edge_b);
      bp = edge_b;
      b_step = kNR;
    }
    const TileEpilogue e = tile_epilogue(p, pc, kc, j);
    float* cp = p.c + m0 * p.ldc + j;
    if (apack)
      panel_tiles<true>(kc, apack, kc, true, 0, bp, b_step, cp, p.ldc, m1 - m0, nv, e);
    else if (p.ta == Transpose::Yes)
      panel_tiles<true>(kc, p.a + pc * p.lda + m0, 1, false, p.lda, bp, b_step, cp, p.ldc, m1 - m0, nv, e);
    else
      panel_tiles<false>(kc, p.a + m0 * p.lda + pc, p.lda, false, p.lda, bp, b_step, cp, p.ldc, m1 - m0, nv, e);
  }
}

void pack_a_block(const Problem& p, int64_t pc, int64_t kc, int64_t i0, int64_t i1, float* apack) noexcept {
  for (int64_t i = i0, mr; i < i1; i += mr) {
    mr = tile_rows(i1 - i);
    pack_a_panel(p.ta, p.a, p.lda, i, mr, pc, kc, apack + (i - i0) * kc);
  }
}

void pack_b_range(const Problem& p, int64_t pc, int64_t kc, int64_t j0, int64_t j1, int64_t jb, float* bpack) noexcept {
  for (int64_t j = j0; j < j1; j += kNR)
    pack_b_panel(p.tb, p.b, p.ldb, j, std::min<int64_t>(kNR, p.n - j), pc, kc, bpack + (j - jb) * kc);
}

// End of the M block starting at ic: a ragged rest shorter than MR joins the last block, so that
// it can be cut into efficient tiles (tile_rows) rather than left as a thin block of its own.
inline int64_t block_end(int64_t ic, int64_t m1, int64_t mc) noexcept {
  return m1 - ic < mc + kMR ? m1 : ic + mc;
}

// The buffers compute_rect() needs for rows [m0, m1) x columns [n0, n1); false if unavailable.
struct RectBuffers {
  float* bpack;  // packed B block, or the ragged-edge panel when B is read in place
  float* apack;  // nullptr when A is read in place
};
bool reserve_rect(const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1, RectBuffers& buf) noexcept {
  const int64_t nc_max = std::min(p.nc, (n1 - n0 + kNR - 1) / kNR * kNR);
  const int64_t mc_max = std::min(p.mc + kMR, m1 - m0);
  // In-place B needs a buffer only for the ragged last panel (ranges start at multiples of NR).
  const bool need_b = p.pack_b || (n1 == p.n && p.n % kNR != 0);
  buf.bpack = need_b ? b_buffer().get(static_cast<size_t>(p.pack_b ? nc_max * p.kc : kNR * p.kc)) : nullptr;
  buf.apack = p.pack_a ? a_buffer().get(static_cast<size_t>(mc_max * p.kc)) : nullptr;
  return (!need_b || buf.bpack) && (!p.pack_a || buf.apack);
}

// Rows [m0, m1) x columns [n0, n1) of C by one thread alone, with its own buffers (reserved).
void compute_rect(const Problem& p, int64_t m0, int64_t m1, int64_t n0, int64_t n1, const RectBuffers& buf) noexcept {
  for (int64_t jc = n0; jc < n1; jc += p.nc) {
    const int64_t jc_end = std::min(n1, jc + p.nc);
    for (int64_t pc = 0; pc < p.k; pc += p.kc) {
      const int64_t kc = std::min(p.kc, p.k - pc);
      if (p.pack_b) pack_b_range(p, pc, kc, jc, jc_end, jc, buf.bpack);
      for (int64_t ic = m0, ic_end; ic < m1; ic = ic_end) {
        ic_end = block_end(ic, m1, p.mc);
        if (buf.apack) pack_a_block(p, pc, kc, ic, ic_end, buf.apack);
        macro_kernel(p, pc, kc, ic, ic_end, jc, jc_end, p.pack_b ? buf.bpack : nullptr, jc, buf.apack, buf.bpack);
      }
    }
  }
}

bool compute_serial(const Problem& p) noexcept {
  RectBuffers buf;
  if (!reserve_rect(p, 0, p.m, 0, p.n, buf)) return false;
  compute_rect(p, 0, p.m, 0, p.n, buf);
  return true;
}

// C = act(beta * C + bias) for K == 0 (the sum is empty).
void scale_only(const Problem& p) noexcept {
  for (int64_t i = 0; i < p.m; ++i) {
    float* cr = p.c + i * p.ldc;
    for (int64_t j = 0; j < p.n; ++j) {
      float v = p.alpha * 0.0f;  // as the reference: alpha times the empty sum
      if (p.beta != 0.0f) v += p.beta * cr[j];
      if (p.bias) v += p.bias[j];
      if (p.relu) v = std::max(v, 0.0f);
      cr[j] = v;
    }
  }
}

// Thread grid: rows split tm ways (in MR units), columns tn ways (in NR units), tm * tn == t.
struct Grid {
  int tm, tn;
};

Grid choose_grid(int64_t m_tiles, int64_t n_tiles, int threads) noexcept {
  Grid best{threads, 1};
  int64_t best_cost = INT64_MAX;
  for (int tm = 1; tm <= threads; ++tm) {
    if (threads % tm) continue;
    const int tn = threads / tm;
    if (tm > m_tiles || tn > n_tiles) continue;
    // Largest per-thread share in 6x16 tiles; independent columns (tm == 1) win ties.
    int64_t cost = ((m_tiles + tm - 1) / tm) * ((n_tiles + tn - 1) / tn) * 8 + (tm > 1 ? 1 : 0);
    if (cost < best_cost) {
      best_cost = cost;
      best = {tm, tn};
    }
  }
  return best;
}

inline int64_t part(int64_t count, int64_t index, int64_t parts) noexcept {
  return count * index / parts;
}

// The parallel path: thread (ti, tj) of the grid owns tile rows/columns [part(ti), part(ti+1)).
// Returns false on allocation failure (before anything was written).
bool compute_parallel(const Problem& p, int threads) noexcept {
  const int64_t m_tiles = (p.m + kMR - 1) / kMR, n_tiles = (p.n + kNR - 1) / kNR;
  const Grid g = choose_grid(m_tiles, n_tiles, threads);
  const int team = g.tm * g.tn;
  if (team <= 1) return compute_serial(p);

  bool failed = false;
  if (g.tm == 1) {  // independent column ranges: no shared state at all
#pragma omp parallel num_threads(team)
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      // If the runtime gave fewer threads than asked, each one walks several grid cells.
      for (int pass = 0; pass < 2; ++pass) {
        for (int cell = t; cell < team; cell += nt) {
          const int64_t n0 = part(n_tiles, cell, team) * kNR;
          const int64_t n1 = std::min(p.n, part(n_tiles, cell + 1, team) * kNR);
          RectBuffers buf;
          if (pass == 0) {
            if (!reserve_rect(p, 0, p.m, n0, n1, buf)) {
#pragma omp atomic write
              failed = true;
            }
          } else {
            reserve_rect(p, 0, p.m, n0, n1, buf);  // already reserved: no allocation
            compute_rect(p, 0, p.m, n0, n1, buf);
          }
        }
        if (pass == 0) {
#pragma omp barrier
          bool stop;
#pragma omp atomic read
          stop = failed;
          if (stop) break;
        }
      }
    }
    return !failed;
  }

  // Shared, cooperatively packed B block; every thread packs its share of the block's panels.
  const int64_t nc = std::min(p.nc, n_tiles * kNR);
  float* bpack = b_buffer().get(static_cast<size_t>(nc * p.kc));
  if (!bpack) return false;
#pragma omp parallel num_threads(team)
  {
    const int t = omp_get_thread_num(), nt = omp_get_num_threads();
    float* apack = nullptr;
    if (p.pack_a) {
      apack = a_buffer().get(static_cast<size_t>((p.mc + kMR) * p.kc));
      if (!apack) {
#pragma omp atomic write
        failed = true;
      }
    }
#pragma omp barrier
    bool stop;
#pragma omp atomic read
    stop = failed;
    if (!stop) {
      for (int64_t jc = 0; jc < p.n; jc += p.nc) {
        const int64_t jc_end = std::min(p.n, jc + p.nc);
        const int64_t block_panels = (jc_end - jc + kNR - 1) / kNR;
        for (int64_t pc = 0; pc < p.k; pc += p.kc) {
          const int64_t kc = std::min(p.kc, p.k - pc);
          const int64_t q0 = part(block_panels, t, nt), q1 = part(block_panels, t + 1, nt);
          pack_b_range(p, pc, kc, jc + q0 * kNR, std::min(jc_end, jc + q1 * kNR), jc, bpack);
#pragma omp barrier
          for (int cell = t; cell < team; cell += nt) {
            const int ti = cell / g.tn, tj = cell % g.tn;
            const int64_t m0 = part(m_tiles, ti, g.tm) * kMR, m1 = std::min(p.m, part(m_tiles, ti + 1, g.tm) * kMR);
            const int64_t n0 = std::max(jc, part(n_tiles, tj, g.tn) * kNR);
            const int64_t n1 = std::min(jc_end, part(n_tiles, tj + 1, g.tn) * kNR);
            if (n0 >= n1) continue;
            for (int64_t ic = m0, ic_end; ic < m1; ic = ic_end) {
              ic_end = block_end(ic, m1, p.mc);
              if (apack) pack_a_block(p, pc, kc, ic, ic_end, apack);
              macro_kernel(p, pc, kc, ic, ic_end, n0, n1, bpack, jc, apack, nullptr);
            }
          }
#pragma omp barrier
        }
      }
    }
  }
  return !failed;
}

}  // namespace

void gemm_f32_avx2(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                   const GemmEpilogue& epilogue) {
  if (m <= 0 || n <= 0) return;
  Problem p;  // filled field by field: brace-initialising it costs a `rep stos` per call
  p.ta = trans_a;
  p.tb = trans_b;
  p.m = m;
  p.n = n;
  p.k = k;
  p.alpha = alpha;
  p.a = a;
  p.lda = lda;
  p.b = b;
  p.ldb = ldb;
  p.beta = beta;
  p.c = c;
  p.ldc = ldc;
  p.bias = epilogue.bias;
  p.relu = epilogue.activation == Activation::Relu;
  if (k <= 0) {
    scale_only(p);
    return;
  }
  if (k <= kKCMax) {
    p.kc = k;
  } else {  // equal blocks (multiples of 8) rather than full ones and a ragged rest
    const int64_t k_blocks = (k + kKCMax - 1) / kKCMax;
    p.kc = std::min(kKCMax, ((k + k_blocks - 1) / k_blocks + 7) / 8 * 8);
  }
  p.mc = kMCMax;
  p.nc = kNCMax;
  // Reading an operand in place saves the copy but must not cost L1 misses. In-place B needs rows
  // of op(B) contiguous (B not transposed) and small K; in-place A pays when an A panel meets few
  // B panels. Both need a stride that does not pile the panel's rows into a few L1 sets.
  p.pack_b = !(trans_b == Transpose::No && k <= 64 && l1_friendly_stride(ldb, k));
  p.pack_a = n > 4 * kNR || (trans_a == Transpose::Yes && !l1_friendly_stride(lda, p.kc));

  // A second thread pays off once the work clearly exceeds an OpenMP fork/join (~0.6 us here,
  // i.e. ~60 kFLOP): from 400 kFLOP on.
  const double flops = 2.0 * static_cast<double>(m) * static_cast<double>(n) * static_cast<double>(k);
  const int threads = flops < 4.0e5 ? 1 : num_threads();
  if (threads == 1 && k <= kKCMax && !p.pack_a && !p.pack_b && n % kNR == 0) {
    // Small, single K block, both operands read in place: no buffers at all.
    macro_kernel(p, 0, k, 0, m, 0, n, nullptr, 0, nullptr, nullptr);
    return;
  }
  const bool ok = threads > 1 ? compute_parallel(p, threads) : compute_serial(p);
  if (!ok) gemm_f32_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
}

}  // namespace lowbit::kernels

#undef LOWBIT_ALWAYS_INLINE
