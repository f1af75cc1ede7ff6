// The normative float convolution (kernels/conv_f32.h).
#include <algorithm>

#include "kernels/conv_f32.h"

namespace lowbit::kernels {

// The normative definition: y[n, m, oy, ox] = act(b[m] + sum_{c, ki, kj} x[n, g*Cg + c, iy, ix] *
// w[m, c, ki, kj]) with iy = oy*sh - pad_top + ki*dh, ix = ox*sw - pad_left + kj*dw (terms outside
// the input are zero) and g = m / (Cout/G).
void conv2d_f32_ref(const ConvGeometry& g, const float* x, const float* w, const float* bias, Activation act, float* y) {
  const int64_t cg = g.group_in(), mg = g.group_out();
  for (int64_t n = 0; n < g.batch; ++n)
    for (int64_t m = 0; m < g.out_channels; ++m) {
      const int64_t c0 = m / mg * cg;
      for (int64_t oy = 0; oy < g.out_h; ++oy)
        for (int64_t ox = 0; ox < g.out_w; ++ox) {
          float acc = 0.0f;
          for (int64_t c = 0; c < cg; ++c)
            for (int64_t ki = 0; ki < g.kernel_h; ++ki)
              for (int64_t kj = 0; kj < g.kernel_w; ++kj) {
                const int64_t iy = oy * g.stride_h - g.pad_top + ki * g.dilation_h;
                const int64_t ix = ox * g.stride_w - g.pad_left + kj * g.dilation_w;
                if (iy < 0 || iy >= g.in_h || ix < 0 || ix >= g.in_w) continue;
                acc += x[((n * g.in_channels + c0 + c) * g.in_h + iy) * g.in_w + ix] *
                       w[((m * cg + c) * g.kernel_h + ki) * g.kernel_w + kj];
              }
          if (bias) acc += bias[m];
          if (act == Activation::Relu) acc = std::max(acc, 0.0f);
          y[((n * g.out_channels + m) * g.out_h + oy) * g.out_w + ox] = acc;
        }
    }
}

}  // namespace lowbit::kernels
