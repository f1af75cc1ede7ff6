// What the integer convolution's implementations share (kernels/qconv.h): the weights' code sums
// and the run-time quantization of DynamicQConv2D's input.
#include "kernels/qconv.h"

#include <algorithm>
#include <cmath>
#include <vector>

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
  const int64_t n = images * image_size;
  if (!per_image) {
    // One range for the whole batch: the minimum and maximum of chunks in parallel (exact, so the
    // range does not depend on the thread count), then the codes in parallel.
    constexpr int64_t kChunk = int64_t{1} << 14;
    const int64_t chunks = (n + kChunk - 1) / kChunk;
    std::vector<float> lows(static_cast<size_t>(chunks)), highs(static_cast<size_t>(chunks));
    parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
      for (int64_t c = c0; c < c1; ++c)
        minmax_f32(std::min(kChunk, n - c * kChunk), x + c * kChunk, &lows[static_cast<size_t>(c)], &highs[static_cast<size_t>(c)]);
    });
    float lo = NAN, hi = NAN;
    for (int64_t c = 0; c < chunks; ++c) {
      if (std::isnan(lows[static_cast<size_t>(c)])) continue;  // an all-NaN chunk
      lo = std::isnan(lo) ? lows[static_cast<size_t>(c)] : std::min(lo, lows[static_cast<size_t>(c)]);
      hi = std::isnan(hi) ? highs[static_cast<size_t>(c)] : std::max(hi, highs[static_cast<size_t>(c)]);
    }
    if (std::isnan(lo)) lo = hi = 0.0f;
    const QuantParams p = choose_params(lo, hi, {8, QScheme::Affine});
    parallel_for(chunks, 1, [&](int64_t c0, int64_t c1) {
      const int64_t begin = c0 * kChunk, end = std::min(n, c1 * kChunk);
      quantize_s8(end - begin, x + begin, p.scale[0], p.zero_point[0], codes + begin);
    });
    for (int64_t i = 0; i < images; ++i) zero_point[i] = p.zero_point[0], scale[i] = p.scale[0];
    return;
  }
  parallel_for(images, 1, [&](int64_t i0, int64_t i1) {  // one range per image
    // choose_params' grid, fitted in place: no allocation per row (dynamic dense layers quantize
    // rows of a few dozen values, where two small vectors per row cost as much as the work).
    QuantParams p{8, true, QScheme::Affine, false, -1, {1.0f}, {0}};
    for (int64_t i = i0; i < i1; ++i) {
      const float* first = x + i * image_size;
      float lo = 0.0f, hi = 0.0f;
      if (image_size > 0) minmax_f32(image_size, first, &lo, &hi);
      if (std::isnan(lo)) lo = hi = 0.0f;  // an all-NaN image
      if (std::isfinite(lo) && std::isfinite(hi))
        fit_channel(p, 0, lo, hi);
      else
        p = choose_params(lo, hi, {8, QScheme::Affine});  // (its error for an infinite range)
      quantize_s8(image_size, first, p.scale[0], p.zero_point[0], codes + i * image_size);
      zero_point[i] = p.zero_point[0], scale[i] = p.scale[0];
    }
  });
}

}  // namespace lowbit::kernels
