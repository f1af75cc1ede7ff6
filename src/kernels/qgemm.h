// kernels/qgemm.h - integer matrix multiplication for quantized layers.
//
// The integer path multiplies s8 activation codes by weight codes held in s8 or packed 4-bit /
// 2-bit form, accumulates exactly in s32, and finishes with an output stage that either
// requantizes to s8 (static, integer-only inference) or scales to f32 (dynamic quantization and
// the last layer). docs/design/quantization.md derives every formula.
//
//   // Weights [N, K] as codes in [-127, 127] (or packed s4/u4/s2/u2 rows, see pack_codes):
//   lowbit::QWeights w = lowbit::QWeights::pack(codes_tensor, n, k);          // once, at load
//   lowbit::QOutputStage stage;   // per layer, once: offsets, multipliers or scales (below)
//   lowbit::qgemm_s8(m, a_codes, k, w, stage, c_codes, n);                    // C[M,N] s8
//   lowbit::qgemm_s8_f32(m, a_codes, k, w, stage, c_float, n);               // C[M,N] f32
//
// Contract shared by every implementation (reference, AVX2):
//   raw[m][n]  = sum_k a[m][k] * w[n][k]                          exact, in s32
//   acc[m][n]  = raw + column_offset[n] - weight_zero_point[n] * row_offset[m]
//                (the last term only when weight_zero_point != nullptr)
//   s8 output:  c = clamp(output_zero_point + multiplier[n].apply(acc), clamp_min, clamp_max)
//   f32 output: c = acc * row_scale[m] * column_scale[n] + bias[n], then ReLU if relu
// Activation codes are s8 in [-128, 127]; weight codes must lie in [-127, 127] (weights use the
// narrow range), which keeps every pair of products inside s16 (|pair| <= 32512): the AVX2 path
// is bit-exact with the reference (see the design note, "16-bit saturation", and
// src/kernels/x86/qgemm_avx2.cpp for how each weight storage avoids vpmaddubsw saturation).
// Integer outputs are bit-exact across paths and thread counts; f32 outputs agree within
// 1e-6 relative (the same float operations, possibly fused differently).
// Precise rules (every path): raw, acc and the wzp*row_offset product wrap modulo 2^32 like s32
// vector arithmetic (only reachable for K > 132000 or huge offsets); the s8 result is
//   c = sat8(min(max(output_zero_point + multiplier[n].apply(acc), clamp_min), clamp_max))
// computed in 64-bit (sat8: saturate to [-128, 127]; with -128 <= clamp_min <= clamp_max <= 127
// this is the formula above). The f32 result is ((float(acc) * row_scale[m]) * column_scale[n])
// + bias[n], rounded after each operation, then max(., 0) if relu (NaN -> 0); the AVX2 path uses
// exactly these operations, so it is in fact bit-identical to the reference.
#pragma once

#include <cstdint>
#include <memory>
#include <vector>

#include "lowbit/quant_params.h"
#include "lowbit/runtime_config.h"
#include "lowbit/tensor.h"

namespace lowbit {

// Weights prepared once for the integer kernels: codes unpacked/reordered into whatever layout
// the active kernel streams best, plus per-row sums of the codes (for zero-point corrections).
class QWeights {
 public:
  // `codes`: dtype s8 (one code per byte, rows of K) or s4/u4/s2/u2 packed as by pack_codes
  // (rows padded to whole bytes). Throws Error(InvalidArgument) if the tensor is too small or an
  // s8 code is -128. Builds only the layouts of the kernels that `isa` runs (by default the ISA
  // active now, so under an Executor its own): none for the reference (it reads the codes), the
  // AVX2 layout from AVX2 up, and the VNNI layout too on AVX-512 VNNI (where batches of 1-4 on
  // low-bit weights stay on the AVX2 kernel). The dispatch runs the reference on weights packed
  // for none of the fast kernels.
  static QWeights pack(const Tensor& codes, int64_t n, int64_t k, Isa isa = active_isa());
  // Weights that change on every call (attention's keys and values, QAttention): s8 codes read in
  // place, w[r][c] = codes[r * row_stride + c * col_stride], with -128 read as -127 (the narrow
  // range), into this object's buffers (reused when large enough: no allocation in steady state).
  // Keeps the codes (the reference reads them), the row sums and the layout of the one kernel that
  // `isa` runs: the VNNI layout on AVX-512 VNNI, else the AVX2 one.
  void assign_s8(const int8_t* codes, int64_t row_stride, int64_t col_stride, int64_t n, int64_t k, Isa isa = active_isa());
  int64_t n() const noexcept { return n_; }
  int64_t k() const noexcept { return k_; }
  DType storage() const noexcept { return storage_; }
  const std::vector<int32_t>& row_sums() const noexcept { return row_sums_; }  // sum_k w[n][k]
  // Implementation details, used by the kernels.
  const Tensor& codes() const noexcept { return codes_; }    // as given (packed or s8)
  // U8 bytes, panels of kLayoutPanel = 16 output columns (the last one zero-padded), panel after
  // panel; inside a panel K is cut into groups, each group 64 bytes = 16 columns x 4 bytes:
  //   s8:        group g holds w[n][2g], w[n][2g+1] as two s16 (zero past K): the vpmaddwd
  //              operand layout.
  //   s4/u4/s2/u2 (kept packed, 4x/2x smaller than s8): a group covers 4*P codes per column
  //              (P = 8/bits codes per byte); byte j of column n in group g holds, at bits
  //              [bits*t, bits*(t+1)), the code of k = 4*P*g + 4*t + j plus an offset making it
  //              unsigned (8 for s4, 2 for s2, 0 for u4/u2); zero past K. Masking plane t of a
  //              32-byte load gives 8 columns x 4 consecutive k, the vpmaddubsw operand layout.
  static constexpr int64_t kLayoutPanel = 16;
  int64_t layout_groups() const noexcept { return groups_; }  // groups per panel
  const Tensor& kernel_layout() const noexcept { return layout_; }  // empty when packed for the reference
  // Packed for AVX-512 VNNI (else empty): every storage unpacked to u8 codes + 128, panels of 16
  // columns, per panel ceil(K/4) groups of 16 columns x 4 consecutive k (vpdpbusd's unsigned operand).
  const Tensor& vnni_layout() const noexcept { return vnni_layout_; }

 private:
  int64_t n_ = 0, k_ = 0, groups_ = 0;
  DType storage_ = DType::S8;
  Tensor codes_, layout_, vnni_layout_;
  std::vector<int32_t> row_sums_;
};

struct QOutputStage {
  const int32_t* column_offset = nullptr;       // [N], required
  const int32_t* weight_zero_point = nullptr;   // [N] or nullptr (all zero)
  const int32_t* row_offset = nullptr;          // [M], read only with weight_zero_point
  // s8 output
  const FixedPointMultiplier* multiplier = nullptr;  // [N]
  int32_t output_zero_point = 0;
  int32_t clamp_min = -128, clamp_max = 127;
  // f32 output
  const float* row_scale = nullptr;     // [M] or nullptr (all 1)
  const float* column_scale = nullptr;  // [N]
  const float* bias = nullptr;          // [N] or nullptr
  bool relu = false;
};

// C[M,N] (s8, row stride ldc) from A[M,K] (s8 codes, row stride lda) and prepared weights.
void qgemm_s8(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
              int64_t ldc);
// The same product finished in f32.
void qgemm_s8_f32(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                  int64_t ldc);
// Activation quantization, element-wise over n values, 8-bit signed affine:
//   q = clamp(round_half_even(x / scale) + zero_point, -128, 127)   (NaN gives -128)
//   y = scale * (q - zero_point)
// exactly QuantParams::quantize / dequantize for 8-bit signed affine parameters, on every path.
void quantize_s8(int64_t n, const float* x, float scale, int32_t zero_point, int8_t* q);
void dequantize_s8(int64_t n, const int8_t* q, float scale, int32_t zero_point, float* y);
void dequantize_u8(int64_t n, const uint8_t* q, float scale, int32_t zero_point, float* y);

// Row sums of A, sum_k a[m][k], for the weight-zero-point correction.
void row_sums_s8(int64_t m, int64_t k, const int8_t* a, int64_t lda, int32_t* sums);

}  // namespace lowbit
