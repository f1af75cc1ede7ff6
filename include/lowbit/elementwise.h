// lowbit/elementwise.h - element-wise kernels of the training loop, with reference and AVX2 paths.
//
//   // One Adam step over n parameters (see lowbit::Adam for the formula):
//   lowbit::adam_update_f32(n, w, g, m, v, {beta1, beta2, step, inv_root, epsilon});
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

namespace kernels {
void minmax_f32_ref(int64_t n, const float* x, float* min, float* max);
void minmax_f32_avx2(int64_t n, const float* x, float* min, float* max);
void adam_update_f32_ref(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c);
void adam_update_f32_avx2(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c);
}  // namespace kernels

}  // namespace lowbit
