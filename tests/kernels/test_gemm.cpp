// gemm_f32 (the dispatched fast path) against the reference on awkward shapes, every transpose
// combination, alpha/beta/bias/ReLU, 1 and 2 threads, and the thread-count and ISA guarantees.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include "kernels/gemm.h"
#include "test_util.h"
#include "lowbit/runtime_config.h"
#include "kernels/paths.h"

namespace lowbit {
namespace {

using GemmTest = lowbit::testing::RuntimeSettingsTest;

struct Case {
  Transpose ta = Transpose::No, tb = Transpose::No;
  int64_t m = 1, n = 1, k = 1;
  int64_t lda_pad = 0, ldb_pad = 0, ldc_pad = 0;  // extra floats per stored row
  float alpha = 1.0f, beta = 0.0f;
  bool bias = false;
  Activation act = Activation::None;

  int64_t a_rows() const { return ta == Transpose::No ? m : k; }
  int64_t a_cols() const { return ta == Transpose::No ? k : m; }
  int64_t b_rows() const { return tb == Transpose::No ? k : n; }
  int64_t b_cols() const { return tb == Transpose::No ? n : k; }
  int64_t lda() const { return a_cols() + lda_pad; }
  int64_t ldb() const { return b_cols() + ldb_pad; }
  int64_t ldc() const { return n + ldc_pad; }

  std::string describe() const {
    return std::to_string(m) + "x" + std::to_string(n) + "x" + std::to_string(k) +
           (ta == Transpose::Yes ? " T" : " N") + (tb == Transpose::Yes ? "T" : "N") +
           " alpha=" + std::to_string(alpha) + " beta=" + std::to_string(beta) + (bias ? " bias" : "") +
           (act == Activation::Relu ? " relu" : "") + " pads=" + std::to_string(lda_pad) + "," +
           std::to_string(ldb_pad) + "," + std::to_string(ldc_pad);
  }
};

struct Data {
  std::vector<float> a, b, c0, bias;  // c0: C before the call
  float max_a = 0.0f, max_b = 0.0f;
};

Data make_data(const Case& tc, uint32_t seed) {
  std::mt19937 rng(seed);
  std::uniform_real_distribution<float> dist(-1.0f, 1.0f);
  Data d;
  d.a.resize(static_cast<size_t>(tc.a_rows() * tc.lda()));
  d.b.resize(static_cast<size_t>(tc.b_rows() * tc.ldb()));
  d.c0.resize(static_cast<size_t>(tc.m * tc.ldc()));
  for (float& v : d.a) v = dist(rng);
  for (float& v : d.b) v = 2.0f * dist(rng);
  for (float& v : d.c0) v = tc.beta == 0.0f ? std::numeric_limits<float>::quiet_NaN() : dist(rng);
  // Padding between rows must never be read into the result; fill it with NaN where it exists.
  for (int64_t r = 0; r < tc.a_rows(); ++r)
    for (int64_t j = tc.a_cols(); j < tc.lda(); ++j) d.a[static_cast<size_t>(r * tc.lda() + j)] = NAN;
  for (int64_t r = 0; r < tc.b_rows(); ++r)
    for (int64_t j = tc.b_cols(); j < tc.ldb(); ++j) d.b[static_cast<size_t>(r * tc.ldb() + j)] = NAN;
  if (tc.bias) {
    d.bias.resize(static_cast<size_t>(tc.n));
    for (float& v : d.bias) v = dist(rng);
  }
  for (int64_t r = 0; r < tc.a_rows(); ++r)
    for (int64_t j = 0; j < tc.a_cols(); ++j) d.max_a = std::max(d.max_a, std::fabs(d.a[r * tc.lda() + j]));
  for (int64_t r = 0; r < tc.b_rows(); ++r)
    for (int64_t j = 0; j < tc.b_cols(); ++j) d.max_b = std::max(d.max_b, std::fabs(d.b[r * tc.ldb() + j]));
  return d;
}

std::vector<float> run_fast(const Case& tc, const Data& d) {
  std::vector<float> c = d.c0;
  gemm_f32(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, d.a.data(), tc.lda(), d.b.data(), tc.ldb(), tc.beta, c.data(),
           tc.ldc(), {tc.bias ? d.bias.data() : nullptr, tc.act});
  return c;
}

std::vector<float> run_ref(const Case& tc, const Data& d) {
  std::vector<float> c = d.c0;
  kernels::gemm_f32_ref(tc.ta, tc.tb, tc.m, tc.n, tc.k, tc.alpha, d.a.data(), tc.lda(), d.b.data(), tc.ldb(), tc.beta,
                        c.data(), tc.ldc(), {tc.bias ? d.bias.data() : nullptr, tc.act});
  return c;
}

// The bound documented in gemm.h, scaled by |alpha|; C outside the m x n window must be untouched.
void expect_close(const Case& tc, const Data& d, const std::vector<float>& fast, const std::vector<float>& ref) {
  const float tol =
      1e-5f * static_cast<float>(std::max<int64_t>(tc.k, 1)) * d.max_a * d.max_b * std::max(1.0f, std::fabs(tc.alpha)) +
      1e-6f;
  int64_t reported = 0;
  for (int64_t i = 0; i < tc.m; ++i) {
    for (int64_t j = 0; j < tc.ldc(); ++j) {
      const size_t at = static_cast<size_t>(i * tc.ldc() + j);
      if (j >= tc.n) {  // padding: bit-for-bit what it was (NaN stays NaN)
        const bool same = (std::isnan(fast[at]) && std::isnan(d.c0[at])) || fast[at] == d.c0[at];
        if (!same && reported++ < 5) ADD_FAILURE() << tc.describe() << ": padding of C written at " << i << "," << j;
        continue;
      }
      const bool ok = std::isfinite(fast[at]) && std::fabs(fast[at] - ref[at]) <= tol;
      if (!ok && reported++ < 5)
        ADD_FAILURE() << tc.describe() << ": C(" << i << "," << j << ") = " << fast[at] << ", reference " << ref[at]
                      << ", tolerance " << tol;
    }
  }
}

bool bits_equal(const std::vector<float>& x, const std::vector<float>& y) {
  return x.size() == y.size() && std::memcmp(x.data(), y.data(), x.size() * sizeof(float)) == 0;
}

// Against the reference with 1 and 2 threads (and 3 when asked: more threads than cores), and
// bit-identical between all thread counts (NaN padding compares by bits too).
void check_case(const Case& tc, uint32_t seed, bool three_threads = false) {
  const Data d = make_data(tc, seed);
  const std::vector<float> ref = run_ref(tc, d);
  set_num_threads(1);
  const std::vector<float> one = run_fast(tc, d);
  expect_close(tc, d, one, ref);
  set_num_threads(2);
  const std::vector<float> two = run_fast(tc, d);
  expect_close(tc, d, two, ref);
  EXPECT_TRUE(bits_equal(one, two)) << tc.describe() << ": 1 and 2 threads differ";
  if (three_threads) {
    set_num_threads(3);
    EXPECT_TRUE(bits_equal(one, run_fast(tc, d))) << tc.describe() << ": 1 and 3 threads differ";
  }
}

const Transpose kBoth[] = {Transpose::No, Transpose::Yes};

TEST_F(GemmTest, AllSmallShapesAllTransposes) {
  const int64_t sizes[] = {1, 3, 7, 17, 63, 64, 65};
  uint32_t seed = 1;
  for (Transpose ta : kBoth)
    for (Transpose tb : kBoth)
      for (int64_t m : sizes)
        for (int64_t n : sizes)
          for (int64_t k : sizes) {
            Case tc;
            tc.ta = ta;
            tc.tb = tb;
            tc.m = m;
            tc.n = n;
            tc.k = k;
            check_case(tc, seed++);
          }
}

TEST_F(GemmTest, AlphaBetaBiasRelu) {
  const int64_t sizes[] = {1, 7, 17, 64, 65};
  uint32_t seed = 100;
  for (Transpose ta : kBoth)
    for (Transpose tb : kBoth)
      for (float beta : {0.0f, 1.0f, 0.5f})
        for (int64_t s : sizes) {
          Case tc;
          tc.ta = ta;
          tc.tb = tb;
          tc.m = s;
          tc.n = s + 2;
          tc.k = 2 * s + 1;
          tc.alpha = -1.5f;
          tc.beta = beta;
          tc.bias = (s % 2) == 1;
          tc.act = s > 1 ? Activation::Relu : Activation::None;
          check_case(tc, seed++);
          tc.bias = !tc.bias;
          tc.act = Activation::Relu;
          check_case(tc, seed++);
        }
}

TEST_F(GemmTest, LargeShapesAndLeadingDimensions) {
  uint32_t seed = 1000;
  for (Transpose ta : kBoth)
    for (Transpose tb : kBoth) {
      Case tc;
      tc.ta = ta;
      tc.tb = tb;
      tc.m = 300;
      tc.n = 200;
      tc.k = 1000;  // several K blocks
      tc.beta = 0.5f;
      tc.bias = true;
      tc.act = Activation::Relu;
      check_case(tc, seed++);

      Case sq;  // 784: MLP input width, ragged in every blocking dimension
      sq.ta = ta;
      sq.tb = tb;
      sq.m = 784;
      sq.n = 784;
      sq.k = 784;
      sq.alpha = 0.25f;
      check_case(sq, seed++);

      Case ld;  // leading dimensions larger than the rows
      ld.ta = ta;
      ld.tb = tb;
      ld.m = 97;
      ld.n = 131;
      ld.k = 300;
      ld.lda_pad = 5;
      ld.ldb_pad = 11;
      ld.ldc_pad = 3;
      ld.beta = 1.0f;
      ld.bias = true;
      check_case(ld, seed++);
    }
}

// Shapes that cross every blocking boundary (K blocks, M blocks, N blocks wider than one packed
// B block), both thread splits (independent column ranges and the shared, cooperatively packed
// B block), and strides that make the kernel pack an operand it would otherwise read in place.
TEST_F(GemmTest, BlockingBoundariesAndStrides) {
  struct S {
    int64_t m, n, k;
    Transpose ta, tb;
    int64_t lda_pad, ldb_pad;
  };
  const S shapes[] = {
      {60, 3080, 40, Transpose::No, Transpose::Yes, 0, 0},   // 2 threads share B; N > one B block
      {7, 3100, 20, Transpose::Yes, Transpose::Yes, 0, 0},   // N > one B block on one thread
      {200, 50, 300, Transpose::No, Transpose::No, 0, 0},    // two M blocks, two K blocks
      {1000, 16, 8, Transpose::Yes, Transpose::No, 0, 0},    // many M blocks, one panel
      {181, 47, 530, Transpose::Yes, Transpose::Yes, 0, 0},  // ragged everything, three K blocks
      {64, 1000, 32, Transpose::No, Transpose::No, 0, 24},   // ldb = 1024: B packed, not read in place
      {40, 48, 200, Transpose::Yes, Transpose::No, 984, 0},  // lda = 1024: A packed
      {13, 64, 64, Transpose::No, Transpose::No, 0, 0},      // 13 rows = 5 + 4 + 4
  };
  uint32_t seed = 3000;
  for (const S& s : shapes) {
    Case tc;
    tc.m = s.m;
    tc.n = s.n;
    tc.k = s.k;
    tc.ta = s.ta;
    tc.tb = s.tb;
    tc.lda_pad = s.lda_pad;
    tc.ldb_pad = s.ldb_pad;
    tc.beta = 0.5f;
    tc.bias = true;
    tc.act = Activation::Relu;
    check_case(tc, seed++, /*three_threads=*/true);
  }
}

// Called from inside an OpenMP parallel region (the runtime then gives gemm_f32 a team of one),
// every thread with its own problem, at the same time: same results as a plain call.
TEST_F(GemmTest, CallsFromParallelThreads) {
  Case tc;
  tc.tb = Transpose::Yes;
  tc.m = 70;
  tc.n = 90;
  tc.k = 300;
  const Data d = make_data(tc, 41);
  set_num_threads(2);
  const std::vector<float> expected = run_fast(tc, d);
  std::vector<std::vector<float>> results(4);
#pragma omp parallel for num_threads(2) schedule(static, 1)
  for (int i = 0; i < 4; ++i) results[i] = run_fast(tc, d);
  for (const std::vector<float>& r : results) EXPECT_TRUE(bits_equal(r, expected));
}

TEST_F(GemmTest, ReferenceMlpShapes) {
  struct S {
    int64_t m, n, k;
    Transpose ta, tb;
  };
  const S shapes[] = {{32, 64, 784, Transpose::No, Transpose::Yes}, {32, 32, 64, Transpose::No, Transpose::Yes},
                      {32, 10, 32, Transpose::No, Transpose::Yes},  {64, 784, 32, Transpose::Yes, Transpose::No},
                      {32, 64, 32, Transpose::Yes, Transpose::No},  {10, 32, 32, Transpose::Yes, Transpose::No},
                      {32, 64, 32, Transpose::No, Transpose::No},   {32, 32, 10, Transpose::No, Transpose::No},
                      {256, 64, 784, Transpose::No, Transpose::Yes}};
  uint32_t seed = 2000;
  for (const S& s : shapes)
    for (float beta : {0.0f, 1.0f}) {
      Case tc;
      tc.m = s.m;
      tc.n = s.n;
      tc.k = s.k;
      tc.ta = s.ta;
      tc.tb = s.tb;
      tc.beta = beta;
      tc.bias = beta == 0.0f;
      tc.act = beta == 0.0f ? Activation::Relu : Activation::None;
      check_case(tc, seed++);
    }
}

TEST_F(GemmTest, EmptyReductionIsBetaCPlusBias) {
  for (float beta : {0.0f, 0.5f}) {
    Case tc;
    tc.m = 5;
    tc.n = 19;
    tc.k = 0;
    tc.beta = beta;
    tc.bias = true;
    tc.act = Activation::Relu;
    const Data d = make_data(tc, 7);
    expect_close(tc, d, run_fast(tc, d), run_ref(tc, d));
  }
}

TEST_F(GemmTest, BetaZeroNeverReadsC) {
  Case tc;
  tc.m = 65;
  tc.n = 33;
  tc.k = 17;
  tc.beta = 0.0f;  // make_data fills C with NaN
  const Data d = make_data(tc, 11);
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    const std::vector<float> c = run_fast(tc, d);
    for (float v : c) ASSERT_TRUE(std::isfinite(v));
  }
}

TEST_F(GemmTest, IsaCapGivesTheReferenceExactly) {
  Case tc;
  tc.ta = Transpose::Yes;
  tc.m = 37;
  tc.n = 45;
  tc.k = 300;
  tc.alpha = 0.75f;
  tc.beta = 0.5f;
  tc.bias = true;
  tc.act = Activation::Relu;
  const Data d = make_data(tc, 21);
  const std::vector<float> ref = run_ref(tc, d);
  set_max_isa(Isa::Reference);
  EXPECT_EQ(active_isa(), Isa::Reference);
  const std::vector<float> capped = run_fast(tc, d);
  set_max_isa(Isa::Avx2);
  EXPECT_EQ(0, std::memcmp(capped.data(), ref.data(), ref.size() * sizeof(float)));
  if (active_isa() == Isa::Avx2) {  // the fast path really is a different summation
    const std::vector<float> fast = run_fast(tc, d);
    expect_close(tc, d, fast, ref);
  }
}

}  // namespace
}  // namespace lowbit
