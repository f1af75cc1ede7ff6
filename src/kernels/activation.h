// kernels/activation.h - the transcendental element-wise kernels of inference: e^x, softmax rows
// and GELU, with a scalar reference and an AVX2 path.
//
//   // Softmax over the last axis of scores [rows, n] (e.g. attention), in place allowed:
//   lowbit::softmax_rows_f32(rows, n, scores, n, probabilities, n);
//   // GELU of a transformer MLP's hidden activations (exact erf form):
//   lowbit::gelu_f32(count, hidden, activated, /*tanh_form=*/false);
//
// All paths perform the same IEEE single-precision operations in the same order (no FMA, no
// contraction: -ffp-contract=off), so their results are bit-identical whatever the path or the
// thread count (a NaN's sign bit aside); the tests compare every path the CPU has with the reference on awkward lengths.
// Accuracy against the exact functions (measured over dense grids, tests/kernels/test_activation.cpp):
//   exp_f32:   within 2 ulp for x in [-87.33, 88.3]; 0 below, +inf above, NaN for NaN.
//   gelu_f32:  |y - gelu(x)| <= (1e-6 + 2e-7 a) |gelu(x)| + 1e-37 for every float x, both forms,
//              where a is the exponent of the e^-a inside (x^2 / 2, or 2v for the tanh form),
//              rounded to f32 (1.2e-6 relative for x >= -4, where a < 8). Exact form: erfc through
//              a fitted polynomial in t = 1 / (1 + u / 2) times e^(-u^2); tanh form: x / (1 + e^(-2v)).
//              Gradient: within 2e-6 of the exact derivative.
//   softmax:   the row maximum subtracted, e^(x - max) divided by its sum, which is added up in
//              eight interleaved partial sums combined in a fixed tree (the AVX2 lane order):
//              within (1e-6 + 2^-24 |x - max|) relative (x - max is rounded to f32 first).
#pragma once

#include <cstdint>

namespace lowbit {

// y[i] = e^x[i]. y may alias x.
void exp_f32(int64_t n, const float* x, float* y);

// Each of `rows` rows of n values (row r at x + r * ldx) to its softmax (at y + r * ldy). One
// thread; y may alias x. A row whose maximum is -inf (all masked) gives NaNs, as PyTorch.
void softmax_rows_f32(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy);

// y = x Phi(x) (exact erf form) or x / (1 + e^(-2 sqrt(2/pi) (x + 0.044715 x^3))) (tanh form).
void gelu_f32(int64_t n, const float* x, float* y, bool tanh_form);
// dx = dy * d gelu(x) / dx of the same form (the derivative of the formula gelu_f32 evaluates).
void gelu_backward_f32(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form);

}  // namespace lowbit
