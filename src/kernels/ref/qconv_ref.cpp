// The normative integer convolution (kernels/qconv.h).
#include <algorithm>
#include <cstdint>
#include <type_traits>

#include "kernels/qconv.h"

namespace lowbit::kernels {
namespace {

// The definition: acc = bias[m] + sum (x - z_x)(w - z_w) over the group's channels and the taps
// inside the input, exact (64-bit, then taken as int32 like qgemm's accumulator), then qgemm's
// output stage. y is [N, OC, OH, OW].
template <typename Out>
void qconv2d_ref(const ConvGeometry& g, const QConvWeights& weights, const int8_t* x, const QConvInputGrid& grid,
                 const QOutputStage& out, Out* y) {
  const int64_t k = g.patch(), cg = g.group_in();
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t m = 0; m < g.out_channels; ++m) {
      const int32_t* w = weights.codes + m * k;
      const int32_t zw = weights.weight_zero_point[m], zx = grid.zero(n);
      const int64_t c0 = m / g.group_out() * cg;
      for (int64_t oy = 0; oy < g.out_h; ++oy)
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          int64_t acc = weights.bias ? weights.bias[m] : 0;
          for (int64_t c = c0; c < c0 + cg; ++c)
            for (int64_t ki = 0; ki < g.kernel_h; ++ki)
              for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
                const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
                const int64_t ix = ox * g.stride_w - g.pad_left + kj * g.dilation_w;
                if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
                const int32_t a = x[((n * g.in_channels + c) * g.in_h + iy) * g.in_w + ix];
                acc += static_cast<int64_t>(a - zx) * (w[((c - c0) * g.kernel_h + ki) * g.kernel_w + kj] - zw);
              }
          const int32_t acc32 = static_cast<int32_t>(acc);
          Out& dst = y[((n * g.out_channels + m) * g.out_h + oy) * g.out_w + ox];
          if constexpr (std::is_same_v<Out, float>) {
            // qgemm's f32 output: ((float(acc) * row_scale) * column_scale) + bias.
            float v = static_cast<float>(acc32);
            if (grid.image_scale) v *= grid.image_scale[n];
            v *= out.column_scale[m];
            if (out.bias) v += out.bias[m];
            dst = out.relu ? (v > 0.0f ? v : 0.0f) : v;
          } else {
            int64_t v = int64_t{out.output_zero_point} + out.multiplier[m].apply(acc32);
            v = std::min<int64_t>(std::max<int64_t>(v, out.clamp_min), out.clamp_max);
            dst = static_cast<int8_t>(std::clamp<int64_t>(v, -128, 127));
          }
        }
    }
}

}  // namespace

void qconv2d_s8_ref(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                    const QOutputStage& out, int8_t* y) {
  qconv2d_ref(g, w, x, grid, out, y);
}

void qconv2d_s8_f32_ref(const ConvGeometry& g, const QConvWeights& w, const int8_t* x, const QConvInputGrid& grid,
                        const QOutputStage& out, float* y) {
  qconv2d_ref(g, w, x, grid, out, y);
}

}  // namespace lowbit::kernels
