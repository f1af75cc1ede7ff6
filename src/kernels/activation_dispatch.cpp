// Chooses the path of kernels/activation.h: AVX-512 (element-wise kernels) or AVX2 where the CPU
// has them, else the reference; all bit-identical.
#include "kernels/activation.h"
#include "kernels/paths.h"
#include "lowbit/runtime_config.h"

namespace lowbit {
#if defined(LOWBIT_HAVE_X86)
namespace {
bool avx2() { return active_isa() >= Isa::Avx2; }
bool avx512() { return active_isa() >= Isa::Avx512Vnni; }
}  // namespace
#endif

void exp_f32(int64_t n, const float* x, float* y) {
#if defined(LOWBIT_HAVE_X86)
  if (avx512()) return kernels::exp_f32_avx512(n, x, y);
  if (avx2()) return kernels::exp_f32_avx2(n, x, y);
#endif
  kernels::exp_f32_ref(n, x, y);
}

void softmax_rows_f32(int64_t rows, int64_t n, const float* x, int64_t ldx, float* y, int64_t ldy) {
  void (*row)(int64_t, const float*, float*) = kernels::softmax_row_f32_ref;
#if defined(LOWBIT_HAVE_X86)
  if (avx2()) row = kernels::softmax_row_f32_avx2;
  if (avx512()) row = kernels::softmax_row_f32_avx512;
#endif
  for (int64_t r = 0; r < rows; ++r) row(n, x + r * ldx, y + r * ldy);
}

void gelu_f32(int64_t n, const float* x, float* y, bool tanh_form) {
#if defined(LOWBIT_HAVE_X86)
  if (avx512()) return kernels::gelu_f32_avx512(n, x, y, tanh_form);
  if (avx2()) return kernels::gelu_f32_avx2(n, x, y, tanh_form);
#endif
  kernels::gelu_f32_ref(n, x, y, tanh_form);
}

void gelu_backward_f32(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form) {
#if defined(LOWBIT_HAVE_X86)
  if (avx512()) return kernels::gelu_backward_f32_avx512(n, x, dy, dx, tanh_form);
  if (avx2()) return kernels::gelu_backward_f32_avx2(n, x, dy, dx, tanh_form);
#endif
  kernels::gelu_backward_f32_ref(n, x, dy, dx, tanh_form);
}

}  // namespace lowbit
