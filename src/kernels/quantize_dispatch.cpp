// Chooses the activation quantize / dequantize implementation.
#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

namespace lowbit {

void quantize_s8(int64_t n, const float* x, float scale, int32_t zero_point, int8_t* q) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::quantize_s8_avx2(n, x, scale, zero_point, q);
#endif
  kernels::quantize_s8_ref(n, x, scale, zero_point, q);
}

void dequantize_s8(int64_t n, const int8_t* q, float scale, int32_t zero_point, float* y) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::dequantize_s8_avx2(n, q, scale, zero_point, y);
#endif
  kernels::dequantize_s8_ref(n, q, scale, zero_point, y);
}

void dequantize_u8(int64_t n, const uint8_t* q, float scale, int32_t zero_point, float* y) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::dequantize_u8_avx2(n, q, scale, zero_point, y);
#endif
  kernels::dequantize_u8_ref(n, q, scale, zero_point, y);
}

}  // namespace lowbit
