// Chooses the integer GEMM implementation: the fastest path the CPU supports, reference last.
#include <cstdint>

#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

namespace lowbit {
namespace {
// VNNI for s8 weights, and for packed low-bit weights from batch 5 up: batch 1-4 GEMVs stay on the
// AVX2 kernel, which reads the packed codes (memory-bound) instead of the unpacked s8 layout.
[[maybe_unused]] bool use_vnni(int64_t m, const QWeights& w) {
  return active_isa() >= Isa::Avx512Vnni && w.vnni_layout().defined() && (w.storage() == DType::S8 || m > 4);
}
}  // namespace

void qgemm_s8(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
              int64_t ldc) {
  if (m <= 0 || w.n() <= 0) return;
#if defined(LOWBIT_HAVE_X86)
  // The vector output stage clamps in s32 around the zero point; absurd zero points (beyond
  // +-(2^31 - 129)) are left to the reference, which computes in 64-bit.
  const bool zp_ok = out.output_zero_point >= INT32_MIN + 128 && out.output_zero_point <= INT32_MAX - 128;
  if (use_vnni(m, w) && zp_ok && kernels::qgemm_s8_vnni(m, a, lda, w, out, c, ldc)) return;
  if (active_isa() >= Isa::Avx2 && zp_ok && w.kernel_layout().defined()) {
    kernels::qgemm_s8_avx2(m, a, lda, w, out, c, ldc);
    return;
  }
#endif
  kernels::qgemm_s8_ref(m, a, lda, w, out, c, ldc);
}

void qgemm_s8_f32(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                  int64_t ldc) {
  if (m <= 0 || w.n() <= 0) return;
#if defined(LOWBIT_HAVE_X86)
  if (use_vnni(m, w) && kernels::qgemm_s8_f32_vnni(m, a, lda, w, out, c, ldc)) return;
  if (active_isa() >= Isa::Avx2 && w.kernel_layout().defined()) {
    kernels::qgemm_s8_f32_avx2(m, a, lda, w, out, c, ldc);
    return;
  }
#endif
  kernels::qgemm_s8_f32_ref(m, a, lda, w, out, c, ldc);
}

void row_sums_s8(int64_t m, int64_t k, const int8_t* a, int64_t lda, int32_t* sums) {
  if (m <= 0) return;
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) {
    kernels::row_sums_s8_avx2(m, k, a, lda, sums);
    return;
  }
#endif
  kernels::row_sums_s8_ref(m, k, a, lda, sums);
}

}  // namespace lowbit
