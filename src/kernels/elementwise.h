// kernels/elementwise.h - element-wise kernels of the training loop, with reference and AVX2 paths.
//
//   // One Adam step over n parameters w with gradients g and moments m, v (see lowbit::Adam):
//   std::vector<float> w(n), g(n), m(n), v(n);
//   lowbit::adam_update_f32(n, w.data(), g.data(), m.data(), v.data(), {0.9f, 0.999f, 1e-3f, 1.0f, 1e-8f});
//   // Fake quantization (quantize, then dequantize; the forward pass of quantization-aware training):
//   std::vector<float> y(n);
//   lowbit::fake_quantize_f32(n, w.data(), {0.02f, 0, -128, 127}, y.data());
//
// Every path performs the same IEEE operations in the same order (no FMA contraction), so the
// results are bit-identical whatever the path or the thread count.
#pragma once

#include <cstdint>

namespace lowbit {

struct AdamConstants {
  float beta1, beta2;
  float step;       // lr / (1 - beta1^t)
  float inv_root;   // 1 / sqrt(1 - beta2^t)
  float epsilon;
};

// m = b1 m + (1 - b1) g;  v = b2 v + (1 - b2) g g;  w -= step * m / (sqrt(v) * inv_root + eps)
void adam_update_f32(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c);

// Smallest and largest of n > 0 values; NaNs are ignored (both are NaN only if all are).
void minmax_f32(int64_t n, const float* x, float* min, float* max);

// One quantization grid: real = scale * (q - zero_point), q in [qmin, qmax].
struct FakeQuantGrid {
  float scale;
  int32_t zero_point, qmin, qmax;
};

// y = scale * (clamp(nearbyint(x / scale) + zero_point, qmin, qmax) - zero_point): exactly
// QuantParams::quantize followed by QuantParams::dequantize, the same floats as the integer runtime.
void fake_quantize_f32(int64_t n, const float* x, const FakeQuantGrid& grid, float* y);
// Gradients of fake_quantize_f32 with the straight-through estimator: dx = dy where
// nearbyint(x / scale) + zero_point lies in [qmin, qmax], else 0 (dx may be null). With
// `scale_gradient`, returns the gradient with respect to the scale (else 0),
// sum_i dy_i * d y_i / d scale, where (LSQ, Esser et al. 2019)
//   d y / d scale = nearbyint(x / scale) - x / scale    inside the grid,
//                   qmin - zero_point or qmax - zero_point    below or above it,
// accumulated in double (the AVX2 path first adds up to 8 products per lane in float). Reference
// and AVX2 paths give identical dx; the scale gradient agrees to rounding (the summation order and
// those partial sums differ).
double fake_quantize_backward_f32(int64_t n, const float* x, const float* dy, const FakeQuantGrid& grid, float* dx,
                                  bool scale_gradient);

}  // namespace lowbit
