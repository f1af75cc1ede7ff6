// Chooses the GEMM implementation: the fastest path the CPU supports, reference last.
#include "kernels/gemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

namespace lowbit {

void gemm_f32(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
              const GemmEpilogue& epilogue) {
  if (m <= 0 || n <= 0) return;
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) {
    kernels::gemm_f32_avx2(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
    return;
  }
#endif
  kernels::gemm_f32_ref(trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc, epilogue);
}

}  // namespace lowbit
