// kernels/gemm.h - single-precision matrix multiplication with a fused epilogue.
//
// All matrices are row-major. gemm_f32 computes
//
//     C[M,N] = activation( alpha * op(A)[M,K] * op(B)[K,N] + beta * C + bias[N] )
//
// where op(X) is X or its transpose. With beta == 0, C is not read (it may hold NaN).
// It dispatches at run time to the fastest kernel the CPU has (see runtime_config.h) and runs on
// lowbit::num_threads() threads. Every path agrees with gemm_f32_ref up to rounding: only the
// order of the additions differs, so elementwise, with u = 2^-24 (to first order in K*u),
//     |fast - ref| <= 2*K*u * |alpha| * sum_p |a_ip*b_pj|  (+ a few ulp of the epilogue terms)
//                 <= 1.2e-7 * K^2 * |alpha| * max|a| * max|b|.
// Rounding errors of mixed signs partly cancel, and in practice the difference stays well inside
//     |fast - ref| <= 1e-5 * K * |alpha| * max|a| * max|b|
// (what the tests check; same-sign data at K = 20000 reaches 0.16 of it, mixed signs 0.003).
//
//   // Dense layer on m rows: Y[m,out] = relu(X[m,in] * W[out,in]^T + b[out])
//   lowbit::gemm_f32(lowbit::Transpose::No, lowbit::Transpose::Yes, m, out, in,
//                    1.0f, x, in, w, in, 0.0f, y, out, {b, lowbit::Activation::Relu});
#pragma once

#include <cstdint>

namespace lowbit {

enum class Transpose : uint8_t { No, Yes };
enum class Activation : uint8_t { None, Relu };

struct GemmEpilogue {
  const float* bias = nullptr;  // length N, added to every row; nullptr for none
  Activation activation = Activation::None;
};

void gemm_f32(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha,
              const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
              const GemmEpilogue& epilogue = {});

}  // namespace lowbit
