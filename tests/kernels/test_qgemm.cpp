// The integer GEMM (kernels/qgemm.h): the dispatched AVX2 path against the reference, bit-exact,
// on awkward shapes, every weight storage, with and without weight zero points, the vpmaddubsw
// saturation cases, requantization extremes, ReLU, 1 vs 2 threads and the ISA cap; and the
// reference against a naive 64-bit evaluation of the contract formula.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <string>
#include <tuple>
#include <utility>
#include <vector>

#include "kernels/qgemm.h"
#include "lowbit/runtime_config.h"
#include "test_util.h"
#include "kernels/implementation.h"
#include "kernels/paths.h"

namespace lowbit {
namespace {

using QGemmTest = lowbit::testing::RuntimeSettingsTest;

struct Range {
  int32_t lo, hi;
};
Range code_range(DType t) {
  switch (t) {
    case DType::S8: return {-127, 127};
    case DType::S4: return {-8, 7};
    case DType::U4: return {0, 15};
    case DType::S2: return {-2, 1};
    default: return {0, 3};
  }
}

enum class Fill { Random, MinA_MaxW, MinA_MinW, MinA_Alternating, Extremes };

// Everything one call needs; the owned vectors back the QOutputStage pointers.
struct Case {
  int64_t m = 0, n = 0, k = 0, lda = 0, ldc = 0;
  DType storage = DType::S8;
  std::vector<int32_t> wcodes;  // [n][k]
  std::vector<int8_t> a;        // [m][lda]
  QWeights w;
  std::vector<int32_t> col_off, wzp, row_off;
  std::vector<FixedPointMultiplier> mult;
  std::vector<float> row_scale, col_scale, bias;
  QOutputStage out;
};

Case make_setup(int64_t m, int64_t n, int64_t k, DType storage, uint32_t seed, bool use_wzp, Fill fill = Fill::Random,
                 int64_t lda_pad = 0, int64_t ldc_pad = 0) {
  std::mt19937 rng(seed);
  Case s;
  s.m = m;
  s.n = n;
  s.k = k;
  s.lda = k + lda_pad;
  s.ldc = n + ldc_pad;
  s.storage = storage;
  const Range r = code_range(storage);
  std::uniform_int_distribution<int32_t> wd(r.lo, r.hi), ad(-128, 127);
  s.wcodes.resize(static_cast<size_t>(n * k));
  s.a.assign(static_cast<size_t>(m * s.lda), 0);
  for (int64_t j = 0; j < n; ++j)
    for (int64_t p = 0; p < k; ++p) {
      int32_t v = wd(rng);
      switch (fill) {
        case Fill::MinA_MaxW: v = r.hi; break;
        case Fill::MinA_MinW: v = r.lo; break;
        case Fill::MinA_Alternating: v = ((p + j) % 2) ? r.hi : r.lo; break;
        case Fill::Extremes: v = (rng() % 2) ? r.hi : r.lo; break;
        default: break;
      }
      s.wcodes[static_cast<size_t>(j * k + p)] = v;
    }
  for (int64_t i = 0; i < m; ++i)
    for (int64_t p = 0; p < k; ++p) {
      int32_t v = ad(rng);
      if (fill == Fill::MinA_MaxW || fill == Fill::MinA_MinW || fill == Fill::MinA_Alternating) v = -128;
      if (fill == Fill::Extremes) v = (rng() % 2) ? 127 : -128;
      s.a[static_cast<size_t>(i * s.lda + p)] = static_cast<int8_t>(v);
    }
  s.w = QWeights::pack(pack_codes(s.wcodes, {n, k}, storage), n, k);

  std::uniform_int_distribution<int32_t> cod(-100000, 100000), zpd(-5, 5);
  std::uniform_real_distribution<double> md(-13.0, -3.0);  // multipliers 2^-13 .. 2^-3
  std::uniform_real_distribution<float> sd(0.001f, 0.1f), bd(-2.0f, 2.0f);
  s.col_off.resize(static_cast<size_t>(n));
  s.mult.resize(static_cast<size_t>(n));
  s.col_scale.resize(static_cast<size_t>(n));
  s.bias.resize(static_cast<size_t>(n));
  s.wzp.resize(static_cast<size_t>(n));
  for (int64_t j = 0; j < n; ++j) {
    s.col_off[j] = cod(rng);
    s.mult[j] = FixedPointMultiplier::from(std::exp2(md(rng)));
    s.col_scale[j] = sd(rng);
    s.bias[j] = bd(rng);
    s.wzp[j] = zpd(rng);
  }
  s.row_off.resize(static_cast<size_t>(m));
  s.row_scale.resize(static_cast<size_t>(m));
  row_sums_s8(m, k, s.a.data(), s.lda, s.row_off.data());
  for (int64_t i = 0; i < m; ++i) s.row_scale[i] = sd(rng);
  s.out.column_offset = s.col_off.data();
  s.out.weight_zero_point = use_wzp ? s.wzp.data() : nullptr;
  s.out.row_offset = use_wzp ? s.row_off.data() : nullptr;
  s.out.multiplier = s.mult.data();
  s.out.output_zero_point = static_cast<int32_t>(seed % 21) - 10;
  s.out.column_scale = s.col_scale.data();
  return s;
}

std::vector<int8_t> run_s8(const Case& s, bool reference) {
  std::vector<int8_t> c(static_cast<size_t>(std::max<int64_t>(s.m * s.ldc, 1)), 99);
  if (reference)
    kernels::qgemm_s8_ref(s.m, s.a.data(), s.lda, s.w, s.out, c.data(), s.ldc);
  else
    qgemm_s8(s.m, s.a.data(), s.lda, s.w, s.out, c.data(), s.ldc);
  return c;
}

std::vector<float> run_f32(const Case& s, bool reference) {
  std::vector<float> c(static_cast<size_t>(std::max<int64_t>(s.m * s.ldc, 1)), 99.0f);
  if (reference)
    kernels::qgemm_s8_f32_ref(s.m, s.a.data(), s.lda, s.w, s.out, c.data(), s.ldc);
  else
    qgemm_s8_f32(s.m, s.a.data(), s.lda, s.w, s.out, c.data(), s.ldc);
  return c;
}

std::string describe(const Case& s) {
  return std::to_string(s.m) + "x" + std::to_string(s.n) + "x" + std::to_string(s.k) + " " + name_of(s.storage) +
         (s.out.weight_zero_point ? " wzp" : "") + " lda=" + std::to_string(s.lda) + " ldc=" + std::to_string(s.ldc);
}

// The fast paths this CPU has: each is tested by capping the dispatcher at it.
std::vector<Isa> fast_isas() { return testing::isa_levels({Isa::Avx2, Isa::Avx512Vnni}); }

// Both outputs of every dispatched path against the reference: s8 bit-exact (including the
// bytes between rows, which must stay untouched), f32 within 1e-6 relative.
void expect_matches_reference(Case& s, const std::string& what = "") {
  SCOPED_TRACE(describe(s) + " " + what);
  const std::vector<int8_t> ref8 = run_s8(s, true);
  const std::vector<float> ref = run_f32(s, true);
  for (Isa isa : fast_isas()) {
    SCOPED_TRACE(std::string("isa ") + name_of(isa));
    set_max_isa(isa);
    const std::vector<int8_t> got8 = run_s8(s, false);
    const std::vector<float> got = run_f32(s, false);
    set_max_isa(Isa::Avx512Vnni);
    ASSERT_EQ(ref8, got8);
    for (size_t i = 0; i < ref.size(); ++i)
      ASSERT_LE(std::fabs(ref[i] - got[i]), 1e-6f * std::fabs(ref[i])) << "element " << i << ": " << ref[i] << " vs " << got[i];
  }
}

const DType kStorages[] = {DType::S8, DType::S4, DType::U4, DType::S2, DType::U2};

TEST_F(QGemmTest, MatchesReferenceOnAwkwardShapes) {
  const int64_t sizes[] = {1, 3, 7, 17, 63, 64, 65};
  uint32_t seed = 1;
  for (DType storage : kStorages) {
    const bool full = storage == DType::S8 || storage == DType::S4;  // all combinations, else a subset
    for (int64_t m : sizes)
      for (int64_t n : sizes)
        for (int64_t k : sizes) {
          if (!full && (m == 63 || m == 3 || n == 63 || n == 3 || k == 63)) continue;
          ++seed;
          Case s = make_setup(m, n, k, storage, seed, seed % 2 == 0, Fill::Random, seed % 3, (seed / 3) % 3);
          // Vary the optional parts of the output stage from case to case.
          s.out.bias = seed % 4 < 2 ? s.bias.data() : nullptr;
          s.out.row_scale = seed % 5 < 3 ? s.row_scale.data() : nullptr;
          s.out.relu = seed % 3 == 0;
          s.out.clamp_min = seed % 7 == 0 ? 0 : -128;
          s.out.clamp_max = seed % 11 == 0 ? 100 : 127;
          expect_matches_reference(s);
          if (HasFatalFailure()) return;
        }
  }
}

TEST_F(QGemmTest, MatchesReferenceOnModelShapes) {
  struct S {
    int64_t m, n, k;
  };
  const S shapes[] = {{256, 64, 784, }, {33, 32, 64}, {256, 10, 32}, {1, 4096, 256}, {2, 100, 4096}, {5, 64, 784}};
  uint32_t seed = 1000;
  for (const S& sh : shapes)
    for (DType storage : kStorages) {
      if (sh.m == 256 && sh.k == 784 && storage != DType::S8) continue;  // keep it quick
      ++seed;
      Case s = make_setup(sh.m, sh.n, sh.k, storage, seed, seed % 2 == 1);
      s.out.bias = s.bias.data();
      s.out.relu = true;
      expect_matches_reference(s);
      if (HasFatalFailure()) return;
    }
}

TEST_F(QGemmTest, SaturationCasesOfVpmaddubswAreExact) {
  // a = -128 with w = +-127: every pair of products is +-32512, the largest there can be.
  const Fill fills[] = {Fill::MinA_MaxW, Fill::MinA_MinW, Fill::MinA_Alternating, Fill::Extremes};
  uint32_t seed = 2000;
  for (Fill fill : fills)
    for (DType storage : kStorages)
      for (int64_t k : {4, 31, 64, 300}) {
        Case s = make_setup(7, 33, k, storage, ++seed, fill == Fill::Extremes, fill);
        // Small multipliers so that the s8 output is not simply saturated, and exact sums checked.
        for (auto& f : s.mult) f = FixedPointMultiplier::from(1.0 / (130.0 * static_cast<double>(k)));
        for (auto& o : s.col_off) o = 0;
        expect_matches_reference(s);
        if (HasFatalFailure()) return;
        // The raw sums themselves: f32 output with unit scales is float(acc).
        std::vector<float> ones(static_cast<size_t>(s.n), 1.0f);
        s.out.column_scale = ones.data();
        s.out.weight_zero_point = nullptr;
        const std::vector<float> got = run_f32(s, false);
        for (int64_t i = 0; i < s.m; ++i)
          for (int64_t j = 0; j < s.n; ++j) {
            int64_t raw = 0;
            for (int64_t p = 0; p < k; ++p) raw += int64_t{s.a[i * s.lda + p]} * s.wcodes[j * k + p];
            ASSERT_EQ(got[i * s.ldc + j], static_cast<float>(raw)) << describe(s) << " at " << i << "," << j;
          }
      }
}

TEST_F(QGemmTest, RequantizationExtremes) {
  // Multipliers from tiny to 2^20, column offsets near +-2^31: apply() saturates to int32 and the
  // clamp must act after it, exactly as the reference.
  std::mt19937 rng(7);
  for (DType storage : {DType::S8, DType::S4}) {
    Case s = make_setup(9, 40, 50, storage, 3000, true);
    std::uniform_real_distribution<double> e(-40.0, 20.0);
    for (auto& f : s.mult) f = FixedPointMultiplier::from(std::exp2(e(rng)));
    s.mult[0] = FixedPointMultiplier::from(1e-15);  // multiplier 0, shift 62
    s.mult[1] = FixedPointMultiplier::from(1.0);
    s.mult[2] = FixedPointMultiplier::from(1073741823.0);
    for (size_t j = 0; j < s.col_off.size(); ++j)
      s.col_off[j] = j % 3 == 0 ? INT32_MAX - 5 : j % 3 == 1 ? INT32_MIN + 7 : static_cast<int32_t>(rng() % 2001) - 1000;
    for (int32_t zp : {0, -128, 127, 1000, -100000, INT32_MAX, INT32_MIN}) {
      s.out.output_zero_point = zp;
      for (auto [lo, hi] : {std::pair{-128, 127}, std::pair{-5, 9}, std::pair{0, 127}, std::pair{-300, 300},
                            std::pair{10, -10}, std::pair{200, 300}}) {
        s.out.clamp_min = lo;
        s.out.clamp_max = hi;
        SCOPED_TRACE("zp=" + std::to_string(zp) + " clamp=[" + std::to_string(lo) + "," + std::to_string(hi) + "]");
        const auto ref = run_s8(s, true);
        for (Isa isa : fast_isas()) {
          set_max_isa(isa);
          ASSERT_EQ(ref, run_s8(s, false)) << describe(s) << " isa " << name_of(isa);
        }
        set_max_isa(Isa::Avx512Vnni);
      }
    }
  }
}

TEST_F(QGemmTest, ReluAndClampBounds) {
  Case s = make_setup(17, 65, 63, DType::S8, 4000, true);
  s.out.relu = true;
  s.out.bias = s.bias.data();
  const std::vector<float> f = run_f32(s, false);
  for (float v : f) EXPECT_GE(v, 0.0f);
  s.out.clamp_min = 0;
  s.out.clamp_max = 50;
  const std::vector<int8_t> c = run_s8(s, false);
  for (int64_t i = 0; i < s.m; ++i)
    for (int64_t j = 0; j < s.n; ++j) {
      EXPECT_GE(c[i * s.ldc + j], 0);
      EXPECT_LE(c[i * s.ldc + j], 50);
    }
  expect_matches_reference(s);
}

TEST_F(QGemmTest, ThreadCountDoesNotChangeResults) {
  for (DType storage : {DType::S8, DType::S4, DType::U2}) {
    for (auto [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{67, 129, 200}, {3, 1000, 300}, {130, 17, 500}}) {
      Case s = make_setup(m, n, k, storage, 5000 + static_cast<uint32_t>(m), true);
      s.out.bias = s.bias.data();
      for (Isa isa : fast_isas()) {
        set_max_isa(isa);
        set_num_threads(1);
        const auto c1 = run_s8(s, false);
        const auto f1 = run_f32(s, false);
        set_num_threads(2);
        const auto c2 = run_s8(s, false);
        const auto f2 = run_f32(s, false);
        ASSERT_EQ(c1, c2) << describe(s) << " isa " << name_of(isa);
        ASSERT_EQ(0, std::memcmp(f1.data(), f2.data(), f1.size() * sizeof(float))) << describe(s) << " isa " << name_of(isa);
      }
      set_max_isa(Isa::Avx512Vnni);
      expect_matches_reference(s);
    }
  }
}

// Weights are packed only for the kernels of the ISA they are packed for: packed for the
// reference they hold no layout, and every ISA then runs the reference on them.
TEST_F(QGemmTest, WeightsPackedForTheReferenceRunTheReference) {
  Case s = make_setup(9, 21, 70, DType::S8, 6100, true);
  s.out.bias = s.bias.data();
  const auto reference = run_s8(s, true);
  s.w = QWeights::pack(s.w.codes(), s.w.n(), s.w.k(), Isa::Reference);
  EXPECT_FALSE(s.w.kernel_layout().defined());
  EXPECT_FALSE(s.w.vnni_layout().defined());
  for (Isa isa : fast_isas()) {
    set_max_isa(isa);
    EXPECT_EQ(run_s8(s, false), reference) << name_of(isa);
  }
  set_max_isa(Isa::Avx512Vnni);
  if (active_isa() >= Isa::Avx2) {
    EXPECT_NE(kernels::describe_qgemm(DType::S8, false, false).find("qgemm_s8__avx2: the weights were not packed for it"),
              std::string::npos);
  }
  const QWeights avx2 = QWeights::pack(s.w.codes(), s.w.n(), s.w.k(), Isa::Avx2);
  EXPECT_EQ(avx2.kernel_layout().defined(), true);
  EXPECT_FALSE(avx2.vnni_layout().defined());
}

TEST_F(QGemmTest, IsaCapGivesTheReferenceExactly) {
  Case s = make_setup(20, 37, 91, DType::S4, 6000, true);
  s.out.bias = s.bias.data();
  set_max_isa(Isa::Reference);
  EXPECT_EQ(run_s8(s, false), run_s8(s, true));
  const auto f = run_f32(s, false), r = run_f32(s, true);
  EXPECT_EQ(0, std::memcmp(f.data(), r.data(), f.size() * sizeof(float)));
}

// The reference against the contract formula evaluated naively in 64-bit from unpack_codes.
TEST_F(QGemmTest, ReferenceMatchesNaiveContractFormula) {
  uint32_t seed = 7000;
  for (DType storage : kStorages) {
    Case s = make_setup(5, 19, 37, storage, ++seed, true);
    s.out.bias = s.bias.data();
    s.out.row_scale = s.row_scale.data();
    s.out.relu = seed % 2 == 0;
    s.out.clamp_min = -100;
    s.out.clamp_max = 90;
    const std::vector<int32_t> codes = unpack_codes(s.w.codes(), {s.n, s.k});
    ASSERT_EQ(codes, s.wcodes);
    const auto c8 = run_s8(s, true);
    const auto cf = run_f32(s, true);
    for (int64_t i = 0; i < s.m; ++i)
      for (int64_t j = 0; j < s.n; ++j) {
        int64_t raw = 0;
        for (int64_t p = 0; p < s.k; ++p) raw += int64_t{s.a[i * s.lda + p]} * codes[j * s.k + p];
        const int64_t acc = raw + s.col_off[j] - int64_t{s.wzp[j]} * s.row_off[i];
        ASSERT_EQ(acc, static_cast<int32_t>(acc));  // no wrap-around at these sizes
        // apply(): round half up of acc * m / 2^shift, in exact 128-bit arithmetic.
        const __int128 prod = static_cast<__int128>(acc) * s.mult[j].multiplier;
        __int128 q = (prod + (static_cast<__int128>(1) << (s.mult[j].shift - 1))) >> s.mult[j].shift;
        q = std::clamp<__int128>(q, INT32_MIN, INT32_MAX);
        const int64_t expect8 = std::clamp<int64_t>(static_cast<int64_t>(q) + s.out.output_zero_point, -100, 90);
        EXPECT_EQ(c8[i * s.ldc + j], expect8) << i << "," << j;
        float v = static_cast<float>(acc) * s.row_scale[i] * s.col_scale[j] + s.bias[j];
        if (s.out.relu) v = std::max(v, 0.0f);
        EXPECT_EQ(cf[i * s.ldc + j], v) << i << "," << j;
      }
  }
}

TEST_F(QGemmTest, RowSumsMatchReference) {
  std::mt19937 rng(8);
  for (int64_t k : {0, 1, 31, 32, 33, 100, 784}) {
    const int64_t m = 5, lda = k + 3;
    std::vector<int8_t> a(static_cast<size_t>(m * lda));
    for (auto& v : a) v = static_cast<int8_t>(rng());
    std::vector<int32_t> ref(m), got(m);
    kernels::row_sums_s8_ref(m, k, a.data(), lda, ref.data());
    row_sums_s8(m, k, a.data(), lda, got.data());
    EXPECT_EQ(ref, got) << "k=" << k;
    for (int64_t i = 0; i < m; ++i) {
      int32_t s = 0;
      for (int64_t p = 0; p < k; ++p) s += a[i * lda + p];
      EXPECT_EQ(ref[i], s);
    }
  }
}

TEST_F(QGemmTest, PackValidatesAndComputesRowSums) {
  std::vector<int32_t> codes = {1, -2, 3, 127, -127, 0};
  QWeights w = QWeights::pack(pack_codes(codes, {2, 3}, DType::S8), 2, 3);
  EXPECT_EQ(w.n(), 2);
  EXPECT_EQ(w.k(), 3);
  EXPECT_EQ(w.row_sums(), (std::vector<int32_t>{2, 0}));
  QWeights w4 = QWeights::pack(pack_codes(std::vector<int32_t>{-8, 7, 3, -1, 0, 5}, {2, 3}, DType::S4), 2, 3);
  EXPECT_EQ(w4.row_sums(), (std::vector<int32_t>{2, 4}));
  codes[4] = -128;
  try {
    QWeights::pack(pack_codes(codes, {2, 3}, DType::S8), 2, 3);
    ADD_FAILURE() << "expected an error for code -128";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("-128"), std::string::npos) << e.what();
  }
  try {
    QWeights::pack(pack_codes(std::vector<int32_t>(6, 1), {2, 3}, DType::S4), 3, 3);
    ADD_FAILURE() << "expected an error for a short tensor";
  } catch (const Error& e) {
    EXPECT_EQ(e.kind(), ErrorKind::InvalidArgument);
    EXPECT_NE(std::string(e.what()).find("too small"), std::string::npos) << e.what();
  }
  EXPECT_THROW(QWeights::pack(Tensor(DType::F32, {6}), 2, 3), Error);
}

TEST_F(QGemmTest, EmptyReductionGivesTheOffsetsOnly) {
  for (DType storage : {DType::S8, DType::U4}) {
    Case s = make_setup(3, 20, 0, storage, 9000, true);
    expect_matches_reference(s);
  }
}

}  // namespace
}  // namespace lowbit
