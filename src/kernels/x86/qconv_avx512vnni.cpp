// Direct integer convolution with AVX-512 VNNI (see kernels/qconv_direct.h for the contract).
//
// For one output row segment of 16 pixels, every tap (c, ki, kj) of the group is one 16-byte load
// from the padded input (stride_w is 1, so the 16 pixels' inputs are consecutive), sign-extended
// to s32; taps are paired into s16 halves of each lane, and one vpdpwssd per pair multiplies them
// by the output channel's broadcast weight pair and adds both products to the s32 accumulator
// (exact: |x w| <= 2^14). The tap vectors are built once and serve every output channel of the
// group, so the inner loop per channel is ceil(K/2) vpdpwssd, the output stage of qgemm's VNNI
// kernel (requantize, same constants with one channel broadcast to all lanes) and one 16-byte
// store into the NCHW output plane: no im2row buffer, no repacking, no transpose.
//
// Measured (bench/bench_conv.cpp, the reference CNN's first layer, 1 channel 28x28 -> 32, batch
// 256, 1 thread, Zen 4): see bench/README.md.

#include "kernels/qconv_direct.h"
#include "kernels/x86/avx512_common.h"

namespace lowbit::kernels {
namespace {

template <bool kF32>
void conv_row(const DirectConvShape& s, const DirectConvPlan& p, const PanelConstants* channel, const int8_t* image,
              int64_t index, int64_t group, int64_t oy, const QOutputStage& out, Clamp clamp, const ClampConstants& cc,
              void* y_image) {
  const int64_t og = s.out_channels / s.groups, plane = s.out_h * s.out_w;
  const int64_t* taps = p.tap_offset.data() + group * p.k;
  const int8_t* corner = image + oy * s.stride_h * s.padded_w;
  const __m512i low16 = _mm512_set1_epi32(0xffff);
  alignas(64) __m512i x[kDirectConvMaxK / 2];
  for (int64_t ox0 = 0; ox0 < s.out_w; ox0 += kPanel) {
    const int64_t valid = std::min<int64_t>(kPanel, s.out_w - ox0);
    const __mmask16 mask = static_cast<__mmask16>((1u << valid) - 1);
    __m512i tap_sum = _mm512_setzero_si512();
    for (int64_t j = 0; j < p.pairs; ++j) {
      const __m512i a = _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, corner + taps[2 * j] + ox0));
      const __m512i b = 2 * j + 1 < p.k ? _mm512_cvtepi8_epi32(_mm_maskz_loadu_epi8(mask, corner + taps[2 * j + 1] + ox0))
                                        : _mm512_setzero_si512();
      if (out.weight_zero_point && !out.row_offset) tap_sum = _mm512_add_epi32(tap_sum, _mm512_add_epi32(a, b));
      x[j] = _mm512_or_si512(_mm512_and_si512(a, low16), _mm512_slli_epi32(b, 16));
    }
    for (int64_t oc = group * og; oc < (group + 1) * og; ++oc) {
      const PanelConstants& pc = channel[oc];
      const int32_t* w = p.weight_pairs + oc * p.pairs;
      __m512i acc = pc.offset;
      for (int64_t j = 0; j < p.pairs; ++j) acc = dpwssd(acc, x[j], _mm512_set1_epi32(w[j]));
      if (out.weight_zero_point && out.row_offset)  // wraps modulo 2^32, as qgemm's product
        acc = _mm512_sub_epi32(acc, _mm512_set1_epi32(static_cast<int32_t>(static_cast<uint32_t>(out.weight_zero_point[oc]) *
                                                                           static_cast<uint32_t>(out.row_offset[index]))));
      else if (out.weight_zero_point)
        acc = _mm512_sub_epi32(acc, _mm512_mullo_epi32(_mm512_set1_epi32(out.weight_zero_point[oc]), tap_sum));
      const int64_t at = oc * plane + oy * s.out_w + ox0;
      if constexpr (kF32) {
        __m512 f = _mm512_cvtepi32_ps(acc);
        if (out.row_scale) f = _mm512_mul_ps(f, _mm512_set1_ps(out.row_scale[index]));
        f = _mm512_mul_ps(f, _mm512_set1_ps(out.column_scale[oc]));
        if (out.bias) f = _mm512_add_ps(f, _mm512_set1_ps(out.bias[oc]));
        if (out.relu) f = _mm512_max_ps(f, _mm512_setzero_ps());
        _mm512_mask_storeu_ps(static_cast<float*>(y_image) + at, mask, f);
      } else {
        int8_t* dst = static_cast<int8_t*>(y_image) + at;
        switch (pc.fits_s32 ? clamp : Clamp::kS64) {
          case Clamp::kPlain: _mm_mask_storeu_epi8(dst, mask, requantize<Clamp::kPlain>(acc, pc, cc)); break;
          case Clamp::kS32: _mm_mask_storeu_epi8(dst, mask, requantize<Clamp::kS32>(acc, pc, cc)); break;
          case Clamp::kS64: _mm_mask_storeu_epi8(dst, mask, requantize<Clamp::kS64>(acc, pc, cc)); break;
        }
      }
    }
  }
}

template <bool kF32>
bool direct(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded, const QOutputStage& out, void* y) {
  if (plan.k != s.group_k() || s.out_h < 1 || s.out_w < 1) return false;
  thread_local Buffer<PanelConstants> channels;
  if (!channels.reserve(static_cast<size_t>(s.out_channels))) return false;
  for (int64_t oc = 0; oc < s.out_channels; ++oc) {
    int32_t offset[kPanel], mult[kPanel], shift[kPanel];
    for (int j = 0; j < kPanel; ++j) {
      offset[j] = out.column_offset[oc];
      mult[j] = kF32 ? 0 : out.multiplier[oc].multiplier;
      shift[j] = kF32 ? 0 : out.multiplier[oc].shift;
    }
    channels.data[oc] = panel_constants(offset, mult, shift);
  }
  const Clamp clamp = kF32 ? Clamp::kPlain : clamp_kind(out);
  const ClampConstants cc = clamp_constants(out);
  const int64_t in_image = s.channels * s.padded_h * s.padded_w, out_image = s.out_channels * s.out_h * s.out_w;
  const PanelConstants* channel = channels.data;  // the workers must not name the thread_local buffer
  for_each_output_row(s, plan, [&](int64_t i, int64_t g, int64_t oy) {
    void* y_image = kF32 ? static_cast<void*>(static_cast<float*>(y) + i * out_image)
                         : static_cast<void*>(static_cast<int8_t*>(y) + i * out_image);
    conv_row<kF32>(s, plan, channel, padded + i * in_image, i, g, oy, out, clamp, cc, y_image);
  });
  return true;
}

}  // namespace

bool qconv_direct_s8_vnni(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                          const QOutputStage& out, int8_t* y) {
  return direct<false>(s, plan, padded, out, y);
}

bool qconv_direct_s8_f32_vnni(const DirectConvShape& s, const DirectConvPlan& plan, const int8_t* padded,
                              const QOutputStage& out, float* y) {
  return direct<true>(s, plan, padded, out, y);
}

}  // namespace lowbit::kernels
