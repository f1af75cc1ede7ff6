// Block-quantized products (kernels/blockq.h): storage packing round trip; the reference against a
// plain evaluation of the contract; every path the CPU has against the reference, bit for bit, on
// awkward shapes (K not a multiple of the block, N = 1, 7, 65), blocks of 32/64/128, 2/3/4 bits,
// symmetric and with zero points, bias and ReLU, 1 and 2 threads; and bad formats.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

#include "kernels/blockq.h"
#include "kernels/paths.h"
#include "lowbit/runtime_config.h"
#include "test_util.h"

namespace lowbit {
namespace {

using BlockQTest = lowbit::testing::RuntimeSettingsTest;

struct Weights {
  int64_t n, k, block;
  int bits;
  std::vector<int32_t> codes;  // [n, k]
  std::vector<uint16_t> scales;
  std::vector<uint8_t> zeros;  // empty: symmetric
  std::vector<uint8_t> packed;
};

Weights random_weights(int64_t n, int64_t k, int bits, int64_t block, bool affine, uint32_t seed) {
  std::mt19937 rng(seed);
  Weights w{n, k, block, bits, {}, {}, {}, {}};
  const int64_t blocks = (k + block - 1) / block;
  std::uniform_int_distribution<int32_t> code(0, (1 << bits) - 1);
  std::uniform_real_distribution<float> scale(0.001f, 0.1f);
  for (int64_t i = 0; i < n * k; ++i) w.codes.push_back(code(rng));
  for (int64_t i = 0; i < n * blocks; ++i) {
    w.scales.push_back(f32_to_f16(scale(rng)));
    if (affine) w.zeros.push_back(static_cast<uint8_t>(code(rng)));
  }
  w.packed = pack_block_codes(w.codes, n, k, bits, block);
  return w;
}

std::vector<float> random_rows(int64_t m, int64_t ld, uint32_t seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<float> d(0.0f, 1.0f);
  std::vector<float> x(static_cast<size_t>(m * ld));
  for (auto& v : x) v = d(rng);
  return x;
}

std::vector<float> run(const Weights& s, const BlockOutput& out, int64_t m, const std::vector<float>& x, int64_t ldx, Isa isa) {
  set_max_isa(isa);
  const BlockWeights w = BlockWeights::pack(s.packed, s.scales, s.zeros, s.n, s.k, s.bits, s.block);
  std::vector<float> y(static_cast<size_t>(m * s.n), -1.0f);
  Workspace ws;
  block_gemm(m, x.data(), ldx, w, out, y.data(), s.n, ws);
  set_max_isa(Isa::Avx512Vnni);
  return y;
}

TEST(BlockCodes, PackRoundTripsEveryWidth) {
  for (int bits : {2, 3, 4})
    for (int64_t block : {32, 64, 128})
      for (int64_t k : {1, 31, 33, 130}) {
        const Weights w = random_weights(3, k, bits, block, false, static_cast<uint32_t>(bits * 1000 + k));
        EXPECT_EQ(static_cast<int64_t>(w.packed.size()), 3 * ((k + block - 1) / block) * block_bytes(bits, block));
        EXPECT_EQ(unpack_block_codes(w.packed, 3, k, bits, block), w.codes) << bits << " bits, block " << block << ", k " << k;
      }
  EXPECT_EQ(block_bytes(4, 32), 16);
  EXPECT_EQ(block_bytes(3, 32), 12);
  EXPECT_EQ(block_bytes(2, 128), 32);
}

TEST(BlockCodes, RejectsBadFormats) {
  const std::vector<int32_t> codes(32, 1);
  EXPECT_LOWBIT_ERROR(pack_block_codes(codes, 1, 32, 5, 32), "2, 3 or 4 bits");
  EXPECT_LOWBIT_ERROR(pack_block_codes(codes, 1, 32, 4, 0), "block size must be 32, 64 or 128");
  EXPECT_LOWBIT_ERROR(pack_block_codes(codes, 1, 32, 4, 48), "block size must be 32, 64 or 128");
  EXPECT_LOWBIT_ERROR(pack_block_codes(std::vector<int32_t>(32, 16), 1, 32, 4, 32), "outside [0, 15]");
  const Weights w = random_weights(2, 40, 4, 32, true, 1);
  EXPECT_LOWBIT_ERROR(BlockWeights::pack(w.packed, std::span(w.scales).first(3), w.zeros, 2, 40, 4, 32), "need");
  std::vector<uint8_t> zeros = w.zeros;
  zeros[1] = 16;
  EXPECT_LOWBIT_ERROR(BlockWeights::pack(w.packed, w.scales, zeros, 2, 40, 4, 32), "zero point 16");
}

// The contract evaluated directly from the unpacked codes.
TEST(BlockGemm, ReferenceMatchesTheContract) {
  const int64_t m = 3, n = 5, k = 100;
  for (int bits : {2, 3, 4})
    for (bool affine : {false, true}) {
      const Weights s = random_weights(n, k, bits, 32, affine, static_cast<uint32_t>(bits + 10 * affine));
      const std::vector<float> x = random_rows(m, k, 7), bias = random_rows(1, n, 8);
      const std::vector<float> y = run(s, {bias.data(), false, InputQuantization::S8Block}, m, x, k, Isa::Reference);
      const int64_t blocks = 4;
      for (int64_t r = 0; r < m; ++r)
        for (int64_t c = 0; c < n; ++c) {
          float acc = 0.0f;
          for (int64_t b = 0; b < blocks; ++b) {
            float amax = 0.0f;
            for (int64_t i = b * 32; i < std::min(k, b * 32 + 32); ++i) amax = std::max(amax, std::fabs(x[r * k + i]));
            const int32_t z = affine ? s.zeros[c * blocks + b] : 1 << (bits - 1);
            int32_t dot = 0;
            for (int64_t i = b * 32; i < std::min(k, b * 32 + 32); ++i)
              dot += (s.codes[c * k + i] - z) * static_cast<int32_t>(std::nearbyint(x[r * k + i] * (127.0f / amax)));
            acc = std::fma(f16_to_f32(s.scales[c * blocks + b]) * (amax / 127.0f), static_cast<float>(dot), acc);
          }
          EXPECT_EQ(y[r * n + c], acc + bias[c]) << bits << " bits, row " << r << ", column " << c;
        }
    }
}

// Weight-only: the dequantized weights times x, within float rounding.
TEST(BlockGemm, WeightOnlyMatchesDequantizedWeights) {
  const int64_t m = 2, n = 7, k = 70;
  const Weights s = random_weights(n, k, 3, 64, true, 3);
  const std::vector<float> x = random_rows(m, k, 4);
  const std::vector<float> y = run(s, {nullptr, false, InputQuantization::None}, m, x, k, active_isa());
  for (int64_t r = 0; r < m; ++r)
    for (int64_t c = 0; c < n; ++c) {
      double want = 0;
      for (int64_t i = 0; i < k; ++i)
        want += x[r * k + i] * f16_to_f32(s.scales[c * 2 + i / 64]) * (s.codes[c * k + i] - s.zeros[c * 2 + i / 64]);
      EXPECT_NEAR(y[r * n + c], want, 1e-5 * (1 + std::fabs(want)));
    }
}

TEST_F(BlockQTest, EveryPathMatchesTheReferenceBitForBit) {
  if (active_isa() < Isa::Avx2) GTEST_SKIP() << "this CPU has no AVX2 path (only the reference runs)";
  std::vector<Isa> paths = {Isa::Avx2};
  if (active_isa() >= Isa::Avx512Vnni)
    paths.push_back(Isa::Avx512Vnni);
  else
    std::printf("[   NOTE   ] AVX-512 VNNI path not tested: the CPU lacks AVX-512 VNNI\n");
  for (Isa path : paths)
  for (int bits : {2, 3, 4})
    for (int64_t block : {32, 64, 128})
      for (int64_t n : {1, 7, 8, 65})
        for (int64_t k : {1, 17, 63, 65, 200})
          for (bool affine : {false, true}) {
            const int64_t m = (n + k) % 3 + 1 + (path == Isa::Avx512Vnni && n == 65 ? 5 : 0), ldx = k + 3;
            const Weights s = random_weights(n, k, bits, block, affine, static_cast<uint32_t>(n * 7919 + k * 31 + bits));
            std::vector<float> x = random_rows(m, ldx, static_cast<uint32_t>(k));
            if (k > 20) x[5] = 0.0f, x[6] = -x[7];  // zeros and ties in a row
            const std::vector<float> bias = random_rows(1, n, 9);
            for (bool relu : {false, true}) {
              const BlockOutput out{affine ? bias.data() : nullptr, relu, InputQuantization::S8Block};
              const std::vector<float> want = run(s, out, m, x, ldx, Isa::Reference);
              for (int threads : {1, 2}) {
                set_num_threads(threads);
                EXPECT_EQ(run(s, out, m, x, ldx, path), want)
                    << name_of(path) << ", " << bits << " bits, block " << block << ", n " << n << ", k " << k << (affine ? " affine" : "")
                    << (relu ? " relu" : "") << ", " << threads << " threads";
              }
            }
          }
}

TEST_F(BlockQTest, RowQuantizationMatchesTheReference) {
  if (active_isa() < Isa::Avx2) GTEST_SKIP() << "this CPU has no AVX2 path";
  for (int64_t k : {1, 31, 64, 129}) {
    std::vector<float> x = random_rows(2, k, static_cast<uint32_t>(k));
    x[0] = std::nanf("");
    const int64_t blocks = (k + 31) / 32;
    std::vector<int8_t> q1(static_cast<size_t>(2 * blocks * 32)), q2 = q1;
    std::vector<float> s1(static_cast<size_t>(2 * blocks)), s2 = s1;
    std::vector<int32_t> t1(s1.size()), t2(s1.size());
    kernels::quantize_rows_s8_block_ref(2, k, 32, x.data(), k, q1.data(), s1.data(), t1.data());
    kernels::quantize_rows_s8_block_avx2(2, k, 32, x.data(), k, q2.data(), s2.data(), t2.data());
    EXPECT_EQ(q1, q2);
    EXPECT_EQ(s1, s2);
    EXPECT_EQ(t1, t2);
  }
}

TEST_F(BlockQTest, DescribesTheChosenPathAndWhyOthersDecline) {
  const Weights s = random_weights(3, 40, 4, 32, false, 5);
  set_max_isa(Isa::Avx2);
  const BlockWeights avx2 = BlockWeights::pack(s.packed, s.scales, s.zeros, 3, 40, 4, 32);
  set_max_isa(Isa::Avx512Vnni);
  const std::string text = describe_block_gemm(avx2, {});
  if (active_isa() >= Isa::Avx512Vnni) {
    EXPECT_NE(text.find("block_gemm_s8__avx2"), std::string::npos) << text;
    EXPECT_NE(text.find("not packed for it"), std::string::npos) << text;
    const BlockWeights vnni = BlockWeights::pack(s.packed, s.scales, s.zeros, 3, 40, 4, 32);
    EXPECT_EQ(vnni.panel_width(), BlockWeights::kVnniPanel);
    EXPECT_EQ(describe_block_gemm(vnni, {}).rfind("block_gemm_s8__avx512vnni", 0), 0u) << describe_block_gemm(vnni, {});
  } else if (active_isa() >= Isa::Avx2) {
    EXPECT_EQ(text.rfind("block_gemm_s8__avx2", 0), 0u) << text;
  }
  EXPECT_NE(describe_block_gemm(avx2, {nullptr, false, InputQuantization::None}).find("block_gemm_ref"), std::string::npos);
}

TEST(BlockGemm, AllZeroRowGivesTheBias) {
  const Weights s = random_weights(3, 40, 4, 32, false, 5);
  const std::vector<float> x(40, 0.0f), bias = {1.0f, -2.0f, 3.0f};
  EXPECT_EQ(run(s, {bias.data(), true, InputQuantization::S8Block}, 1, x, 40, active_isa()), (std::vector<float>{1.0f, 0.0f, 3.0f}));
}

}  // namespace
}  // namespace lowbit
