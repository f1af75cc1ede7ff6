// kernels/blockq.h - products with block-quantized weights (group-wise scales along K).
//
// Each output column n of the weights W [N, K] is cut along K into blocks of B = 32, 64 or 128
// values; each block has its own scale d (fp16) and zero point z, and its values are 2-, 3- or
// 4-bit unsigned codes q:  w[n][k] = d[n][b] * (q[n][k] - z[n][b]),  b = k / B.
// (llama.cpp's Q4_0 / Q4_1 and ONNX Runtime's MatMulNBits store weights the same way.)
//
//   lowbit::BlockWeights w = lowbit::BlockWeights::pack(codes, scales, zero_points, n, k, 4, 32);  // once
//   lowbit::BlockOutput out{bias, false};
//   lowbit::block_gemm(m, x, k, w, out, y, n, workspace);    // Y[M,N] = X[M,K] W^T + bias, f32
//
// Storage (BlockQDense's inputs, docs/ops.md): codes u8 [N, blocks * block_bytes], block after
// block, zero past K; a block is B/32 sub-blocks of 32 codes q[0..31], each packed as
//   4 bits: 16 bytes, byte i = q[i] | q[i+16] << 4
//   2 bits:  8 bytes, byte i = q[i] | q[i+8] << 2 | q[i+16] << 4 | q[i+24] << 6
//   3 bits: the low two bits of each code as 2 bits (8 bytes), then 4 bytes holding bit 2 of q[j]
//           as bit j of a little-endian 32-bit word
// (the layouts a register unpacks with one shift and one AND per 32 codes: 4, 2 and 3 bits per
// weight exactly). Scales f16 [N, blocks]; zero points u8 [N, blocks] in [0, 2^bits - 1], or none
// (symmetric: z = 2^(bits-1) everywhere).
//
// Compute (every implementation, InputQuantization::S8Block): each row of X is quantized per
// block of B values, symmetric int8 (llama.cpp's Q8 activations, MatMulNBits' accuracy level 4):
//   amax = max |x[k]| over the block;  s = amax / 127;  xq[k] = round_half_even(x[k] * (127 / amax))
//   (amax = 0: s = 0 and xq = 0), t = sum_k xq[k] over the block.
// Then per row m and column n, blocks in order, in f32:
//   dot  = sum_k q[n][k] * xq[m][k] - z[n][b] * t[m][b]        exact, in s32
//   acc  = fma(d[n][b] * s[m][b], float(dot), acc)             acc starts at 0
//   y    = acc + bias[n], then max(y, 0) if relu
// The AVX2 and AVX-512 VNNI paths compute exactly these operations in this order, so they are
// bit-identical to the reference on every shape and thread count.
// InputQuantization::None (weight-only): y = sum_b d[n][b] * (sum_k x[m][k] * (q[n][k] - z[n][b]))
// + bias, in f32 (the reference only; results of other paths would agree within float rounding).
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "lowbit/runtime_config.h"
#include "lowbit/tensor.h"
#include "lowbit/workspace.h"

namespace lowbit {

// Bytes of one block of `block` codes of `bits` bits (block a multiple of 32).
constexpr int64_t block_bytes(int bits, int64_t block) noexcept { return block / 32 * (bits == 3 ? 12 : bits * 4); }
// Packs codes [n, k] (row-major, each in [0, 2^bits)) into the storage layout above, and back.
std::vector<uint8_t> pack_block_codes(std::span<const int32_t> codes, int64_t n, int64_t k, int bits, int64_t block);
std::vector<int32_t> unpack_block_codes(std::span<const uint8_t> packed, int64_t n, int64_t k, int bits, int64_t block);

enum class InputQuantization : uint8_t { S8Block, None };

class BlockWeights {
 public:
  // codes: n * blocks * block_bytes bytes as above; scales: n * blocks f16 bit patterns; zero
  // points: n * blocks bytes, or empty for symmetric weights. Throws Error(InvalidArgument) for a
  // bit width other than 2, 3, 4, a block size other than 32, 64, 128, or sizes that disagree.
  // Builds the panel layout of the best kernel `isa` allows (by default the ISA active now).
  static BlockWeights pack(std::span<const uint8_t> codes, std::span<const uint16_t> scales,
                           std::span<const uint8_t> zero_points, int64_t n, int64_t k, int bits, int64_t block,
                           Isa isa = active_isa());
  int64_t n() const noexcept { return n_; }
  int64_t k() const noexcept { return k_; }
  int bits() const noexcept { return bits_; }
  int64_t block() const noexcept { return block_; }
  int64_t blocks() const noexcept { return (k_ + block_ - 1) / block_; }
  bool symmetric() const noexcept { return zero_points_.empty(); }
  // As given (the reference reads these).
  const std::vector<uint8_t>& codes() const noexcept { return codes_; }
  const std::vector<uint16_t>& scales() const noexcept { return scales_; }
  int32_t zero_point(int64_t n, int64_t b) const noexcept {
    return zero_points_.empty() ? 1 << (bits_ - 1) : zero_points_[static_cast<size_t>(n * blocks() + b)];
  }
  // The panel layout the SIMD kernels read (empty when packed for the reference), one of:
  //  - Avx2: panels of 8 columns (the last zero-padded), panel after panel, block after block; per
  //    (panel, block): sub-block after sub-block of 32 codes, the 8 columns' bytes of it side by
  //    side (8 x 16 bytes, the 4-bit storage layout: two neighbouring columns are one 32-byte
  //    load). 2- and 3-bit codes are widened to 4 bits here (so they run as fast as 4-bit ones on
  //    AVX2, holding 4 bits a weight in memory while they run; the file keeps 2 or 3).
  //  - Avx512Vnni: panels of 16 columns, one per 32-bit lane, so that vpdpbusd leaves the 16
  //    column sums in one register with no reduction. Per (panel, block), sub-block after sub-block
  //    of 32 codes k = 0..31, as groups g = 0..7 of four (k = 4g + i): byte 4c + i of a 64-byte
  //    vector belongs to column c, code 4g + i, and holds
  //      4 bits: 4 vectors, vector v: group 2v in the low nibble, group 2v+1 in the high nibble;
  //      2 bits: 2 vectors, vector v: group 4v + j in bits 2j, 2j+1;
  //      3 bits: 3 vectors, vector v: group 2v in bits 0-2, group 2v+1 in bits 4-6, and bit v of
  //              group 6's code in bit 3, of group 7's in bit 7 (3 bits a weight; groups 0-5
  //              unpack as 4-bit nibbles, groups 6 and 7 with three shifts and two bit selects).
  // and separately the scales (f16) and zero points (u8) of the panel's columns per (panel, block).
  enum class PanelLayout : uint8_t { None, Avx2, Avx512Vnni };
  static constexpr int64_t kPanel = 8;       // columns of an Avx2 panel
  static constexpr int64_t kVnniPanel = 16;  // columns of an Avx512Vnni panel
  PanelLayout panel_layout() const noexcept { return layout_; }
  int64_t panel_width() const noexcept { return layout_ == PanelLayout::Avx512Vnni ? kVnniPanel : kPanel; }
  const std::vector<uint8_t>& panel_codes() const noexcept { return panel_codes_; }
  const std::vector<uint16_t>& panel_scales() const noexcept { return panel_scales_; }
  const std::vector<uint8_t>& panel_zero_points() const noexcept { return panel_zero_points_; }

 private:
  int64_t n_ = 0, k_ = 0, block_ = 32;
  int bits_ = 4;
  PanelLayout layout_ = PanelLayout::None;
  void pack_panels(PanelLayout layout, std::span<const uint8_t> codes, std::span<const uint16_t> scales);
  std::vector<uint8_t> codes_, zero_points_, panel_codes_, panel_zero_points_;
  std::vector<uint16_t> scales_, panel_scales_;
};

struct BlockOutput {
  const float* bias = nullptr;  // [N] or nullptr
  bool relu = false;
  InputQuantization input = InputQuantization::S8Block;
};

// Y[M,N] (row stride ldy) from X[M,K] (f32, row stride ldx); scratch (the quantized rows) from
// `workspace`. Threaded over panels of columns.
void block_gemm(int64_t m, const float* x, int64_t ldx, const BlockWeights& w, const BlockOutput& out, float* y,
                int64_t ldy, Workspace& workspace);
// Which implementation block_gemm runs on w, and why the faster ones decline (Op::describe).
std::string describe_block_gemm(const BlockWeights& w, const BlockOutput& out);

// The quantized rows of X that S8Block multiplies: xq [M, blocks * B] (zero past K), s and t
// [M, blocks] (see above). Exposed for the tests.
void quantize_rows_s8_block(int64_t m, int64_t k, int64_t block, const float* x, int64_t ldx, int8_t* xq, float* s,
                            int32_t* t);

}  // namespace lowbit
