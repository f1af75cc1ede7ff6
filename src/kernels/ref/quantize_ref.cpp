// Reference activation quantize / dequantize (contract: kernels/qgemm.h).
#include <cmath>

#include "kernels/qgemm.h"
#include "kernels/paths.h"

namespace lowbit::kernels {

void quantize_s8_ref(int64_t n, const float* x, float scale, int32_t zero_point, int8_t* q) {
  const float zp = static_cast<float>(zero_point);
  for (int64_t i = 0; i < n; ++i) {
    const float v = std::nearbyint(x[i] / scale) + zp;
    q[i] = static_cast<int8_t>(std::fmin(std::fmax(v, -128.0f), 127.0f));
  }
}

void dequantize_s8_ref(int64_t n, const int8_t* q, float scale, int32_t zero_point, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = scale * static_cast<float>(q[i] - zero_point);
}

void dequantize_u8_ref(int64_t n, const uint8_t* q, float scale, int32_t zero_point, float* y) {
  for (int64_t i = 0; i < n; ++i) y[i] = scale * static_cast<float>(q[i] - zero_point);
}

}  // namespace lowbit::kernels
