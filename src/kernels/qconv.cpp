// What the integer convolution's implementations share (kernels/qconv.h): the weights' code sums
// and the run-time quantization of DynamicQConv2D's input.
#include "kernels/qconv.h"

#include <cmath>

#include "kernels/elementwise.h"
#include "lowbit/quant_params.h"

namespace lowbit::kernels {

std::vector<int32_t> qconv_weight_sums(const int32_t* codes, int64_t out_channels, int64_t k) {
  std::vector<int32_t> sums(static_cast<size_t>(out_channels), 0);
  for (int64_t m = 0; m < out_channels; ++m)
    for (int64_t t = 0; t < k; ++t) sums[static_cast<size_t>(m)] += codes[static_cast<size_t>(m * k + t)];
  return sums;
}

void quantize_images_s8(const float* x, int64_t images, int64_t image_size, bool per_image, int8_t* codes,
                        int32_t* zero_point, float* scale) {
  const int64_t ranges = per_image ? images : 1, per_range = per_image ? 1 : images;
  parallel_for(ranges, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t count = per_range * image_size;
      const float* first = x + r * count;
      float lo = 0.0f, hi = 0.0f;
      if (count > 0) minmax_f32(count, first, &lo, &hi);
      if (std::isnan(lo)) lo = hi = 0.0f;  // an all-NaN image
      const QuantParams p = choose_params(lo, hi, {8, QScheme::Affine});
      quantize_s8(count, first, p.scale[0], p.zero_point[0], codes + r * count);
      for (int64_t i = r * per_range; i < (r + 1) * per_range; ++i) zero_point[i] = p.zero_point[0], scale[i] = p.scale[0];
    }
  });
}

}  // namespace lowbit::kernels
