// The ISA-independent setup of the direct integer convolution kernels (kernels/qconv_direct.h):
// weight pairs (once per layer) and tap offsets (per call).
#include "kernels/qconv_direct.h"

namespace lowbit::kernels {

std::vector<int32_t> direct_conv_weight_pairs(const int32_t* codes, int64_t out_channels, int64_t k) {
  const int64_t pairs = (k + 1) / 2;
  std::vector<int32_t> result(static_cast<size_t>(out_channels * pairs));
  for (int64_t oc = 0; oc < out_channels; ++oc) {
    const int32_t* w = codes + oc * k;
    for (int64_t j = 0; j < pairs; ++j) {
      const uint32_t lo = static_cast<uint16_t>(w[2 * j]), hi = 2 * j + 1 < k ? static_cast<uint16_t>(w[2 * j + 1]) : 0u;
      result[static_cast<size_t>(oc * pairs + j)] = static_cast<int32_t>(lo | hi << 16);
    }
  }
  return result;
}

bool plan_direct_conv(const DirectConvShape& s, const int32_t* weight_pairs, DirectConvPlan& plan) {
  const int64_t k = s.group_k();
  if (k < 1 || k > kDirectConvMaxK) return false;
  plan.k = k;
  plan.pairs = (k + 1) / 2;
  plan.weight_pairs = weight_pairs;
  const int64_t cg = s.channels / s.groups;
  plan.tap_offset.resize(static_cast<size_t>(s.groups * k));
  for (int64_t g = 0; g < s.groups; ++g)
    for (int64_t c = 0; c < cg; ++c)
      for (int64_t ki = 0; ki < s.kernel_h; ++ki)
        for (int64_t kj = 0; kj < s.kernel_w; ++kj)
          plan.tap_offset[static_cast<size_t>(g * k + (c * s.kernel_h + ki) * s.kernel_w + kj)] =
              ((g * cg + c) * s.padded_h + ki * s.dilation_h) * s.padded_w + kj * s.dilation_w;
  return true;
}

}  // namespace lowbit::kernels
