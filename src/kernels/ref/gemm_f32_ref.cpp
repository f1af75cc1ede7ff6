// The reference fp32 GEMM: the definition every fast path is tested against.
#include "kernels/gemm.h"
#include "kernels/paths.h"

#include <algorithm>

namespace lowbit::kernels {

void gemm_f32_ref(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                  const GemmEpilogue& epilogue) {
  for (int64_t i = 0; i < m; ++i) {
    for (int64_t j = 0; j < n; ++j) {
      float sum = 0.0f;
      for (int64_t p = 0; p < k; ++p) {
        float av = trans_a == Transpose::No ? a[i * lda + p] : a[p * lda + i];
        float bv = trans_b == Transpose::No ? b[p * ldb + j] : b[j * ldb + p];
        sum += av * bv;
      }
      float v = alpha * sum;
      if (beta != 0.0f) v += beta * c[i * ldc + j];
      if (epilogue.bias) v += epilogue.bias[j];
      if (epilogue.activation == Activation::Relu) v = std::max(v, 0.0f);
      c[i * ldc + j] = v;
    }
  }
}

}  // namespace lowbit::kernels
