#include <cmath>
#include <cstring>

#include "test_util.h"
#include "kernels/elementwise.h"
#include "kernels/paths.h"

namespace lowbit {
namespace {

TEST(Elementwise, AdamFastPathIsBitExactWithReference) {
  for (int64_t n : {1, 7, 8, 17, 63, 65, 1000}) {
    std::vector<float> w(n), g(n), m(n), v(n);
    Rng rng(static_cast<uint64_t>(n));
    for (int64_t i = 0; i < n; ++i) w[i] = rng.uniform(-1, 1), g[i] = rng.uniform(-1, 1), m[i] = rng.uniform(-0.1f, 0.1f), v[i] = rng.uniform(0, 0.01f);
    auto w2 = w, m2 = m, v2 = v;
    const AdamConstants c{0.9f, 0.999f, 0.01f, 1.3f, 1e-7f};
    kernels::adam_update_f32_ref(n, w.data(), g.data(), m.data(), v.data(), c);
    adam_update_f32(n, w2.data(), g.data(), m2.data(), v2.data(), c);
    EXPECT_EQ(std::memcmp(w.data(), w2.data(), n * sizeof(float)), 0) << n;
    EXPECT_EQ(std::memcmp(m.data(), m2.data(), n * sizeof(float)), 0) << n;
    EXPECT_EQ(std::memcmp(v.data(), v2.data(), n * sizeof(float)), 0) << n;
  }
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

TEST(Elementwise, MinMaxMatchesReferenceAndIgnoresNan) {
  for (int64_t n : {1, 7, 15, 16, 17, 31, 32, 33, 63, 65, 100, 1001}) {
    std::vector<float> x(static_cast<size_t>(n));
    Rng rng(static_cast<uint64_t>(n) + 5);
    for (auto& v : x) v = rng.uniform(-3, 5);
    if (n > 3) x[2] = NAN;
    if (n > 40) x[static_cast<size_t>(n - 1)] = NAN, x[33] = -INFINITY;  // NaN in the tail, -inf in the vectors
    float lo_ref, hi_ref, lo, hi;
    kernels::minmax_f32_ref(n, x.data(), &lo_ref, &hi_ref);
    minmax_f32(n, x.data(), &lo, &hi);
    EXPECT_EQ(lo, lo_ref) << n;
    EXPECT_EQ(hi, hi_ref) << n;
    float expect_lo = 1e9f, expect_hi = -1e9f;
    for (float v : x)
      if (!std::isnan(v)) expect_lo = std::min(expect_lo, v), expect_hi = std::max(expect_hi, v);
    EXPECT_EQ(lo, expect_lo) << n;
    EXPECT_EQ(hi, expect_hi) << n;
  }
  // All NaN gives NaN; NaN everywhere but the tail (or but the vectors) gives the others' range.
  for (int64_t n : {40, 64, 71}) {
    std::vector<float> x(static_cast<size_t>(n), NAN);
    float lo, hi;
    minmax_f32(n, x.data(), &lo, &hi);
    EXPECT_TRUE(std::isnan(lo) && std::isnan(hi)) << n;
    x[static_cast<size_t>(n - 1)] = 2.0f;
    minmax_f32(n, x.data(), &lo, &hi);
    EXPECT_EQ(lo, 2.0f) << n;
    EXPECT_EQ(hi, 2.0f) << n;
    x[3] = -1.0f;
    minmax_f32(n, x.data(), &lo, &hi);
    EXPECT_EQ(lo, -1.0f) << n;
    EXPECT_EQ(hi, 2.0f) << n;
  }
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// Fake quantization: the AVX2 path gives the reference's floats bit for bit (forward and the STE
// mask), on awkward lengths, values beyond the grid, exact midpoints (ties to even) and NaN; the
// LSQ scale gradient agrees to summation-order rounding (relative 1e-6).
TEST(Elementwise, FakeQuantizeFastPathIsBitExactWithReference) {
  const FakeQuantGrid grids[] = {{0.05f, 0, -7, 7}, {0.013f, -128, -128, 127}, {0.2f, 0, -1, 1}, {0.1f, 3, -8, 7}};
  for (const FakeQuantGrid& g : grids)
    for (int64_t n : {1, 7, 8, 17, 63, 65, 1000}) {
      std::vector<float> x(n), dy(n), y_ref(n), y(n), dx_ref(n), dx(n);
      Rng rng(static_cast<uint64_t>(n) * 31 + static_cast<uint64_t>(g.qmax));
      const float span = g.scale * static_cast<float>(g.qmax - g.qmin + 6);
      for (int64_t i = 0; i < n; ++i) x[i] = rng.uniform(-span, span), dy[i] = rng.uniform(-1, 1);
      if (n > 5) x[3] = 2.5f * g.scale, x[4] = -0.5f * g.scale, x[5] = NAN;  // ties and NaN
      kernels::fake_quantize_f32_ref(n, x.data(), g, y_ref.data());
      fake_quantize_f32(n, x.data(), g, y.data());
      EXPECT_EQ(std::memcmp(y.data(), y_ref.data(), n * sizeof(float)), 0) << n;
      for (int64_t i = 0; i < n; ++i)
        if (!std::isnan(x[i])) {
          QuantParams p{8, true, QScheme::Affine, false, -1, {g.scale}, {g.zero_point}};
          const float q = std::fmin(std::fmax(std::nearbyint(x[i] / g.scale) + g.zero_point, float(g.qmin)), float(g.qmax));
          ASSERT_EQ(y[i], p.dequantize(static_cast<int32_t>(q))) << i;
        }
      const double ds_ref = kernels::fake_quantize_backward_f32_ref(n, x.data(), dy.data(), g, dx_ref.data(), true);
      const double ds = fake_quantize_backward_f32(n, x.data(), dy.data(), g, dx.data(), true);
      EXPECT_EQ(std::memcmp(dx.data(), dx_ref.data(), n * sizeof(float)), 0) << n;
      EXPECT_NEAR(ds, ds_ref, 1e-6 * std::max(1.0, std::fabs(ds_ref))) << n;
      EXPECT_EQ(fake_quantize_backward_f32(n, x.data(), dy.data(), g, dx.data(), false), 0.0);
      EXPECT_EQ(std::memcmp(dx.data(), dx_ref.data(), n * sizeof(float)), 0) << n;
    }
}

}  // namespace
}  // namespace lowbit

namespace lowbit {
namespace {

// The AVX2 path divides only near rounding ties (it multiplies by 1/scale elsewhere): a stress of
// random scales with values at, just beside and away from half-integer multiples of the scale.
TEST(Elementwise, FakeQuantizeAvoidsDivisionWithoutChangingOneBit) {
  Rng rng(77);
  std::vector<float> x(4099), y_ref(x.size()), y(x.size()), dy(x.size(), 1.0f), dx_ref(x.size()), dx(x.size());
  for (int trial = 0; trial < 300; ++trial) {
    const FakeQuantGrid g{std::ldexp(rng.uniform(1.0f, 2.0f), static_cast<int>(rng.below(30)) - 20),
                          static_cast<int32_t>(rng.below(9)) - 4, -128, 127};
    for (size_t i = 0; i < x.size(); ++i) {
      const float k = std::floor(rng.uniform(-140.0f, 140.0f));
      switch (i % 4) {
        case 0: x[i] = (k + 0.5f) * g.scale; break;                                      // a tie, rounded to float
        case 1: x[i] = std::nextafter((k + 0.5f) * g.scale, 1e30f); break;              // just beside it
        case 2: x[i] = std::nextafter((k + 0.5f) * g.scale, -1e30f); break;
        default: x[i] = rng.uniform(-150.0f, 150.0f) * g.scale;
      }
    }
    kernels::fake_quantize_f32_ref(static_cast<int64_t>(x.size()), x.data(), g, y_ref.data());
    fake_quantize_f32(static_cast<int64_t>(x.size()), x.data(), g, y.data());
    ASSERT_EQ(std::memcmp(y.data(), y_ref.data(), x.size() * sizeof(float)), 0) << "scale " << g.scale;
    kernels::fake_quantize_backward_f32_ref(static_cast<int64_t>(x.size()), x.data(), dy.data(), g, dx_ref.data(), false);
    fake_quantize_backward_f32(static_cast<int64_t>(x.size()), x.data(), dy.data(), g, dx.data(), false);
    ASSERT_EQ(std::memcmp(dx.data(), dx_ref.data(), x.size() * sizeof(float)), 0) << "scale " << g.scale;
  }
}

}  // namespace
}  // namespace lowbit
