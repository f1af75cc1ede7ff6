// kernels/activation.h: every path against the reference bit for bit, the reference against the
// exact functions (double precision) within the header's stated bounds.
#include <cmath>
#include <cstring>

#include "kernels/activation.h"
#include "kernels/paths.h"
#include "lowbit/runtime_config.h"
#include "test_util.h"

namespace lowbit {
namespace {

// Values that exercise every branch: random normal-ish, the edges of exp's range, zeros of both
// signs, infinities, NaN, huge and tiny magnitudes.
std::vector<float> awkward_values(int64_t n, uint64_t seed) {
  Rng rng(seed);
  std::vector<float> x(static_cast<size_t>(n));
  const float special[] = {0.0f, -0.0f, INFINITY, -INFINITY, NAN, 88.3f, 88.31f, -87.33654475f, -87.34f, 1e-30f, -1e-30f,
                           1e30f, -1e30f, 13.0f, -13.0f, 9.5f, -9.5f};
  for (int64_t i = 0; i < n; ++i)
    x[i] = i % 5 == 4 ? special[(i / 5) % std::size(special)] : rng.uniform(-12.0f, 12.0f);
  return x;
}

// The same bits, or both NaN (a NaN's sign bit is not specified by the operations that make it).
bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
  if (a.size() != b.size()) return false;
  for (size_t i = 0; i < a.size(); ++i)
    if (std::memcmp(&a[i], &b[i], sizeof(float)) != 0 && !(std::isnan(a[i]) && std::isnan(b[i]))) return false;
  return true;
}

TEST(Activation, EveryPathMatchesTheReferenceBitForBit) {
  if (active_isa() < Isa::Avx2) GTEST_SKIP() << "this CPU has no AVX2 path (only the reference runs)";
  const bool avx512 = active_isa() >= Isa::Avx512Vnni;
  if (!avx512) std::printf("[   NOTE   ] AVX-512 paths not tested: the CPU lacks AVX-512 (F/BW/VL/VNNI)\n");
  for (int64_t n : {1, 7, 8, 9, 15, 16, 17, 31, 33, 63, 64, 65, 1000}) {
    const std::vector<float> x = awkward_values(n, static_cast<uint64_t>(n)), dy = awkward_values(n, 99);
    std::vector<float> want(x.size()), got(x.size());
    kernels::exp_f32_ref(n, x.data(), want.data());
    kernels::exp_f32_avx2(n, x.data(), got.data());
    EXPECT_TRUE(same_bits(want, got)) << "exp n=" << n;
    if (avx512) {
      kernels::exp_f32_avx512(n, x.data(), got.data());
      EXPECT_TRUE(same_bits(want, got)) << "exp avx512 n=" << n;
    }
    for (bool tanh_form : {false, true}) {
      kernels::gelu_f32_ref(n, x.data(), want.data(), tanh_form);
      kernels::gelu_f32_avx2(n, x.data(), got.data(), tanh_form);
      EXPECT_TRUE(same_bits(want, got)) << "gelu n=" << n << " tanh " << tanh_form;
      kernels::gelu_backward_f32_ref(n, x.data(), dy.data(), want.data(), tanh_form);
      kernels::gelu_backward_f32_avx2(n, x.data(), dy.data(), got.data(), tanh_form);
      EXPECT_TRUE(same_bits(want, got)) << "gelu backward n=" << n << " tanh " << tanh_form;
      if (avx512) {
        kernels::gelu_backward_f32_avx512(n, x.data(), dy.data(), got.data(), tanh_form);
        EXPECT_TRUE(same_bits(want, got)) << "gelu backward avx512 n=" << n << " tanh " << tanh_form;
        kernels::gelu_f32_ref(n, x.data(), want.data(), tanh_form);
        kernels::gelu_f32_avx512(n, x.data(), got.data(), tanh_form);
        EXPECT_TRUE(same_bits(want, got)) << "gelu avx512 n=" << n << " tanh " << tanh_form;
      }
    }
    // Softmax rows: finite scores, with -inf (masked) entries but no NaN.
    std::vector<float> s(x.size());
    Rng rng(static_cast<uint64_t>(n) + 7);
    for (int64_t i = 0; i < n; ++i) s[i] = i % 6 == 5 ? -INFINITY : rng.uniform(-30.0f, 30.0f);
    kernels::softmax_row_f32_ref(n, s.data(), want.data());
    kernels::softmax_row_f32_avx2(n, s.data(), got.data());
    EXPECT_TRUE(same_bits(want, got)) << "softmax n=" << n;
    if (avx512) {
      std::vector<float> copy = s;
      kernels::softmax_row_f32_avx512(n, s.data(), got.data());
      EXPECT_TRUE(same_bits(want, got)) << "softmax avx512 n=" << n;
      kernels::softmax_row_f32_avx512(n, copy.data(), copy.data());  // in place
      EXPECT_TRUE(same_bits(want, copy)) << "softmax avx512 in place n=" << n;
    }
    kernels::softmax_row_f32_avx2(n, s.data(), s.data());  // in place
    EXPECT_TRUE(same_bits(want, s)) << "softmax in place n=" << n;
  }
}

double ulp_distance(float a, double exact) {
  const double ulp = std::ldexp(1.0, std::ilogb(static_cast<float>(exact)) - 23);
  return std::fabs(a - exact) / ulp;
}

TEST(Activation, ExpIsWithinTwoUlp) {
  double worst = 0;
  for (double v = -87.3; v <= 88.3; v += 0.00173) {
    const float x = static_cast<float>(v);
    float y;
    kernels::exp_f32_ref(1, &x, &y);
    worst = std::max(worst, ulp_distance(y, std::exp(static_cast<double>(x))));
  }
  EXPECT_LE(worst, 2.0);
  const float edges[] = {INFINITY, -INFINITY, 100.0f, -100.0f, NAN};
  float y[5];
  exp_f32(5, edges, y);
  EXPECT_EQ(y[0], INFINITY);
  EXPECT_EQ(y[1], 0.0f);
  EXPECT_EQ(y[2], INFINITY);
  EXPECT_EQ(y[3], 0.0f);
  EXPECT_TRUE(std::isnan(y[4]));
}

double gelu_exact(double x, bool tanh_form) {
  // 0.5 x (1 + tanh v) = x / (1 + e^(-2v)), the latter without cancellation for v << 0.
  if (tanh_form) return x / (1.0 + std::exp(-2.0 * std::sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
  return 0.5 * x * std::erfc(-x / std::sqrt(2.0));
}
double gelu_exact_grad(double x, bool tanh_form) {
  if (tanh_form) {
    const double k = std::sqrt(2.0 / M_PI), t = std::tanh(k * (x + 0.044715 * x * x * x));
    return 0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * k * (1.0 + 3.0 * 0.044715 * x * x);
  }
  return 0.5 * std::erfc(-x / std::sqrt(2.0)) + x * std::exp(-0.5 * x * x) / std::sqrt(2.0 * M_PI);
}

TEST(Activation, GeluIsWithinItsStatedBound) {
  std::vector<float> x;
  for (double v = -16.0; v <= 16.0; v += 0.000731) x.push_back(static_cast<float>(v));
  for (float v : {0.0f, -0.0f, 1e-20f, -1e-20f, 1e-40f, -200.0f, 200.0f, 1e30f, -1e30f}) x.push_back(v);
  const int64_t n = static_cast<int64_t>(x.size());
  std::vector<float> y(x.size()), dx(x.size()), ones(x.size(), 1.0f);
  for (bool tanh_form : {false, true}) {
    gelu_f32(n, x.data(), y.data(), tanh_form);
    gelu_backward_f32(n, x.data(), ones.data(), dx.data(), tanh_form);
    double worst = 0, worst_grad = 0;
    for (int64_t i = 0; i < n; ++i) {
      // The header's bound: the exponent a of e^-a (x^2 / 2, or 2v), rounded to f32, adds up to
      // 2e-7 a relative.
      const double want = gelu_exact(x[i], tanh_form), xd = x[i];
      const double exponent = tanh_form ? std::fabs(2.0 * std::sqrt(2.0 / M_PI) * (xd + 0.044715 * xd * xd * xd)) : xd * xd / 2;
      const double err = std::fabs(y[i] - want);
      EXPECT_LE(err, (1e-6 + 2e-7 * exponent) * std::fabs(want) + 1e-37) << "x=" << x[i] << " tanh " << tanh_form;
      if (x[i] >= -4.0f) worst = std::max(worst, err / (std::fabs(want) + 1e-30));
      // The gradient: within 2e-6 of the exact derivative (which lies in [-0.17, 1.13]).
      const double g = gelu_exact_grad(x[i], tanh_form);
      EXPECT_LE(std::fabs(dx[i] - g), 2e-6) << "x=" << x[i] << " tanh " << tanh_form;
      worst_grad = std::max(worst_grad, std::fabs(dx[i] - g));
    }
    std::printf("[   INFO   ] gelu (%s): worst relative error %.3g for x >= -4, gradient absolute error %.3g\n",
                tanh_form ? "tanh" : "erf", worst, worst_grad);
  }
  const float nan = NAN;
  float out;
  gelu_f32(1, &nan, &out, false);
  EXPECT_TRUE(std::isnan(out));
}

TEST(Activation, SoftmaxRowsMatchDoublePrecisionAndMaskedEntriesAreZero) {
  for (int64_t n : {1, 7, 17, 65, 128}) {
    const int64_t rows = 3, ld = n + 2;
    std::vector<float> x(static_cast<size_t>(rows * ld), 123.0f), y(x.size(), -5.0f);
    Rng rng(static_cast<uint64_t>(n));
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < n; ++c) x[r * ld + c] = (r == 2 && c % 3 == 1) ? -INFINITY : rng.uniform(-20.0f, 20.0f);
    softmax_rows_f32(rows, n, x.data(), ld, y.data(), ld);
    for (int64_t r = 0; r < rows; ++r) {
      double peak = -INFINITY, sum = 0;
      for (int64_t c = 0; c < n; ++c) peak = std::max(peak, static_cast<double>(x[r * ld + c]));
      for (int64_t c = 0; c < n; ++c) sum += std::exp(x[r * ld + c] - peak);
      for (int64_t c = 0; c < n; ++c) {
        // x - max is rounded to f32 first (as every f32 softmax does): e^(x - max) then carries a
        // relative error of up to 2^-24 |x - max| besides the kernel's few ulp.
        if (std::isinf(x[r * ld + c])) {
          EXPECT_EQ(y[r * ld + c], 0.0f);  // masked
          continue;
        }
        const double want = std::exp(x[r * ld + c] - peak) / sum;
        EXPECT_NEAR(y[r * ld + c], want, (1e-6 + 6e-8 * std::fabs(x[r * ld + c] - peak)) * want + 1e-30) << n << " " << r << " " << c;
      }
      EXPECT_EQ(y[r * ld + n], -5.0f);  // the padding between rows is not written
    }
  }
}

}  // namespace
}  // namespace lowbit
