// Direct integer convolution with AVX2 (see kernels/qconv_direct.h for the contract), the same
// scheme as qconv_avx512vnni.cpp on 8-lane vectors: per 16-pixel segment of an output row, each
// tap is one 16-byte load widened to 16 s16; two taps are interleaved (vpunpcklwd / vpunpckhwd,
// within 128-bit lanes, so the s32 lanes hold pixels 0-3, 8-11 and 4-7, 12-15) and vpmaddwd
// multiplies the pair by the output channel's broadcast weight pair (exact: |x w| <= 2^14, a pair
// sum fits s16 x s16 -> s32). The requantization is the AVX2 GEMM's (avx2_util.h); vpackssdw of
// the two halves restores pixel order, so the 16 bytes are stored straight into the NCHW plane.

#include <algorithm>

#include "kernels/qconv_direct.h"
#include "kernels/x86/avx2_util.h"
#include "kernels/x86/scratch.h"

namespace lowbit::kernels {
namespace {

using avx2::Requant4;

constexpr int64_t kPixels = 16;

struct alignas(32) Channel {
  Requant4 even, odd;
  __m256i add32;   // zero point - low 32 bits of the shift trick's bias
  __m256i offset;  // column offset, broadcast
  __m256i low_b, lo, hi, zp;  // requant8_narrow's constants
  bool narrow;                // the multiplier is at most 1: requant8_narrow
};

template <bool kF32>
void conv_row(const DirectConvShape& s, const DirectConvPlan& p, const Channel* channel, const int8_t* image, int64_t index,
              int64_t group, int64_t oy, const QOutputStage& out, void* y_image) {
  const int64_t og = s.out_channels / s.groups, plane = s.out_h * s.out_w;
  const int64_t* taps = p.tap_offset.data() + group * p.k;
  const int8_t* corner = image + oy * s.stride_h * s.padded_w;
  const __m256i ones = _mm256_set1_epi16(1);
  __m256i x[kDirectConvMaxK / 2][2];
  for (int64_t ox0 = 0; ox0 < s.out_w; ox0 += kPixels) {
    const int valid = static_cast<int>(std::min<int64_t>(kPixels, s.out_w - ox0));
    __m256i tap_sum[2] = {_mm256_setzero_si256(), _mm256_setzero_si256()};
    for (int64_t j = 0; j < p.pairs; ++j) {
      const __m256i a = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(corner + taps[2 * j] + ox0)));
      const __m256i b = 2 * j + 1 < p.k
                            ? _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(corner + taps[2 * j + 1] + ox0)))
                            : _mm256_setzero_si256();
      x[j][0] = _mm256_unpacklo_epi16(a, b);  // pixels 0-3, 8-11
      x[j][1] = _mm256_unpackhi_epi16(a, b);  // pixels 4-7, 12-15
      if (out.weight_zero_point && !out.row_offset)
        for (int h = 0; h < 2; ++h) tap_sum[h] = _mm256_add_epi32(tap_sum[h], _mm256_madd_epi16(x[j][h], ones));
    }
    for (int64_t oc = group * og; oc < (group + 1) * og; ++oc) {
      const Channel& ch = channel[oc];
      const int32_t* w = p.weight_pairs + oc * p.pairs;
      __m256i acc[2] = {ch.offset, ch.offset};
      for (int64_t j = 0; j < p.pairs; ++j) {
        const __m256i wj = _mm256_set1_epi32(w[j]);
        acc[0] = _mm256_add_epi32(acc[0], _mm256_madd_epi16(x[j][0], wj));
        acc[1] = _mm256_add_epi32(acc[1], _mm256_madd_epi16(x[j][1], wj));
      }
      if (out.weight_zero_point && out.row_offset) {  // wraps modulo 2^32, as qgemm's product
        const __m256i t = _mm256_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(out.weight_zero_point[oc]) *
                                                                 static_cast<uint32_t>(out.row_offset[index])));
        for (int h = 0; h < 2; ++h) acc[h] = _mm256_sub_epi32(acc[h], t);
      } else if (out.weight_zero_point) {
        const __m256i zw = _mm256_set1_epi32(out.weight_zero_point[oc]);
        for (int h = 0; h < 2; ++h) acc[h] = _mm256_sub_epi32(acc[h], _mm256_mullo_epi32(zw, tap_sum[h]));
      }
      const int64_t at = oc * plane + oy * s.out_w + ox0;
      if constexpr (kF32) {
        const __m256 cs = _mm256_set1_ps(out.column_scale[oc]);
        __m256 f[2];
        for (int h = 0; h < 2; ++h) {
          f[h] = _mm256_cvtepi32_ps(acc[h]);
          if (out.row_scale) f[h] = _mm256_mul_ps(f[h], _mm256_set1_ps(out.row_scale[index]));
          f[h] = _mm256_mul_ps(f[h], cs);
          if (out.bias) f[h] = _mm256_add_ps(f[h], _mm256_set1_ps(out.bias[oc]));
          if (out.relu) f[h] = _mm256_max_ps(f[h], _mm256_setzero_ps());
        }
        const __m256 lo = _mm256_permute2f128_ps(f[0], f[1], 0x20), hi = _mm256_permute2f128_ps(f[0], f[1], 0x31);
        float* dst = static_cast<float*>(y_image) + at;
        if (valid == kPixels) {
          _mm256_storeu_ps(dst, lo);
          _mm256_storeu_ps(dst + 8, hi);
        } else {
          avx2::store_partial(dst, lo, hi, valid);
        }
      } else {
        __m256i v[2];
        for (int h = 0; h < 2; ++h) {
          if (ch.narrow) {
            v[h] = avx2::requant8_narrow(acc[h], ch.even, ch.odd, ch.low_b, ch.lo, ch.hi, ch.zp);
            continue;
          }
          const __m256i ye = avx2::requant4(acc[h], ch.even);
          const __m256i yo = avx2::requant4(_mm256_srli_epi64(acc[h], 32), ch.odd);
          v[h] = _mm256_add_epi32(_mm256_blend_epi32(ye, _mm256_slli_epi64(yo, 32), 0xAA), ch.add32);
        }
        // [0-3 | 8-11] and [4-7 | 12-15] -> s16 [0-7 | 8-15] -> 16 bytes in pixel order.
        const __m256i w16 = _mm256_packs_epi32(v[0], v[1]);
        const __m128i b8 = _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1));
        int8_t* dst = static_cast<int8_t*>(y_image) + at;
        if (valid == kPixels)
          _mm_storeu_si128(reinterpret_cast<__m128i*>(dst), b8);
        else
          avx2::store_partial_bytes(dst, b8, valid);
      }
    }
  }
}

template <bool kF32>
bool direct(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded, const QOutputStage& out, void* y) {
  if (plan.k != s.group_k() || s.out_h < 1 || s.out_w < 1) return false;
  thread_local Buffer<Channel> channels;
  if (!channels.reserve(static_cast<size_t>(s.out_channels))) return false;
  // As the AVX2 GEMM: c = zp + clamp(v, lo8 - zp, hi8 - zp), both bounds inside int32.
  const int64_t hi8 = std::clamp<int64_t>(out.clamp_max, -128, 127);
  const int64_t lo8 = std::clamp<int64_t>(std::min(out.clamp_min, out.clamp_max), -128, 127);
  const int32_t zp = kF32 ? 0 : out.output_zero_point;
  for (int64_t oc = 0; oc < s.out_channels; ++oc) {
    Channel& ch = channels.data[oc];
    ch.offset = _mm256_set1_epi32(out.column_offset[oc]);
    if (!kF32) {
      FixedPointMultiplier same[8];
      std::fill(same, same + 8, out.multiplier[oc]);
      avx2::load_requant8(same, static_cast<int32_t>(lo8 - zp), static_cast<int32_t>(hi8 - zp), zp, ch.even, ch.odd, ch.add32);
      ch.narrow = avx2::multipliers_at_most_one(same, 1);
      ch.zp = _mm256_set1_epi32(zp);
      ch.low_b = _mm256_sub_epi32(ch.zp, ch.add32);
      ch.lo = _mm256_set1_epi32(static_cast<int32_t>(lo8 - zp));
      ch.hi = _mm256_set1_epi32(static_cast<int32_t>(hi8 - zp));
    }
  }
  const int64_t in_image = s.channels * s.padded_h * s.padded_w, out_image = s.out_channels * s.out_h * s.out_w;
  const Channel* channel = channels.data;  // the workers must not name the thread_local buffer
  for_each_output_row(s, plan, [&](int64_t i, int64_t g, int64_t oy) {
    void* y_image = kF32 ? static_cast<void*>(static_cast<float*>(y) + i * out_image)
                         : static_cast<void*>(static_cast<int8_t*>(y) + i * out_image);
    conv_row<kF32>(s, plan, channel, padded + i * in_image, i, g, oy, out, y_image);
  });
  return true;
}

}  // namespace

bool qconv_direct_s8_avx2(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                          const QOutputStage& out, int8_t* y) {
  return direct<false>(s, plan, padded, out, y);
}

bool qconv_direct_s8_f32_avx2(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                              const QOutputStage& out, float* y) {
  return direct<true>(s, plan, padded, out, y);
}

}  // namespace lowbit::kernels
