// QWeights: weight codes prepared once for the integer kernels (layout: kernels/qgemm.h).
//
// Layout choice. s8 weights are widened to s16 and interleaved 16 columns x 2 k per 64-byte
// group: the AVX2 kernel multiplies them with vpmaddwd (s16 x s16, pairs summed into s32: exact
// for any s8 inputs, no saturation case at all), which needs one multiply-pipe operation per 16
// multiply-adds, where vpmaddubsw needs vpsignb + vpmaddubsw + vpmaddwd per 32 and all three
// seem to compete for the same two pipes on Zen cores (see src/kernels/x86/qgemm_avx2.cpp).
// The price is twice the bytes per weight (the batch-1 GEMV with s8 weights streams 2 bytes per
// weight; use 4-bit weights there).
// Packed 4-bit and 2-bit weights stay packed (two / four codes per byte) in the same
// 16-column x 64-byte-group geometry: a group holds 8 (4-bit) or 16 (2-bit) k per column as
// bit planes, and the kernel unpacks a plane with one shift and one AND. This keeps the weights
// 2x / 4x smaller than s8 in memory, which is what the batch-1 GEMV (memory-bound) needs, and
// costs the large-M GEMM only ~3 ALU operations per 128 weights, shared by all rows of a tile.
// Signed low-bit codes are stored with an offset (+8 / +2) that makes them unsigned: vpmaddubsw
// then takes the weight as its unsigned operand and the s8 activation as its signed operand,
// and pair sums stay below 2 * 15 * 128, far from s16 saturation, without any sign trick; the
// kernel subtracts offset * sum_k a[m][k] afterwards.
#include <algorithm>
#include <cstdint>
#include <cstring>
#include <string>

#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"

namespace lowbit {

namespace {
bool is_signed_storage(DType t) { return t == DType::S8 || t == DType::S4 || t == DType::S2; }
}  // namespace

namespace {
// Whether pack / assign_s8 build the AVX-512 VNNI layout for `isa` on this CPU.
bool builds_vnni_layout([[maybe_unused]] Isa isa) {
#if defined(LOWBIT_HAVE_X86)
  return isa >= Isa::Avx512Vnni && cpu_features().avx512vnni && cpu_features().avx512vl && cpu_features().avx512bw;
#else
  return false;
#endif
}

// See QWeights::vnni_layout: 16-column panels of ceil(K/4) groups of [16 columns][4 k] u8, each
// the code + 128 (vpdpbusd's unsigned operand), padding 0 (dst arrives zeroed). code(r, c) is
// weight (r, c).
template <typename Code>
void write_vnni_layout(int64_t n, int64_t k, Code code, uint8_t* dst) {
  const int64_t groups = (k + 3) / 4;
  for (int64_t j = 0; j < n; ++j)
    for (int64_t p = 0; p < k; ++p) dst[((j / 16) * groups + p / 4) * 64 + (j % 16) * 4 + p % 4] = static_cast<uint8_t>(code(j, p) + 128);
}

// The AVX2 kernel's s8 layout (see qgemm.h): panels of 16 columns, `groups` groups of 64 bytes,
// s16 pairs w[r][2g], w[r][2g+1], little-endian, zero past K; padding columns stay as they came
// (zeroed).
template <typename Code>
void write_s8_pair_layout(int64_t n, int64_t k, int64_t groups, Code code, uint8_t* dst) {
  constexpr int64_t kPanel = QWeights::kLayoutPanel;
  for (int64_t r = 0; r < n; ++r)
    for (int64_t g = 0; g < groups; ++g)
      for (int j = 0; j < 2; ++j) {
        const int64_t c = 2 * g + j;
        const int16_t v = c < k ? static_cast<int16_t>(code(r, c)) : int16_t{0};
        std::memcpy(dst + ((r / kPanel) * groups + g) * 64 + (r % kPanel) * 4 + 2 * j, &v, 2);
      }
}

Tensor vnni_layout_of(const QWeights& w) {
  const int64_t n = w.n(), k = w.k(), groups = (k + 3) / 4, panels = (n + 15) / 16;
  const std::vector<int32_t> codes = unpack_codes(w.codes(), {n, k});
  Tensor layout(DType::U8, {std::max<int64_t>(panels * groups * 64, 1)});
  write_vnni_layout(n, k, [&](int64_t r, int64_t c) { return codes[r * k + c]; }, layout.data<uint8_t>());
  return layout;
}
}  // namespace

QWeights QWeights::pack(const Tensor& codes, int64_t n, int64_t k, Isa isa) {
  const DType storage = codes.dtype();
  if (storage != DType::S8 && storage != DType::S4 && storage != DType::U4 && storage != DType::S2 &&
      storage != DType::U2)
    throw Error(ErrorKind::InvalidArgument, std::string("QWeights::pack: weight codes must be s8, s4, u4, s2 or u2, got ") +
                                                name_of(storage));
  if (n < 0 || k < 0)
    throw Error(ErrorKind::InvalidArgument, "QWeights::pack: negative size " + std::to_string(n) + " x " + std::to_string(k));
  const int64_t row_bytes = packed_row_bytes(storage, k);
  if (n > 0 && row_bytes > 0 && n > INT64_MAX / row_bytes)
    throw Error(ErrorKind::InvalidArgument, "QWeights::pack: size overflows");
  if (static_cast<int64_t>(codes.nbytes()) < n * row_bytes)
    throw Error(ErrorKind::InvalidArgument, "QWeights::pack: " + std::string(name_of(storage)) + " tensor of " +
                                                std::to_string(codes.nbytes()) + " bytes is too small for " +
                                                std::to_string(n) + " x " + std::to_string(k) + " weights (" +
                                                std::to_string(n * row_bytes) + " bytes needed)");
  const int bits = bits_of(storage);
  const bool is_signed = is_signed_storage(storage);
  const uint8_t* src = static_cast<const uint8_t*>(codes.raw());
  const int per_byte = 8 / bits;
  const uint32_t mask = (1u << bits) - 1;
  // Code (n, k) exactly as unpack_codes reads it.
  auto code_at = [&](int64_t r, int64_t c) -> int32_t {
    const int64_t bit = c * bits;
    int32_t v = static_cast<int32_t>((src[r * row_bytes + bit / 8] >> (bit % 8)) & mask);
    if (is_signed && v >= (1 << (bits - 1))) v -= 1 << bits;
    return v;
  };

  QWeights w;
  w.n_ = n;
  w.k_ = k;
  w.storage_ = storage;
  w.codes_ = codes;
  w.row_sums_.assign(static_cast<size_t>(n), 0);
  for (int64_t r = 0; r < n; ++r) {
    int64_t sum = 0;
    for (int64_t c = 0; c < k; ++c) {
      const int32_t v = code_at(r, c);
      if (bits == 8 && v == -128)
        throw Error(ErrorKind::InvalidArgument, "QWeights::pack: s8 weight code -128 at row " + std::to_string(r) +
                                                    ", column " + std::to_string(c) +
                                                    " (weights must use the narrow range [-127, 127])");
      sum += v;
    }
    w.row_sums_[static_cast<size_t>(r)] = static_cast<int32_t>(sum);  // |sum| <= 127 K: exact for K < 2^24
  }

  if (isa < Isa::Avx2) return w;  // the reference reads the codes
  // Kernel layout (see qgemm.h): panels of 16 columns, groups of 64 bytes.
  constexpr int64_t kPanel = kLayoutPanel;
  const int64_t k_per_group = bits == 8 ? 2 : 4 * per_byte;  // 2 (s8), 8 (4-bit), 16 (2-bit) per column
  const int64_t groups = (k + k_per_group - 1) / k_per_group;
  const int64_t panels = (n + kPanel - 1) / kPanel;
  const int32_t offset = (is_signed && bits < 8) ? (1 << (bits - 1)) : 0;
  w.groups_ = groups;
  w.layout_ = Tensor(DType::U8, {std::max<int64_t>(panels * groups * 64, 1)});
  uint8_t* dst = w.layout_.data<uint8_t>();
  if (bits == 8) {
    write_s8_pair_layout(n, k, groups, code_at, dst);
  } else {  // bit planes: byte j of column r in group g holds k = k_per_group g + 4 t + j at bits [bits t, bits (t + 1))
    for (int64_t r = 0; r < n; ++r)  // (padding columns stay zero)
      for (int64_t g = 0; g < groups; ++g) {
        uint8_t* out = dst + ((r / kPanel) * groups + g) * 64 + (r % kPanel) * 4;
        for (int j = 0; j < 4; ++j) {
          uint32_t byte = 0;
          for (int t = 0; t < per_byte; ++t) {
            const int64_t c = g * k_per_group + 4 * t + j;
            if (c >= k) continue;  // zero past K
            const uint32_t u = static_cast<uint32_t>(code_at(r, c) + offset) & mask;
            byte |= u << (bits * t);
          }
          out[j] = static_cast<uint8_t>(byte);
        }
      }
  }
  if (builds_vnni_layout(isa)) w.vnni_layout_ = vnni_layout_of(w);
  return w;
}

void QWeights::assign_s8(const int8_t* codes, int64_t row_stride, int64_t col_stride, int64_t n, int64_t k, Isa isa) {
  if (n < 0 || k < 0)
    throw Error(ErrorKind::InvalidArgument, "QWeights::assign_s8: negative size " + std::to_string(n) + " x " + std::to_string(k));
  n_ = n;
  k_ = k;
  storage_ = DType::S8;
  if (codes_.defined() && codes_.dtype() == DType::S8) codes_.resize({n, k});
  else codes_ = Tensor(DType::S8, {n, k});
  int8_t* narrow = codes_.data<int8_t>();
  row_sums_.resize(static_cast<size_t>(n));
  for (int64_t r = 0; r < n; ++r) {
    const int8_t* src = codes + r * row_stride;
    int8_t* dst = narrow + r * k;
    int32_t sum = 0;
    for (int64_t c = 0; c < k; ++c) {
      const int8_t v = src[c * col_stride];
      dst[c] = v == -128 ? int8_t{-127} : v;
      sum += dst[c];
    }
    row_sums_[static_cast<size_t>(r)] = sum;
  }
  const int64_t panels = (n + kLayoutPanel - 1) / kLayoutPanel;
  auto sized = [](Tensor& t, int64_t bytes) -> uint8_t* {
    bytes = std::max<int64_t>(bytes, 1);
    if (t.defined()) t.resize({bytes});
    else t = Tensor(DType::U8, {bytes});
    std::memset(t.raw(), 0, static_cast<size_t>(bytes));
    return t.data<uint8_t>();
  };
  auto code = [&](int64_t r, int64_t c) { return narrow[r * k + c]; };
  if (builds_vnni_layout(isa)) {
    write_vnni_layout(n, k, code, sized(vnni_layout_, panels * ((k + 3) / 4) * 64));
    layout_ = Tensor();
    groups_ = 0;
  } else if (isa >= Isa::Avx2) {
    groups_ = (k + 1) / 2;
    write_s8_pair_layout(n, k, groups_, code, sized(layout_, panels * groups_ * 64));
    vnni_layout_ = Tensor();
  } else {
    layout_ = Tensor();
    vnni_layout_ = Tensor();
    groups_ = 0;
  }
}

}  // namespace lowbit
