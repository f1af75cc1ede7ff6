// Block-quantized weights: storage packing, the AVX2 panel layout, and the dispatching entry
// point (kernels/blockq.h). The loops are in ref/blockq_ref.cpp and x86/blockq_avx2.cpp.
#include "kernels/blockq.h"

#include <algorithm>
#include <string>

#include "kernels/implementation.h"
#include "kernels/paths.h"

namespace lowbit {

namespace {
void check_format(int bits, int64_t block, const char* who) {
  if (bits < 2 || bits > 4)
    throw Error(ErrorKind::InvalidArgument, std::string(who) + ": block weights have 2, 3 or 4 bits, got " + std::to_string(bits));
  if (block != 32 && block != 64 && block != 128)
    throw Error(ErrorKind::InvalidArgument, std::string(who) + ": the block size must be 32, 64 or 128, got " + std::to_string(block));
}

// Byte offset and bit of code j (0..31) of a 32-code sub-block, for its low part (all widths) and,
// for 3 bits, its high bit.
void put_code(uint8_t* sub, int bits, int j, uint32_t q) {
  if (bits == 4) {
    sub[j & 15] |= static_cast<uint8_t>(q << (j < 16 ? 0 : 4));
    return;
  }
  sub[j & 7] |= static_cast<uint8_t>((q & 3u) << (2 * (j >> 3)));
  if (bits == 3) sub[8 + (j >> 3)] |= static_cast<uint8_t>(((q >> 2) & 1u) << (j & 7));
}
}  // namespace

int32_t kernels::block_code_at(const uint8_t* sub, int bits, int j) {
  if (bits == 4) return (sub[j & 15] >> (j < 16 ? 0 : 4)) & 15;
  int32_t q = (sub[j & 7] >> (2 * (j >> 3))) & 3;
  if (bits == 3) q |= ((sub[8 + (j >> 3)] >> (j & 7)) & 1) << 2;
  return q;
}

std::vector<uint8_t> pack_block_codes(std::span<const int32_t> codes, int64_t n, int64_t k, int bits, int64_t block) {
  check_format(bits, block, "pack_block_codes");
  if (n < 0 || k < 0 || static_cast<int64_t>(codes.size()) != n * k)
    throw Error(ErrorKind::InvalidArgument, "pack_block_codes: " + std::to_string(codes.size()) + " codes for " +
                                                std::to_string(n) + " x " + std::to_string(k));
  const int64_t blocks = (k + block - 1) / block, row_bytes = blocks * block_bytes(bits, block);
  const int64_t sub_bytes = block_bytes(bits, 32);
  std::vector<uint8_t> out(static_cast<size_t>(n * row_bytes), 0);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c) {
      const int32_t q = codes[static_cast<size_t>(r * k + c)];
      if (q < 0 || q >= (1 << bits))
        throw Error(ErrorKind::InvalidArgument, "pack_block_codes: code " + std::to_string(q) + " is outside [0, " +
                                                    std::to_string((1 << bits) - 1) + "]");
      put_code(out.data() + r * row_bytes + (c / 32) * sub_bytes, bits, static_cast<int>(c % 32), static_cast<uint32_t>(q));
    }
  return out;
}

std::vector<int32_t> unpack_block_codes(std::span<const uint8_t> packed, int64_t n, int64_t k, int bits, int64_t block) {
  check_format(bits, block, "unpack_block_codes");
  const int64_t blocks = (k + block - 1) / block, row_bytes = blocks * block_bytes(bits, block);
  const int64_t sub_bytes = block_bytes(bits, 32);
  if (n < 0 || k < 0 || static_cast<int64_t>(packed.size()) != n * row_bytes)
    throw Error(ErrorKind::InvalidArgument, "unpack_block_codes: " + std::to_string(packed.size()) + " bytes for " +
                                                std::to_string(n) + " x " + std::to_string(k) + " codes");
  std::vector<int32_t> codes(static_cast<size_t>(n * k));
  for (int64_t r = 0; r < n; ++r)
    for (int64_t c = 0; c < k; ++c)
      codes[static_cast<size_t>(r * k + c)] =
          kernels::block_code_at(packed.data() + r * row_bytes + (c / 32) * sub_bytes, bits, static_cast<int>(c % 32));
  return codes;
}

BlockWeights BlockWeights::pack(std::span<const uint8_t> codes, std::span<const uint16_t> scales,
                                std::span<const uint8_t> zero_points, int64_t n, int64_t k, int bits, int64_t block, Isa isa) {
  check_format(bits, block, "BlockWeights::pack");
  if (n < 0 || k < 0) throw Error(ErrorKind::InvalidArgument, "BlockWeights::pack: negative size");
  BlockWeights w;
  w.n_ = n, w.k_ = k, w.bits_ = bits, w.block_ = block;
  const int64_t blocks = w.blocks(), bb = block_bytes(bits, block);
  if (static_cast<int64_t>(codes.size()) != n * blocks * bb || static_cast<int64_t>(scales.size()) != n * blocks ||
      (!zero_points.empty() && static_cast<int64_t>(zero_points.size()) != n * blocks))
    throw Error(ErrorKind::InvalidArgument, "BlockWeights::pack: " + std::to_string(n) + " x " + std::to_string(k) +
                                                " weights in blocks of " + std::to_string(block) + " need " +
                                                std::to_string(n * blocks * bb) + " code bytes and " +
                                                std::to_string(n * blocks) + " scales (and zero points), got " +
                                                std::to_string(codes.size()) + " and " + std::to_string(scales.size()));
  for (uint8_t z : zero_points)
    if (z >= (1 << bits))
      throw Error(ErrorKind::InvalidArgument, "BlockWeights::pack: zero point " + std::to_string(z) + " is outside [0, " +
                                                  std::to_string((1 << bits) - 1) + "]");
  w.codes_.assign(codes.begin(), codes.end());
  w.scales_.assign(scales.begin(), scales.end());
  w.zero_points_.assign(zero_points.begin(), zero_points.end());
  const CpuFeatures& cpu = cpu_features();
  if (isa >= Isa::Avx512Vnni && cpu.avx512f && cpu.avx512bw && cpu.avx512vl && cpu.avx512vnni)
    w.pack_panels(PanelLayout::Avx512Vnni, codes, scales);
  else if (isa >= Isa::Avx2)
    w.pack_panels(PanelLayout::Avx2, codes, scales);
  return w;
}

namespace {
// One sub-block of 32 codes (storage layout) of panel column c, into the panel's sub-block `to`:
// Avx2, 16 bytes per column side by side, 4-bit codes (2 and 3 bits widened);
void place_avx2(const uint8_t* from, int bits, uint8_t* to, int64_t c) {
  to += c * block_bytes(4, 32);
  if (bits == 4) {
    std::copy_n(from, block_bytes(4, 32), to);
    return;
  }
  for (int j = 0; j < 32; ++j) put_code(to, 4, j, static_cast<uint32_t>(kernels::block_code_at(from, bits, j)));
}
// Avx512Vnni, code j = 4g + i at byte 4c + i of group g's vector (blockq.h).
void place_vnni(const uint8_t* from, int bits, uint8_t* to, int64_t c) {
  for (int j = 0; j < 32; ++j) {
    const uint32_t q = static_cast<uint32_t>(kernels::block_code_at(from, bits, j));
    const int g = j / 4, i = j % 4;
    const int64_t byte = 4 * c + i;
    if (bits == 4) {
      to[(g / 2) * 64 + byte] |= static_cast<uint8_t>(q << (4 * (g % 2)));
    } else if (bits == 2) {
      to[(g / 4) * 64 + byte] |= static_cast<uint8_t>(q << (2 * (g % 4)));
    } else if (g < 6) {
      to[(g / 2) * 64 + byte] |= static_cast<uint8_t>(q << (4 * (g % 2)));
    } else {  // groups 6 and 7: bit v of the code in bit 3 (group 6) or 7 (group 7) of vector v
      for (int v = 0; v < 3; ++v) to[v * 64 + byte] |= static_cast<uint8_t>(((q >> v) & 1u) << (g == 6 ? 3 : 7));
    }
  }
}
}  // namespace

void BlockWeights::pack_panels(PanelLayout layout, std::span<const uint8_t> codes, std::span<const uint16_t> scales) {
  layout_ = layout;
  const int64_t P = panel_width(), blocks = this->blocks(), panels = (n_ + P - 1) / P;
  const int64_t bb = block_bytes(bits_, block_), subs = block_ / 32, sub = block_bytes(bits_, 32);
  // Bytes of one sub-block of a panel: Avx2 holds 4-bit codes, Avx512Vnni the codes' own width.
  const int64_t panel_sub = P * (layout == PanelLayout::Avx2 ? block_bytes(4, 32) : sub);
  panel_codes_.assign(static_cast<size_t>(panels * blocks * subs * panel_sub), 0);
  panel_scales_.assign(static_cast<size_t>(panels * blocks * P), 0);
  panel_zero_points_.assign(static_cast<size_t>(panels * blocks * P), 0);
  for (int64_t col = 0; col < n_; ++col)
    for (int64_t b = 0; b < blocks; ++b) {
      const int64_t panel_block = (col / P) * blocks + b, slot = panel_block * P + col % P;
      panel_scales_[static_cast<size_t>(slot)] = scales[static_cast<size_t>(col * blocks + b)];
      panel_zero_points_[static_cast<size_t>(slot)] = static_cast<uint8_t>(zero_point(col, b));
      for (int64_t s = 0; s < subs; ++s) {
        const uint8_t* from = codes.data() + (col * blocks + b) * bb + s * sub;
        uint8_t* to = panel_codes_.data() + (panel_block * subs + s) * panel_sub;
        (layout == PanelLayout::Avx2 ? place_avx2 : place_vnni)(from, bits_, to, col % P);
      }
    }
}

namespace {
struct BlockProblem {
  const BlockWeights* w;
  const BlockOutput* out;
};
const char* panel_declines(const BlockProblem& p, Isa isa, BlockWeights::PanelLayout layout) {
  if (const char* why = kernels::isa_declines(isa)) return why;
  if (p.out->input != InputQuantization::S8Block) return "weight-only (f32 activations) runs the reference";
  if (p.w->panel_layout() != layout) return "the weights were not packed for it";
  return nullptr;
}
const char* vnni_declines(const BlockProblem& p) { return panel_declines(p, Isa::Avx512Vnni, BlockWeights::PanelLayout::Avx512Vnni); }
const char* avx2_declines(const BlockProblem& p) { return panel_declines(p, Isa::Avx2, BlockWeights::PanelLayout::Avx2); }
const kernels::Implementation<BlockProblem> kImplementations[] = {
    {"block_gemm_s8__avx512vnni", vnni_declines},
    {"block_gemm_s8__avx2", avx2_declines},
    {"block_gemm_ref", nullptr},
};
}  // namespace

std::string describe_block_gemm(const BlockWeights& w, const BlockOutput& out) {
  return kernels::choose(kImplementations, BlockProblem{&w, &out}).describe();
}

void quantize_rows_s8_block(int64_t m, int64_t k, int64_t block, const float* x, int64_t ldx, int8_t* xq, float* s,
                            int32_t* t) {
#if defined(LOWBIT_HAVE_X86)
  if (active_isa() >= Isa::Avx2) return kernels::quantize_rows_s8_block_avx2(m, k, block, x, ldx, xq, s, t);
#endif
  kernels::quantize_rows_s8_block_ref(m, k, block, x, ldx, xq, s, t);
}

void block_gemm(int64_t m, const float* x, int64_t ldx, const BlockWeights& w, const BlockOutput& out, float* y,
                int64_t ldy, Workspace& workspace) {
  if (m <= 0 || w.n() <= 0) return;
  const int64_t n = w.n(), blocks = w.blocks(), padded = blocks * w.block();
  if (out.input == InputQuantization::None) {
    parallel_for(n, std::max<int64_t>(1, (int64_t{1} << 16) / std::max<int64_t>(1, m * w.k())), [&](int64_t n0, int64_t n1) {
      kernels::block_gemm_f32_ref(m, x, ldx, w, out, y, ldy, n0, n1);
    });
    return;
  }
  int8_t* xq = workspace.take<int8_t>(static_cast<size_t>(m * padded));
  float* s = workspace.take<float>(static_cast<size_t>(m * blocks));
  int32_t* t = workspace.take<int32_t>(static_cast<size_t>(m * blocks));
  quantize_rows_s8_block(m, w.k(), w.block(), x, ldx, xq, s, t);
  const kernels::BlockQuantizedRows rows{xq, s, t, padded, blocks};
  // A grain of about 64 K multiply-adds per task; columns are independent, so the result does not
  // depend on how they are split.
  const int64_t panel_work = std::max<int64_t>(1, m * padded * BlockWeights::kPanel);
  const int64_t grain = std::max<int64_t>(1, (int64_t{1} << 16) / panel_work);
  const int choice = kernels::choose(kImplementations, BlockProblem{&w, &out}).index;
#if defined(LOWBIT_HAVE_X86)
  if (choice <= 1) {
    const int64_t width = w.panel_width(), panels = (n + width - 1) / width;
    const int64_t panel_grain = std::max<int64_t>(1, grain * BlockWeights::kPanel / width);
    parallel_for(panels, panel_grain, [&](int64_t p0, int64_t p1) {
      if (choice == 0)
        kernels::block_gemm_s8_avx512vnni(m, rows, w, out, y, ldy, p0, p1);
      else
        kernels::block_gemm_s8_avx2(m, rows, w, out, y, ldy, p0, p1);
    });
    return;
  }
#endif
  (void)choice;
  parallel_for(n, grain * BlockWeights::kPanel, [&](int64_t n0, int64_t n1) {
    kernels::block_gemm_s8_ref(m, rows, w, out, y, ldy, n0, n1);
  });
}

}  // namespace lowbit
