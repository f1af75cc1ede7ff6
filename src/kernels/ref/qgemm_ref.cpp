// The reference integer GEMM: the definition every fast path is tested against (kernels/qgemm.h).
#include <algorithm>
#include <cstdint>
#include <vector>

#include "kernels/qgemm.h"
#include "kernels/paths.h"

namespace lowbit::kernels {

namespace {

// Row n of the weight codes, read exactly as unpack_codes does (packed rows padded to bytes;
// signed types sign-extend).
void decode_row(const QWeights& w, int64_t row, int32_t* out) {
  const DType storage = w.storage();
  const int bits = bits_of(storage);
  const bool is_signed = storage == DType::S8 || storage == DType::S4 || storage == DType::S2;
  const int64_t row_bytes = packed_row_bytes(storage, w.k());
  const uint8_t* src = static_cast<const uint8_t*>(w.codes().raw()) + row * row_bytes;
  const uint32_t mask = (1u << bits) - 1;
  for (int64_t c = 0; c < w.k(); ++c) {
    const int64_t bit = c * bits;
    int32_t code = static_cast<int32_t>((src[bit / 8] >> (bit % 8)) & mask);
    if (is_signed && code >= (1 << (bits - 1))) code -= 1 << bits;
    out[c] = code;
  }
}

// acc[i][j] of the contract, s32 with wrap-around (as vector s32 arithmetic), for all i, j.
// Calls emit(i, j, acc) row by row.
template <typename Emit>
void accumulate(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, Emit emit) {
  const int64_t n = w.n(), k = w.k();
  std::vector<int32_t> codes(static_cast<size_t>(n * k));
  for (int64_t j = 0; j < n; ++j) decode_row(w, j, codes.data() + j * k);
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j) {
      uint32_t raw = 0;  // unsigned: wraps modulo 2^32, well defined
      const int32_t* wr = codes.data() + j * k;
      for (int64_t p = 0; p < k; ++p)
        raw += static_cast<uint32_t>(static_cast<int32_t>(a[i * lda + p]) * wr[p]);
      uint32_t acc = raw + static_cast<uint32_t>(out.column_offset[j]);
      if (out.weight_zero_point)
        acc -= static_cast<uint32_t>(out.weight_zero_point[j]) * static_cast<uint32_t>(out.row_offset[i]);
      emit(i, j, static_cast<int32_t>(acc));
    }
}

}  // namespace

void qgemm_s8_ref(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, int8_t* c,
                  int64_t ldc) {
  if (m <= 0 || w.n() <= 0) return;
  accumulate(m, a, lda, w, out, [&](int64_t i, int64_t j, int32_t acc) {
    int64_t v = int64_t{out.output_zero_point} + out.multiplier[j].apply(acc);
    v = std::min<int64_t>(std::max<int64_t>(v, out.clamp_min), out.clamp_max);
    c[i * ldc + j] = static_cast<int8_t>(std::clamp<int64_t>(v, -128, 127));
  });
}

void qgemm_s8_f32_ref(int64_t m, const int8_t* a, int64_t lda, const QWeights& w, const QOutputStage& out, float* c,
                      int64_t ldc) {
  if (m <= 0 || w.n() <= 0) return;
  accumulate(m, a, lda, w, out, [&](int64_t i, int64_t j, int32_t acc) {
    float v = static_cast<float>(acc);
    if (out.row_scale) v = v * out.row_scale[i];
    v = v * out.column_scale[j];
    if (out.bias) v = v + out.bias[j];
    if (out.relu) v = v > 0.0f ? v : 0.0f;
    c[i * ldc + j] = v;
  });
}

void row_sums_s8_ref(int64_t m, int64_t k, const int8_t* a, int64_t lda, int32_t* sums) {
  for (int64_t i = 0; i < m; ++i) {
    uint32_t s = 0;
    for (int64_t p = 0; p < k; ++p) s += static_cast<uint32_t>(int32_t{a[i * lda + p]});
    sums[i] = static_cast<int32_t>(s);
  }
}

}  // namespace lowbit::kernels
