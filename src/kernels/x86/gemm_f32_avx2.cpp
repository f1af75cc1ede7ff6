// PLACEHOLDER until the AVX2 kernel lands: forwards to the reference.
#include "lowbit/gemm.h"
namespace lowbit::kernels {
void gemm_f32_avx2(Transpose ta, Transpose tb, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
                   int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                   const GemmEpilogue& ep) {
  gemm_f32_ref(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, ep);
}
}  // namespace lowbit::kernels
