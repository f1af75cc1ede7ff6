// The AVX-512 VNNI integer GEMM against the reference: bit-exact on awkward shapes, every weight
// storage, zero points, saturation extremes and both output stages. Skipped on CPUs without VNNI
// (the AVX2 path is covered by test_qgemm.cpp).
#include <cmath>
#include <cstring>

#include "test_util.h"
#include "kernels/paths.h"

namespace lowbit {
namespace {

struct Problem {
  int64_t m, n, k;
  QWeights w;
  std::vector<int8_t> a;
  std::vector<int32_t> offset, wzp, rows;
  std::vector<FixedPointMultiplier> mult;
  std::vector<float> row_scale, col_scale, bias;
  QOutputStage out;
};

Problem make(int64_t m, int64_t n, int64_t k, DType storage, uint64_t seed, bool zero_points, bool extreme) {
  Problem p{m, n, k, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}};
  Rng rng(seed);
  const int bits = bits_of(storage);
  const bool is_signed = storage == DType::S8 || storage == DType::S4 || storage == DType::S2;
  const int lo = is_signed ? -(1 << (bits - 1)) + (bits == 8 ? 1 : 0) : 0, hi = is_signed ? (1 << (bits - 1)) - 1 : (1 << bits) - 1;
  std::vector<int32_t> codes(static_cast<size_t>(n * k));
  for (size_t i = 0; i < codes.size(); ++i)
    codes[i] = extreme ? (i % 3 == 0 ? lo : hi) : lo + static_cast<int32_t>(rng.below(static_cast<uint32_t>(hi - lo + 1)));
  p.w = QWeights::pack(pack_codes(codes, {n, k}, storage), n, k);
  p.a.resize(static_cast<size_t>(m * k));
  for (auto& v : p.a) v = extreme ? -128 : static_cast<int8_t>(static_cast<int>(rng.below(256)) - 128);
  for (int64_t j = 0; j < n; ++j) {
    p.offset.push_back(static_cast<int32_t>(rng.below(20001)) - 10000);
    p.wzp.push_back(static_cast<int32_t>(rng.below(9)) - 4);
    p.mult.push_back(FixedPointMultiplier::from(std::ldexp(0.5 + 0.5 * rng.uniform(), -8 - static_cast<int>(rng.below(8)))));
    p.col_scale.push_back(0.01f * (1 + rng.uniform()));
    p.bias.push_back(rng.uniform(-1, 1));
  }
  for (int64_t i = 0; i < m; ++i) {
    p.rows.push_back(static_cast<int32_t>(rng.below(2001)) - 1000);
    p.row_scale.push_back(0.02f * (1 + rng.uniform()));
  }
  p.out.column_offset = p.offset.data();
  if (zero_points) p.out.weight_zero_point = p.wzp.data(), p.out.row_offset = p.rows.data();
  p.out.multiplier = p.mult.data();
  p.out.output_zero_point = static_cast<int32_t>(rng.below(21)) - 10;
  p.out.clamp_min = seed % 2 ? p.out.output_zero_point : -128;
  p.out.row_scale = seed % 3 ? p.row_scale.data() : nullptr;
  p.out.column_scale = p.col_scale.data();
  p.out.bias = seed % 2 ? p.bias.data() : nullptr;
  p.out.relu = seed % 2;
  return p;
}

void expect_vnni_matches_reference(const Problem& p, const std::string& what) {
  std::vector<int8_t> ref8(static_cast<size_t>(p.m * p.n)), fast8(ref8.size());
  std::vector<float> ref32(ref8.size()), fast32(ref8.size());
  kernels::qgemm_s8_ref(p.m, p.a.data(), p.k, p.w, p.out, ref8.data(), p.n);
  kernels::qgemm_s8_f32_ref(p.m, p.a.data(), p.k, p.w, p.out, ref32.data(), p.n);
  ASSERT_TRUE(kernels::qgemm_s8_vnni(p.m, p.a.data(), p.k, p.w, p.out, fast8.data(), p.n));
  ASSERT_TRUE(kernels::qgemm_s8_f32_vnni(p.m, p.a.data(), p.k, p.w, p.out, fast32.data(), p.n));
  EXPECT_EQ(fast8, ref8) << what;
  EXPECT_EQ(std::memcmp(fast32.data(), ref32.data(), ref32.size() * sizeof(float)), 0) << what;
}

bool has_vnni() {
  const CpuFeatures& f = cpu_features();
  return f.avx512vnni && f.avx512vl && f.avx512bw;
}

TEST(QGemmVnni, BitExactOnAwkwardShapesAndEveryStorage) {
  if (!has_vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  uint64_t seed = 0;
  for (DType storage : {DType::S8, DType::S4, DType::U4, DType::S2, DType::U2})
    for (int64_t m : {1, 7, 9, 17})
      for (int64_t n : {1, 15, 17, 33, 65})
        for (int64_t k : {1, 3, 7, 63, 65}) {
          ++seed;
          Problem p = make(m, n, k, storage, seed, seed % 4 == 0, false);
          expect_vnni_matches_reference(p, std::string(name_of(storage)) + " " + std::to_string(m) + "x" +
                                               std::to_string(n) + "x" + std::to_string(k));
        }
}

TEST(QGemmVnni, ExtremeCodesAndModelShapesWithThreads) {
  if (!has_vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const int saved = num_threads();
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    expect_vnni_matches_reference(make(37, 70, 784, DType::S8, 5, true, true), "extremes");
    expect_vnni_matches_reference(make(256, 64, 784, DType::S8, 6, false, false), "256x64x784");
    expect_vnni_matches_reference(make(256, 32, 64, DType::S4, 7, true, false), "256x32x64 s4");
    expect_vnni_matches_reference(make(300, 10, 32, DType::S2, 8, false, false), "300x10x32 s2");
  }
  set_num_threads(saved);
}

TEST(QGemmVnni, S8OutputWithoutWeightZeroPointsOnEveryTilePath) {
  // s8 output without weight zero points (plain, or with an output zero point and a ReLU clamp)
  // takes the 6-row tiles that keep their sums in registers (FullTiles), with rows past whole
  // tiles, pairs with a column whose result may not fit s32 (multiplier >= 1) and partial pairs
  // on the other path; with 2 threads the row tiles are claimed dynamically. K = 4096 gives
  // several blocks of pairs; K = 63 a copied A; lda > K a strided one.
  if (!has_vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const int saved = num_threads();
  uint64_t seed = 100;
  struct Shape { int64_t m, n, k, lda; };
  const Shape shapes[] = {{1, 32, 64, 64},     {5, 64, 64, 64},      {6, 32, 4, 4},        {7, 48, 64, 70},
                          {12, 100, 63, 63},   {13, 64, 1000, 1000}, {37, 96, 256, 260},   {100, 100, 64, 64},
                          {60, 128, 99, 99},   {100, 288, 4096, 4096}, {64, 544, 1024, 1024}};
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Shape& s : shapes)
      for (int variant = 0; variant < 4; ++variant) {
        const bool slow_column = variant & 1, relu = variant & 2;
        Rng rng(++seed);
        std::vector<int32_t> codes(static_cast<size_t>(s.n * s.k));
        for (auto& v : codes) v = static_cast<int32_t>(rng.below(255)) - 127;
        const QWeights w = QWeights::pack(pack_codes(codes, {s.n, s.k}, DType::S8), s.n, s.k);
        std::vector<int8_t> a(static_cast<size_t>(s.m * s.lda));
        for (auto& v : a) v = static_cast<int8_t>(static_cast<int>(rng.below(256)) - 128);
        std::vector<int32_t> offset(static_cast<size_t>(s.n));
        std::vector<FixedPointMultiplier> mult(static_cast<size_t>(s.n));
        for (int64_t j = 0; j < s.n; ++j) {
          offset[j] = static_cast<int32_t>(rng.below(200001)) - 100000;
          // Scales around 1/(64 sqrt(K)) so that outputs spread over the s8 range and saturate.
          mult[j] = FixedPointMultiplier::from((0.5 + rng.uniform()) / (64.0 * std::sqrt(static_cast<double>(s.k))));
        }
        if (slow_column) mult[static_cast<size_t>(s.n / 3)] = FixedPointMultiplier::from(1.5);
        QOutputStage out;
        out.column_offset = offset.data();
        out.multiplier = mult.data();
        if (relu) out.output_zero_point = -7, out.clamp_min = -7;
        std::vector<int8_t> ref(static_cast<size_t>(s.m * s.n)), fast(ref.size(), 0x55);
        kernels::qgemm_s8_ref(s.m, a.data(), s.lda, w, out, ref.data(), s.n);
        ASSERT_TRUE(kernels::qgemm_s8_vnni(s.m, a.data(), s.lda, w, out, fast.data(), s.n));
        EXPECT_EQ(fast, ref) << s.m << "x" << s.n << "x" << s.k << " lda " << s.lda << " threads " << threads
                             << (slow_column ? " with a slow column" : "") << (relu ? " relu" : "");
        int saturated = 0;
        for (int8_t v : ref) saturated += v == -128 || v == 127;
        EXPECT_LT(saturated, static_cast<int>(ref.size())) << "every output saturated: the test would be weak";
      }
  }
  set_num_threads(saved);
}

TEST(QGemmVnni, F32OutputOnEveryTilePath) {
  // f32 output (dynamic quantization) takes the same 6-row tiles as s8 (FullTiles, the float
  // stage applied to each finished tile inside the next one's k loop), with and without weight
  // zero points, row scales, bias and ReLU; rows past whole tiles and partial pairs go through
  // the 8-row tiles; K = 4096 gives several blocks of pairs, K = 63 a copied A, lda > K a strided
  // one; 2 threads claim row tiles dynamically. Bit-identical to the reference.
  if (!has_vnni()) GTEST_SKIP() << "no AVX-512 VNNI on this CPU";
  const int saved = num_threads();
  uint64_t seed = 200;
  struct Shape { int64_t m, n, k, lda; };
  const Shape shapes[] = {{6, 32, 4, 4},     {7, 48, 64, 70},       {12, 100, 63, 63}, {13, 64, 1000, 1000},
                          {37, 96, 256, 260}, {100, 288, 4096, 4096}, {128, 768, 256, 256}, {65, 256, 1024, 1028}};
  for (int threads : {1, 2}) {
    set_num_threads(threads);
    for (const Shape& s : shapes)
      for (int variant = 0; variant < 6; ++variant) {
        Problem p = make(s.m, s.n, s.k, DType::S8, ++seed, variant % 2 == 0, false);
        std::vector<int8_t> strided(static_cast<size_t>(s.m * s.lda), 0x33);
        for (int64_t i = 0; i < s.m; ++i) std::memcpy(&strided[static_cast<size_t>(i * s.lda)], &p.a[static_cast<size_t>(i * s.k)], static_cast<size_t>(s.k));
        std::vector<float> ref(static_cast<size_t>(s.m * s.n)), fast(ref.size(), -1.0f);
        kernels::qgemm_s8_f32_ref(s.m, strided.data(), s.lda, p.w, p.out, ref.data(), s.n);
        ASSERT_TRUE(kernels::qgemm_s8_f32_vnni(s.m, strided.data(), s.lda, p.w, p.out, fast.data(), s.n));
        EXPECT_EQ(std::memcmp(fast.data(), ref.data(), ref.size() * sizeof(float)), 0)
            << s.m << "x" << s.n << "x" << s.k << " lda " << s.lda << " threads " << threads << " variant " << variant
            << (p.out.weight_zero_point ? " zero points" : "") << (p.out.row_scale ? " row scales" : "") << (p.out.bias ? " bias" : "")
            << (p.out.relu ? " relu" : "");
      }
  }
  set_num_threads(saved);
}

TEST(QGemmVnni, DispatchUsesEveryPathWithTheSameResult) {
  Problem p = make(64, 40, 100, DType::S8, 9, true, false);
  std::vector<int8_t> results[3];
  const Isa caps[3] = {Isa::Reference, Isa::Avx2, Isa::Avx512Vnni};
  for (int i = 0; i < 3; ++i) {
    set_max_isa(caps[i]);
    results[i].resize(static_cast<size_t>(p.m * p.n));
    qgemm_s8(p.m, p.a.data(), p.k, p.w, p.out, results[i].data(), p.n);
  }
  set_max_isa(Isa::Avx512Vnni);
  EXPECT_EQ(results[1], results[0]);
  EXPECT_EQ(results[2], results[0]);
}

TEST(QuantizeKernels, FastPathIsBitExactWithReference) {
  std::vector<float> x(1000);
  Rng rng(3);
  for (auto& v : x) v = rng.uniform(-40, 40);
  x[3] = std::nanf(""), x[4] = 1e30f, x[5] = -1e30f, x[6] = 2.5f, x[7] = -2.5f;
  for (int64_t n : {1, 31, 32, 33, 1000}) {
    std::vector<int8_t> ref(static_cast<size_t>(n)), fast(static_cast<size_t>(n));
    kernels::quantize_s8_ref(n, x.data(), 0.3f, -7, ref.data());
    quantize_s8(n, x.data(), 0.3f, -7, fast.data());
    EXPECT_EQ(fast, ref) << n;
    std::vector<float> back_ref(static_cast<size_t>(n)), back(static_cast<size_t>(n));
    kernels::dequantize_s8_ref(n, ref.data(), 0.3f, -7, back_ref.data());
    dequantize_s8(n, ref.data(), 0.3f, -7, back.data());
    EXPECT_EQ(std::memcmp(back.data(), back_ref.data(), back.size() * sizeof(float)), 0) << n;
    // u8 codes (image bytes), zero points 0 and above 127.
    std::vector<uint8_t> bytes(static_cast<size_t>(n));
    for (auto& b : bytes) b = static_cast<uint8_t>(rng.below(256));
    for (int32_t zero_point : {0, 200}) {
      kernels::dequantize_u8_ref(n, bytes.data(), 1.0f / 255.0f, zero_point, back_ref.data());
      dequantize_u8(n, bytes.data(), 1.0f / 255.0f, zero_point, back.data());
      EXPECT_EQ(std::memcmp(back.data(), back_ref.data(), back.size() * sizeof(float)), 0) << n;
    }
  }
  // Agrees with the QuantParams definition.
  QuantParams p{8, true, QScheme::Affine, false, -1, {0.3f}, {-7}};
  int8_t q;
  for (float v : {0.0f, 0.15f, 0.45f, -3.3f, 100.0f}) {
    quantize_s8(1, &v, 0.3f, -7, &q);
    EXPECT_EQ(q, p.quantize(v)) << v;
  }
}

}  // namespace
}  // namespace lowbit
