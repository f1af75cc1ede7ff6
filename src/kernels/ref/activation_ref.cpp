// The reference of kernels/activation.h: the formulas of activation_math.h, element by element.
#include <algorithm>

#include "kernels/activation_math.h"
#include "kernels/paths.h"

namespace lowbit::kernels {

void exp_f32_ref(int64_t n, const float* x, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = act::exp(x[i]);
}

void softmax_row_f32_ref(int64_t n, const float* x, float* y) {
  float peak = -INFINITY;
  for (int64_t i = 0; i < n; ++i) peak = std::max(peak, x[i]);
  float lane[8] = {};
  const int64_t whole = n / 8 * 8;
  for (int64_t i = 0; i < n; ++i) y[i] = act::exp(x[i] - peak);
  for (int64_t i = 0; i < whole; ++i) lane[i % 8] += y[i];
  // The AVX2 lane tree: the upper half onto the lower, then pairs, then the last two.
  float quad[4], pair[2];
  for (int j = 0; j < 4; ++j) quad[j] = lane[j] + lane[j + 4];
  for (int j = 0; j < 2; ++j) pair[j] = quad[j] + quad[j + 2];
  float sum = pair[0] + pair[1];
  for (int64_t i = whole; i < n; ++i) sum += y[i];
  const float inv = 1.0f / sum;
  for (int64_t i = 0; i < n; ++i) y[i] *= inv;
}

void gelu_f32_ref(int64_t n, const float* x, float* y, bool tanh_form) {
  for (int64_t i = 0; i < n; ++i) y[i] = tanh_form ? act::gelu_tanh(x[i]) : act::gelu_erf(x[i]);
}

void gelu_backward_f32_ref(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form) {
  for (int64_t i = 0; i < n; ++i) dx[i] = dy[i] * (tanh_form ? act::gelu_tanh_grad(x[i]) : act::gelu_erf_grad(x[i]));
}

}  // namespace lowbit::kernels
