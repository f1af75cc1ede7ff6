// The reference block-quantized products: the definition of kernels/blockq.h, plain loops.
#include <algorithm>
#include <cmath>

#include "kernels/paths.h"

namespace lowbit::kernels {

void quantize_rows_s8_block_ref(int64_t m, int64_t k, int64_t block, const float* x, int64_t ldx, int8_t* xq, float* s,
                                int32_t* t) {
  const int64_t blocks = (k + block - 1) / block;
  for (int64_t r = 0; r < m; ++r)
    for (int64_t b = 0; b < blocks; ++b) {
      const float* src = x + r * ldx + b * block;
      const int64_t count = std::min(block, k - b * block);
      float amax = 0.0f;
      for (int64_t i = 0; i < count; ++i) amax = std::max(amax, std::fabs(src[i]));
      int8_t* q = xq + r * blocks * block + b * block;
      const float inverse = amax > 0.0f ? 127.0f / amax : 0.0f;
      int32_t sum = 0;
      for (int64_t i = 0; i < block; ++i) {
        // |x * inverse| <= 127 (+ rounding); NaN becomes -128, as the vector conversion and packs give it.
        const float v = i < count ? std::nearbyint(src[i] * inverse) : 0.0f;
        q[i] = v >= -128.0f && v <= 127.0f ? static_cast<int8_t>(v) : int8_t{-128};
        sum += q[i];
      }
      s[r * blocks + b] = amax / 127.0f;
      t[r * blocks + b] = sum;
    }
}

void block_gemm_s8_ref(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out, float* y,
                       int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t blocks = w.blocks(), block = w.block(), bb = block_bytes(w.bits(), block), sub = block_bytes(w.bits(), 32);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* codes = w.codes().data() + (n * blocks + b) * bb;
        const int8_t* q = x.xq + r * x.stride + b * block;
        int32_t dot = 0;
        for (int64_t i = 0; i < block; ++i) dot += block_code_at(codes + (i / 32) * sub, w.bits(), static_cast<int>(i % 32)) * q[i];
        dot -= w.zero_point(n, b) * x.t[r * x.blocks + b];
        const float ds = f16_to_f32(w.scales()[static_cast<size_t>(n * blocks + b)]) * x.s[r * x.blocks + b];
        acc = std::fma(ds, static_cast<float>(dot), acc);
      }
      float v = out.bias ? acc + out.bias[n] : acc;
      if (out.relu) v = v > 0.0f ? v : 0.0f;
      y[r * ldy + n] = v;
    }
}

void block_gemm_f32_ref(int64_t m, const float* x, int64_t ldx, const BlockWeights& w, const BlockOutput& out, float* y,
                        int64_t ldy, int64_t n0, int64_t n1) {
  const int64_t blocks = w.blocks(), block = w.block(), k = w.k(), bb = block_bytes(w.bits(), block);
  const int64_t sub = block_bytes(w.bits(), 32);
  for (int64_t r = 0; r < m; ++r)
    for (int64_t n = n0; n < n1; ++n) {
      float acc = 0.0f;
      for (int64_t b = 0; b < blocks; ++b) {
        const uint8_t* codes = w.codes().data() + (n * blocks + b) * bb;
        const int32_t z = w.zero_point(n, b);
        float dot = 0.0f;
        for (int64_t i = 0; i < block && b * block + i < k; ++i)
          dot += x[r * ldx + b * block + i] *
                 static_cast<float>(block_code_at(codes + (i / 32) * sub, w.bits(), static_cast<int>(i % 32)) - z);
        acc += f16_to_f32(w.scales()[static_cast<size_t>(n * blocks + b)]) * dot;
      }
      float v = out.bias ? acc + out.bias[n] : acc;
      if (out.relu) v = v > 0.0f ? v : 0.0f;
      y[r * ldy + n] = v;
    }
}

}  // namespace lowbit::kernels
