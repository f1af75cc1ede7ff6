#include "kernels/elementwise.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

namespace lowbit {

void minmax_f32(int64_t n, const float* x, float* min, float* max) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::minmax_f32_avx2(n, x, min, max);
#endif
  kernels::minmax_f32_ref(n, x, min, max);
}

void adam_update_f32(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::adam_update_f32_avx2(n, w, g, m, v, c);
#endif
  kernels::adam_update_f32_ref(n, w, g, m, v, c);
}

void fake_quantize_f32(int64_t n, const float* x, const FakeQuantGrid& grid, float* y) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::fake_quantize_f32_avx2(n, x, grid, y);
#endif
  kernels::fake_quantize_f32_ref(n, x, grid, y);
}

double fake_quantize_backward_f32(int64_t n, const float* x, const float* dy, const FakeQuantGrid& grid, float* dx,
                                  bool scale_gradient) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::fake_quantize_backward_f32_avx2(n, x, dy, grid, dx, scale_gradient);
#endif
  return kernels::fake_quantize_backward_f32_ref(n, x, dy, grid, dx, scale_gradient);
}

}  // namespace lowbit
