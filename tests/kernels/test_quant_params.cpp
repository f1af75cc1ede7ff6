// Checks the claims of docs/design/quantization.md about parameters, rounding and requantization.
#include <numeric>

#include "test_util.h"

namespace lowbit {
namespace {

TEST(QuantParams, AffineRepresentsZeroExactlyAndCoversTheRange) {
  for (auto [lo, hi] : {std::pair{-0.3f, 5.2f}, {0.0f, 1.0f}, {0.2f, 3.0f}, {-4.0f, -1.0f}, {-1e-3f, 1e3f}}) {
    QuantParams p = choose_params(lo, hi, {8, QScheme::Affine});
    EXPECT_EQ(p.dequantize(p.quantize(0.0f)), 0.0f);
    EXPECT_GE(p.zero_point[0], p.qmin());
    EXPECT_LE(p.zero_point[0], p.qmax());
    EXPECT_LE(p.dequantize(p.qmin()), std::min(lo, 0.0f) + p.scale[0]);
    EXPECT_GE(p.dequantize(p.qmax()), std::max(hi, 0.0f) - p.scale[0]);
  }
}

TEST(QuantParams, RangesPerBitWidth) {
  QuantParams s = choose_params(-1, 1, {4, QScheme::Symmetric});
  EXPECT_EQ(s.qmin(), -7);
  EXPECT_EQ(s.qmax(), 7);
  EXPECT_EQ(s.storage_dtype(), DType::S4);
  QuantParams a = choose_params(-1, 1, {8, QScheme::Affine});
  EXPECT_EQ(a.qmin(), -128);
  QuantParams n = choose_params(-1, 1, {8, QScheme::Affine, false, true, true});
  EXPECT_EQ(n.qmin(), -127);
  EXPECT_EQ(choose_params(-1, 1, {2, QScheme::Symmetric}).qmax(), 1);
  EXPECT_EQ(choose_params(-1, 1, {3, QScheme::Affine}).storage_dtype(), DType::S4);
  EXPECT_EQ(choose_params(-1, 1, {6, QScheme::Affine}).storage_dtype(), DType::S8);
  EXPECT_LOWBIT_ERROR(choose_params(-1, 1, {9, QScheme::Affine}), "bit width 9");
}

// Round trip error is at most scale/2 inside the range, for every bit width.
TEST(QuantParams, RoundTripErrorBoundPerBitWidth) {
  Tensor x(DType::F32, {4096});
  testing::fill_uniform(x, 1, -2.0f, 3.0f);
  for (int bits : {8, 6, 4, 3, 2}) {
    for (QScheme scheme : {QScheme::Affine, QScheme::Symmetric}) {
      QuantParams p = choose_params(-2.0f, 3.0f, {bits, scheme});
      Tensor y = fake_quantize(x, p);
      double max_err = 0;
      for (int64_t i = 0; i < x.numel(); ++i) {
        float v = x.data<float>()[i];
        if (v < p.dequantize(p.qmin()) || v > p.dequantize(p.qmax())) continue;  // clipped
        max_err = std::max(max_err, double(std::fabs(y.data<float>()[i] - v)));
      }
      EXPECT_LE(max_err, p.scale[0] / 2 * (1 + 1e-5)) << bits << " bits " << name_of(scheme);
      // SQNR grows by about 6 dB per bit.
      if (scheme == QScheme::Affine) {
        EXPECT_GT(compare_tensors(x, y).sqnr_db, 6.02 * bits - 4.0) << bits;
      }
    }
  }
}

TEST(QuantParams, RoundsHalfToEvenAndSaturates) {
  QuantParams p{8, true, QScheme::Affine, false, -1, {1.0f}, {0}};
  EXPECT_EQ(p.quantize(2.5f), 2);
  EXPECT_EQ(p.quantize(3.5f), 4);
  EXPECT_EQ(p.quantize(-2.5f), -2);
  EXPECT_EQ(p.quantize(1000.0f), 127);
  EXPECT_EQ(p.quantize(-1000.0f), -128);
}

TEST(QuantParams, PerChannelWeightsUseEachRowsRange) {
  Tensor w = Tensor::from_vector({2, 3}, std::vector<float>{0.1f, -0.2f, 0.05f, 10.0f, -3.0f, 1.0f});
  QuantParams p = choose_weight_params(w, {8, QScheme::Symmetric, true, true, true});
  ASSERT_EQ(p.channels(), 2u);
  EXPECT_FLOAT_EQ(p.scale[0], 0.2f / 127);
  EXPECT_FLOAT_EQ(p.scale[1], 10.0f / 127);
  Tensor back = fake_quantize(w, p);
  EXPECT_NEAR(back.data<float>()[0], 0.1f, p.scale[0] / 2);
  QuantParams t = choose_weight_params(w, {8, QScheme::Symmetric, false, true, true});
  EXPECT_EQ(t.channels(), 1u);
  EXPECT_GT(compare_tensors(w, back).sqnr_db, compare_tensors(w, fake_quantize(w, t)).sqnr_db);
}

TEST(QuantParams, StochasticRoundingIsUnbiased) {
  QuantParams p{8, true, QScheme::Affine, false, -1, {1.0f}, {0}};
  Tensor x(DType::F32, {20000});
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = 0.3f;
  Rng rng(7);
  auto q = quantize_values(x, p, Rounding::Stochastic, &rng);
  double mean = std::accumulate(q.begin(), q.end(), 0.0) / q.size();
  EXPECT_NEAR(mean, 0.3, 0.01);
  EXPECT_EQ(quantize_values(x, p)[0], 0);
  EXPECT_LOWBIT_ERROR(quantize_values(x, p, Rounding::Stochastic), "random number generator");
}

TEST(QuantParams, ValidateRejectsBadParameters) {
  QuantParams p{8, true, QScheme::Affine, false, -1, {0.0f}, {0}};
  EXPECT_LOWBIT_ERROR(p.validate("x"), "must be positive");
  p.scale = {1.0f};
  p.zero_point = {300};
  EXPECT_LOWBIT_ERROR(p.validate("x"), "outside [-128, 127]");
}

TEST(PackedCodes, RoundTripEveryStorageWithOddRowLengths) {
  for (DType d : {DType::S8, DType::S4, DType::U4, DType::S2, DType::U2}) {
    const int bits = bits_of(d);
    const bool is_signed = d == DType::S8 || d == DType::S4 || d == DType::S2;
    const int lo = is_signed ? -(1 << (bits - 1)) : 0, hi = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
    for (int64_t cols : {1, 3, 7, 17}) {
      Shape shape{5, cols};
      std::vector<int32_t> q(static_cast<size_t>(5 * cols));
      Rng rng(cols);
      for (auto& v : q) v = lo + static_cast<int32_t>(rng.below(static_cast<uint32_t>(hi - lo + 1)));
      Tensor packed = pack_codes(q, shape, d);
      EXPECT_EQ(static_cast<int64_t>(packed.nbytes()), 5 * packed_row_bytes(d, cols));
      EXPECT_EQ(unpack_codes(packed, shape), q) << name_of(d) << " cols " << cols;
    }
  }
  EXPECT_EQ(packed_row_bytes(DType::S4, 784), 392);
  EXPECT_EQ(packed_row_bytes(DType::S2, 7), 2);
}

TEST(ErrorMetrics, KnownValues) {
  Tensor a = Tensor::from_vector({4}, std::vector<float>{1, 2, 3, 4});
  Tensor b = Tensor::from_vector({4}, std::vector<float>{1, 2, 3, 5});
  ErrorMetrics m = compare_tensors(a, b);
  EXPECT_DOUBLE_EQ(m.mse, 0.25);
  EXPECT_DOUBLE_EQ(m.max_abs, 1.0);
  EXPECT_NEAR(m.sqnr_db, 10 * std::log10(30.0), 1e-9);
  EXPECT_NEAR(m.cosine, 34.0 / std::sqrt(30.0 * 39.0), 1e-12);
  EXPECT_TRUE(std::isinf(compare_tensors(a, a).sqnr_db));
}

// Requantization: the fixed-point multiplier is within 1 LSB of the float product.
TEST(FixedPoint, RequantizationWithinOneLsbOfFloat) {
  Rng rng(11);
  for (int trial = 0; trial < 20000; ++trial) {
    const double real = std::ldexp(0.5 + 0.5 * rng.uniform(), -static_cast<int>(rng.below(20)));
    const FixedPointMultiplier f = FixedPointMultiplier::from(real);
    EXPECT_GE(f.multiplier, 1 << 30);
    EXPECT_NEAR(f.real(), real, real * 1e-9);
    const int32_t acc = static_cast<int32_t>(rng.next_u64() >> 40) - (1 << 23);
    EXPECT_LE(std::fabs(f.apply(acc) - acc * real), 1.0) << real << " " << acc;
  }
  // Exact cases: a power of two halves with rounding half up.
  const FixedPointMultiplier half = FixedPointMultiplier::from(0.5);
  EXPECT_EQ(half.apply(5), 3);
  EXPECT_EQ(half.apply(-5), -2);
  EXPECT_EQ(FixedPointMultiplier::from(1.0).apply(-123456), -123456);
  EXPECT_LOWBIT_ERROR(FixedPointMultiplier::from(0.0), "outside (0, 2^30)");
}

}  // namespace
}  // namespace lowbit
