// Internal: every implementation of the public kernels of gemm.h, qgemm.h and elementwise.h (and
// the AVX2 build of pool.h's max pooling) by name: the reference loops (the normative definitions) and the per-ISA paths. The dispatchers
// (gemm_dispatch.cpp, qgemm_dispatch.cpp, quantize_dispatch.cpp, elementwise_dispatch.cpp) choose
// among them; the kernel tests compare them. Nothing outside src/kernels and tests/kernels calls
// them: the public headers show only the dispatching entry points.
#pragma once

#include <cstdint>

#include "kernels/activation.h"
#include "kernels/conv_geometry.h"
#include "kernels/elementwise.h"
#include "kernels/gemm.h"
#include "kernels/blockq.h"
#include "kernels/qgemm.h"

namespace lowbit::kernels {

// ---- gemm.h ------------------------------------------------------------------------------------
// The normative definition: plain loops, one thread. Same contract as gemm_f32.
void gemm_f32_ref(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                  const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                  const GemmEpilogue& epilogue);
// Packed, cache-blocked, register-tiled AVX2/FMA path (defined only in x86 builds; call through
// gemm_f32, which checks the CPU first).
void gemm_f32_avx2(Transpose trans_a, Transpose trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                   const float* a, int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc,
                   const GemmEpilogue& epilogue);

// ---- qgemm.h -----------------------------------------------------------------------------------
// The normative definitions: plain loops, one thread.
void qgemm_s8_ref(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
                  int64_t ldc);
void qgemm_s8_f32_ref(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                      int64_t ldc);
void row_sums_s8_ref(int64_t m, int64_t k, const int8_t* a, int64_t lda, int32_t* sums);
void quantize_s8_ref(int64_t n, const float* x, float scale, int32_t zero_point, int8_t* q);
void dequantize_s8_ref(int64_t n, const int8_t* q, float scale, int32_t zero_point, float* y);
void dequantize_u8_ref(int64_t n, const uint8_t* q, float scale, int32_t zero_point, float* y);
void dequantize_u8_avx2(int64_t n, const uint8_t* q, float scale, int32_t zero_point, float* y);
void quantize_s8_avx2(int64_t n, const float* x, float scale, int32_t zero_point, int8_t* q);
void dequantize_s8_avx2(int64_t n, const int8_t* q, float scale, int32_t zero_point, float* y);
// AVX-512 VNNI paths (x86 builds, CPUs with VNNI): return false, writing nothing, if they cannot
// run (no buffer); the dispatcher then takes the next path.
bool qgemm_s8_vnni(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
                   int64_t ldc);
bool qgemm_s8_f32_vnni(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                       int64_t ldc);
// AVX2 paths (defined only in x86 builds; call through the public functions, which check the CPU).
// qgemm_s8_avx2 expects -2^31+128 <= output_zero_point <= 2^31-129 (qgemm_s8 routes other values
// to the reference).
void qgemm_s8_avx2(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
                   int64_t ldc);
void qgemm_s8_f32_avx2(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                       int64_t ldc);
void row_sums_s8_avx2(int64_t m, int64_t k, const int8_t* a, int64_t lda, int32_t* sums);

// ---- activation.h --------------------------------------------------------------------------------
// The reference (activation_math.h's formulas element by element) and the AVX2 path, bit-identical.
void exp_f32_ref(int64_t n, const float* x, float* y);
void softmax_row_f32_ref(int64_t n, const float* x, float* y);
void gelu_f32_ref(int64_t n, const float* x, float* y, bool tanh_form);
void gelu_backward_f32_ref(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form);
void exp_f32_avx2(int64_t n, const float* x, float* y);
void softmax_row_f32_avx2(int64_t n, const float* x, float* y);
void gelu_f32_avx2(int64_t n, const float* x, float* y, bool tanh_form);
void gelu_backward_f32_avx2(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form);
// AVX-512 (x86 builds, CPUs with AVX-512 F: active_isa() Avx512Vnni), bit-identical as well.
void exp_f32_avx512(int64_t n, const float* x, float* y);
void softmax_row_f32_avx512(int64_t n, const float* x, float* y);
void gelu_f32_avx512(int64_t n, const float* x, float* y, bool tanh_form);
void gelu_backward_f32_avx512(int64_t n, const float* x, const float* dy, float* dx, bool tanh_form);

// ---- blockq.h ------------------------------------------------------------------------------------
// Rows of X quantized per block (quantize_rows_s8_block): codes [M, stride] with stride = blocks * B,
// scales s and code sums t [M, blocks].
struct BlockQuantizedRows {
  const int8_t* xq;
  const float* s;
  const int32_t* t;
  int64_t stride, blocks;
};
// Code j (0..31) of a 32-code sub-block in the storage layout of blockq.h.
int32_t block_code_at(const uint8_t* sub, int bits, int j);
void quantize_rows_s8_block_ref(int64_t m, int64_t k, int64_t block, const float* x, int64_t ldx, int8_t* xq, float* s,
                                int32_t* t);
void quantize_rows_s8_block_avx2(int64_t m, int64_t k, int64_t block, const float* x, int64_t ldx, int8_t* xq, float* s,
                                 int32_t* t);
// Columns [n0, n1) of Y (the reference reads the storage layout; weight-only reads X itself).
void block_gemm_s8_ref(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out, float* y,
                       int64_t ldy, int64_t n0, int64_t n1);
void block_gemm_f32_ref(int64_t m, const float* x, int64_t ldx, const BlockWeights& w, const BlockOutput& out, float* y,
                        int64_t ldy, int64_t n0, int64_t n1);
// Panels [p0, p1) of BlockWeights::kPanel columns, from the Avx2 panel layout.
void block_gemm_s8_avx2(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out, float* y,
                        int64_t ldy, int64_t p0, int64_t p1);
// Panels [p0, p1) of BlockWeights::kVnniPanel columns, from the Avx512Vnni panel layout.
void block_gemm_s8_avx512vnni(int64_t m, const BlockQuantizedRows& x, const BlockWeights& w, const BlockOutput& out,
                              float* y, int64_t ldy, int64_t p0, int64_t p1);

// ---- elementwise.h -----------------------------------------------------------------------------
void fake_quantize_f32_ref(int64_t n, const float* x, const FakeQuantGrid& grid, float* y);
void fake_quantize_f32_avx2(int64_t n, const float* x, const FakeQuantGrid& grid, float* y);
double fake_quantize_backward_f32_ref(int64_t n, const float* x, const float* dy, const FakeQuantGrid& grid, float* dx,
                                      bool scale_gradient);
double fake_quantize_backward_f32_avx2(int64_t n, const float* x, const float* dy, const FakeQuantGrid& grid, float* dx,
                                       bool scale_gradient);
void minmax_f32_ref(int64_t n, const float* x, float* min, float* max);
void minmax_f32_avx2(int64_t n, const float* x, float* min, float* max);
void adam_update_f32_ref(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c);
void adam_update_f32_avx2(int64_t n, float* w, const float* g, float* m, float* v, const AdamConstants& c);

// ---- pool.h (internal) -------------------------------------------------------------------------
// Planes [p0, p1) of the forward max pooling: kernels/maxpool_plane.h's loops compiled for AVX2
// (the portable build of the same source is maxpool_planes in pool.cpp).
void maxpool_planes_avx2(const PoolGeometry& g, const float* x, float* y, int64_t p0, int64_t p1);
void maxpool_planes_avx2(const PoolGeometry& g, const int8_t* x, int8_t* y, int64_t p0, int64_t p1);

}  // namespace lowbit::kernels
