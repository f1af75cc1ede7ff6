// AVX2 block-quantized product (kernels/blockq.h), on the Avx2 panel layout (4-bit codes; 2- and
// 3-bit weights are widened to it when packed): codes unpacked in registers (one shift and one
// AND per 32 codes), multiplied with the s8 rows by vpmaddubsw (codes as the unsigned operand:
// |pair| <= 2 * 15 * 127, no saturation, and the sub-blocks of one block summed in s16:
// <= 4 * 3810), the 8 columns of a panel reduced to one vector, then the block's float step for 8
// columns at once:
// exactly the reference's operations (integer sums are exact; the float steps are the same ops in
// the same order), so the output is bit-identical.
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "kernels/paths.h"
#include "kernels/x86/avx2_util.h"

namespace lowbit::kernels {

void quantize_rows_s8_block_avx2(int64_t m, int64_t k, int64_t block, const float* x, int64_t ldx, int8_t* xq, float* s,
                                 int32_t* t) {
  const int64_t blocks = (k + block - 1) / block;
  const __m256 abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256i order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
  const __m256i ones8 = _mm256_set1_epi8(1);
  const __m256i ones16 = _mm256_set1_epi16(1);
  alignas(32) float padded[128];
  for (int64_t r = 0; r < m; ++r)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t count = std::min(block, k - b * block);
      const float* src = x + r * ldx + b * block;
      if (count < block) {  // the last block of a row whose length is not a multiple of the block
        std::memset(padded, 0, sizeof padded);
        std::memcpy(padded, src, static_cast<size_t>(count) * sizeof(float));
        src = padded;
      }
      // max |x| (a NaN is skipped, as std::max(amax, NaN) does: maxps returns its second operand then)
      __m256 vmax = _mm256_setzero_ps();
      for (int64_t i = 0; i < block; i += 8) vmax = _mm256_max_ps(_mm256_and_ps(_mm256_loadu_ps(src + i), abs_mask), vmax);
      alignas(32) float lanes[8];
      _mm256_store_ps(lanes, vmax);
      float amax = 0.0f;
      for (float v : lanes) amax = std::max(amax, v);
      const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      const __m256 vinv = _mm256_set1_ps(inverse);
      int8_t* q = xq + r * blocks * block + b * block;
      __m256i sum = _mm256_setzero_si256();
      for (int64_t i = 0; i < block; i += 32) {
        const __m256i a = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + i), vinv));
        const __m256i bb = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + i + 8), vinv));
        const __m256i c = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + i + 16), vinv));
        const __m256i d = _mm256_cvtps_epi32(_mm256_mul_ps(_mm256_loadu_ps(src + i + 24), vinv));
        const __m256i packed = _mm256_permutevar8x32_epi32(_mm256_packs_epi16(_mm256_packs_epi32(a, bb), _mm256_packs_epi32(c, d)), order);
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(q + i), packed);
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, packed), ones16));
      }
      alignas(32) int32_t parts[8];
      _mm256_store_si256(reinterpret_cast<__m256i*>(parts), sum);
      int32_t total = 0;
      for (int32_t v : parts) total += v;
      s[r * blocks + b] = amax / 127.0f;
      t[r * blocks + b] = total;
    }
}

namespace {

// The 8 columns' exact sums over one block, sum_k q[c][k] * xq[k] (one s32 lane per column), from
// the block's codes in the panel layout (4-bit codes, sub-block after sub-block, 8 columns side by
// side). Two columns per register: a 32-byte load holds columns c and c+1 (16 bytes each); the
// low nibbles are their codes 0-15, the high nibbles codes 16-31, multiplied by x[0..15] and
// x[16..31] broadcast to both halves. Pairs of products summed in s16 over the sub-blocks: at
// most 2 * 2 * 15 * 128 per sub-block, 4 sub-blocks: 30720, no saturation.
inline __attribute__((always_inline)) __m256i block_sums(const uint8_t* codes, const int8_t* x, int64_t subs) {
  const __m256i ones16 = _mm256_set1_epi16(1);
  const __m256i mask = _mm256_set1_epi8(15);
  __m256i acc[4] = {_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256()};
  for (int64_t s = 0; s < subs; ++s) {
    const __m256i xlo = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 32 * s)));
    const __m256i xhi = _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(x + 32 * s + 16)));
    const uint8_t* cs = codes + s * BlockWeights::kPanel * 16;
    for (int p = 0; p < 4; ++p) {
      const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(cs + 32 * p));
      const __m256i lo = _mm256_and_si256(v, mask), hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), mask);
      acc[p] = _mm256_add_epi16(acc[p], _mm256_add_epi16(_mm256_maddubs_epi16(lo, xlo), _mm256_maddubs_epi16(hi, xhi)));
    }
  }
  // acc[p] as s32: [column 2p: 4 lanes | column 2p+1: 4 lanes]; three hadds leave
  // [c0 c2 c4 c6 | c1 c3 c5 c7], then the columns in order.
  const __m256i h01 = _mm256_hadd_epi32(_mm256_madd_epi16(acc[0], ones16), _mm256_madd_epi16(acc[1], ones16));
  const __m256i h23 = _mm256_hadd_epi32(_mm256_madd_epi16(acc[2], ones16), _mm256_madd_epi16(acc[3], ones16));
  return _mm256_permutevar8x32_epi32(_mm256_hadd_epi32(h01, h23), _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

}  // namespace

void block_gemm_s8_avx2(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out, float* y,
                        int64_t ldy, int64_t p0, int64_t p1) {
  constexpr int64_t P = BlockWeights::kPanel;
  const int64_t blocks = w.blocks(), block = w.block(), bb = block_bytes(4, block);  // the panels hold 4-bit codes
  const int64_t subs = block / 32, n = w.n();
  // Symmetric weights have the zero point 2^(bits-1) everywhere; the panels hold it too.
  const bool symmetric = w.symmetric();
  const int32_t zero = 1 << (w.bits() - 1);
  for (int64_t p = p0; p < p1; ++p) {
    const uint8_t* codes = w.panel_codes().data() + p * blocks * P * bb;
    const uint16_t* scales = w.panel_scales().data() + p * blocks * P;
    const uint8_t* zeros = w.panel_zero_points().data() + p * blocks * P;
    const int64_t cols = std::min(P, n - p * P);
    alignas(32) float bias[P] = {};
    if (out.bias) std::copy_n(out.bias + p * P, cols, bias);
    for (int64_t r = 0; r < m; ++r) {
      const int8_t* xr = x.xq + r * x.stride;
      __m256 acc = _mm256_setzero_ps();
      for (int64_t b = 0; b < blocks; ++b) {
        const __m256i sums = block_sums(codes + b * P * bb, xr + b * block, subs);
        const int32_t tb = x.t[r * x.blocks + b];
        const __m256i correction =
            symmetric ? _mm256_set1_epi32(zero * tb)
                      : _mm256_mullo_epi32(_mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(zeros + b * P))),
                                           _mm256_set1_epi32(tb));
        const __m256i dot = _mm256_sub_epi32(sums, correction);
        const __m256 ds = _mm256_mul_ps(_mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(scales + b * P))),
                                        _mm256_set1_ps(x.s[r * x.blocks + b]));
        acc = _mm256_fmadd_ps(ds, _mm256_cvtepi32_ps(dot), acc);
      }
      __m256 v = out.bias ? _mm256_add_ps(acc, _mm256_load_ps(bias)) : acc;
      if (out.relu) v = _mm256_max_ps(v, _mm256_setzero_ps());
      float* dst = y + r * ldy + p * P;
      if (cols == P)
        _mm256_storeu_ps(dst, v);
      else
        avx2::store_partial(dst, v, v, static_cast<int>(cols));
    }
  }
}

}  // namespace lowbit::kernels
