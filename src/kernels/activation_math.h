// Internal: the constants and scalar formulas of kernels/activation.h, shared by the reference
// (ref/activation_ref.cpp), which is these formulas element by element, and the vector paths'
// tails. Every vector path performs exactly these operations in this order. Internal linkage on
// purpose (an anonymous namespace): a copy compiled with AVX flags must never be the one the
// linker picks for the reference, which runs on any x86-64.
#pragma once

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdint>

namespace lowbit::kernels::act {
namespace {

// e^x = 2^n e^r, n = nearest(x log2 e), r = x - n ln 2 (ln 2 in two parts, the first exact in
// n * hi for |n| <= 128), e^r by a degree-7 polynomial on |r| <= ln 2 / 2 (Cephes' expf).
inline constexpr float kExpHi = 88.3f;            // n <= 127: 2^n stays normal
inline constexpr float kExpLo = -87.33654475f;    // n >= -126
inline constexpr float kLog2e = 1.44269504089f;
inline constexpr float kLn2Hi = 0.693359375f;
inline constexpr float kLn2Lo = -2.12194440e-4f;
inline constexpr float kExpP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                                   4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline float exp(float x) {
  if (std::isnan(x)) return x;
  if (x > kExpHi) return INFINITY;
  if (x < kExpLo) return 0.0f;
  const float n = std::nearbyint(x * kLog2e);
  float r = x - n * kLn2Hi;
  r = r - n * kLn2Lo;
  const float r2 = r * r;
  float p = kExpP[0];
  for (int i = 1; i < 6; ++i) p = p * r + kExpP[i];
  p = p * r2;
  p = p + r;
  p = p + 1.0f;
  const float scale = std::bit_cast<float>(static_cast<int32_t>(static_cast<int32_t>(n) + 127) << 23);
  return p * scale;
}

// erfc(u) e^(u^2) for u >= 0 as a polynomial in t = 1 / (1 + u / 2), fitted (weighted least
// squares, relative error) on u in [0, 10]; beyond that e^(-u^2) < 4e-44 and the product is 0.
inline constexpr float kErfcxC[10] = {-4.925993835e-06f, 2.821962833e-01f, 2.813429534e-01f,  2.484754026e-01f,
                                      1.855885684e-01f,  8.011044934e-03f, 2.332580537e-01f,  -4.513756931e-01f,
                                      2.684594095e-01f,  -5.595113337e-02f};
inline constexpr float kInvSqrt2 = 0.70710678118654752f;
inline constexpr float kInvSqrt2Pi = 0.39894228040143268f;  // the normal density at 0
inline constexpr float kSqrt2OverPi = 0.79788456080286536f;
inline constexpr float kCubic = 0.044715f;

// Phi(x), the standard normal distribution function, and e^(-x^2 / 2) (for the gradient).
inline float normal_cdf(float x, float* gauss) {
  const float u = std::fabs(x) * kInvSqrt2;
  const float t = 1.0f / (1.0f + 0.5f * u);
  float r = kErfcxC[9];
  for (int i = 8; i >= 0; --i) r = r * t + kErfcxC[i];
  const float e = act::exp(-(u * u));
  const float half_erfc = 0.5f * (e * r);  // 0.5 erfc(|x| / sqrt 2) = Phi(-|x|)
  *gauss = e;
  return x < 0.0f ? half_erfc : 1.0f - half_erfc;
}

inline float gelu_erf(float x) {
  float e;
  return x * normal_cdf(x, &e);
}
// The gradients' x factor, clamped to [-20, 20] (NaN stays NaN): beyond, the term it multiplies
// is exactly 0 in f32, and 0 * inf would be NaN.
inline constexpr float kGradClamp = 20.0f;
inline float grad_x(float x) { return std::min(std::max(x, -kGradClamp), kGradClamp); }

inline float gelu_erf_grad(float x) {
  float e;
  const float phi = normal_cdf(x, &e);
  return phi + grad_x(x) * (e * kInvSqrt2Pi);
}

// The tanh form as x sigmoid(2v), v = sqrt(2/pi) (x + 0.044715 x^3): s = 1 / (1 + e^(-2v)).
inline float gelu_tanh_sigmoid(float x) {
  const float x3 = (x * x) * x;
  const float v = kSqrt2OverPi * (x + kCubic * x3);
  return 1.0f / (1.0f + act::exp(-(v + v)));
}
inline float gelu_tanh(float x) { return x * gelu_tanh_sigmoid(x); }
inline float gelu_tanh_grad(float x) {
  const float s = gelu_tanh_sigmoid(x), xc = grad_x(x);
  const float dv = kSqrt2OverPi * (1.0f + (3.0f * kCubic) * (xc * xc));
  return s + xc * (((s + s) * (1.0f - s)) * dv);
}

}  // namespace
}  // namespace lowbit::kernels::act
