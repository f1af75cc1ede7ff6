// ONNX's integer ops (graph/ops/integer_ops.cpp, MatMulInteger in matmul.cpp) against their
// definitions written out here: MatMulInteger with per-row / per-column zero points, u8 and s8
// mixed, batches broadcast; ConvInteger with groups, strides, padding and per-channel weight zero
// points (against float Conv2D of the zero-point-free values: exact, the sums stay below 2^24);
// DynamicQuantizeLinear against its formula, and its all-zero case. ONNX's own node tests
// (tests/onnx/node_tests.cpp) check the three against ONNX's expected outputs too.
#include <gtest/gtest.h>

#include <cmath>

#include "lowbit/ops.h"
#include "test_util.h"

namespace lowbit {
namespace {

Tensor codes(DType d, Shape shape, uint64_t seed) {
  Tensor t(d, std::move(shape));
  Rng rng(seed);
  for (int64_t i = 0; i < t.numel(); ++i) {
    const int v = static_cast<int>(rng.below(256));
    if (d == DType::U8) t.data<uint8_t>()[i] = static_cast<uint8_t>(v);
    else t.data<int8_t>()[i] = static_cast<int8_t>(v - 128);
  }
  return t;
}

int32_t at(const Tensor& t, int64_t i) { return t.dtype() == DType::U8 ? t.data<uint8_t>()[i] : t.data<int8_t>()[i]; }

TEST(MatMulInteger, PerRowAndPerColumnZeroPointsAndBroadcastBatches) {
  for (DType da : {DType::U8, DType::S8})
    for (DType db : {DType::U8, DType::S8}) {
      const int64_t m = 7, k = 17, n = 5;
      const Tensor a = codes(da, {3, m, k}, 1), b = codes(db, {k, n}, 2);  // b broadcast over a's batch
      const Tensor za = codes(da, {m}, 3), zb = codes(db, {n}, 4);
      const Node node{"mm", "MatMulInteger", {"a", "b", "za", "zb"}, {"y"}};
      EXPECT_EQ(testing::infer(node, {{-1, m, k}, {k, n}, {m}, {n}})[0], (Shape{-1, m, n}));
      const Tensor y = testing::run1(node, {a, b, za, zb});
      ASSERT_EQ(y.dtype(), DType::S32);
      ASSERT_EQ(y.shape(), (Shape{3, m, n}));
      for (int64_t bi = 0; bi < 3; ++bi)
        for (int64_t r = 0; r < m; ++r)
          for (int64_t c = 0; c < n; ++c) {
            int32_t sum = 0;
            for (int64_t j = 0; j < k; ++j) sum += (at(a, (bi * m + r) * k + j) - at(za, r)) * (at(b, j * n + c) - at(zb, c));
            ASSERT_EQ(y.data<int32_t>()[(bi * m + r) * n + c], sum) << name_of(da) << " x " << name_of(db);
          }
    }
  const Node bad{"mm", "MatMulInteger", {"a", "b"}, {"y"}};
  EXPECT_LOWBIT_ERROR(testing::infer(bad, {{2, 3}, {4, 5}}), "inner dimensions differ");
  EXPECT_LOWBIT_ERROR(testing::infer(Node{"mm", "MatMulInteger", {"a", "b", "za"}, {"y"}}, {{2, 3}, {3, 5}, {3}}), "a_zero_point");
}

TEST(ConvInteger, MatchesFloatConvolutionOfTheZeroPointFreeValues) {
  struct Case {
    int64_t n, c, h, w, oc, k, stride, pad, group;
  };
  for (const Case& cs : {Case{2, 3, 7, 9, 4, 3, 1, 1, 1}, Case{1, 4, 17, 5, 6, 3, 2, 0, 2}, Case{1, 6, 6, 6, 6, 3, 1, 2, 6}}) {
    const Tensor x = codes(DType::U8, {cs.n, cs.c, cs.h, cs.w}, 5), w = codes(DType::S8, {cs.oc, cs.c / cs.group, cs.k, cs.k}, 6);
    const Tensor zx = codes(DType::U8, {}, 7), zw = codes(DType::S8, {cs.oc}, 8);
    Attributes attrs{{"kernel_shape", std::vector<int64_t>{cs.k, cs.k}}, {"strides", std::vector<int64_t>{cs.stride, cs.stride}},
                     {"pads", std::vector<int64_t>(4, cs.pad)}, {"group", cs.group}};
    const Tensor y = testing::run1(Node{"c", "ConvInteger", {"x", "w", "zx", "zw"}, {"y"}, attrs}, {x, w, zx, zw});
    Tensor xf(DType::F32, x.shape()), wf(DType::F32, w.shape());
    for (int64_t i = 0; i < x.numel(); ++i) xf.data<float>()[i] = static_cast<float>(at(x, i) - at(zx, 0));
    const int64_t per = w.numel() / cs.oc;
    for (int64_t i = 0; i < w.numel(); ++i) wf.data<float>()[i] = static_cast<float>(at(w, i) - at(zw, i / per));
    const Tensor expected = testing::run1(Node{"f", "Conv2D", {"x", "w"}, {"y"}, attrs}, {xf, wf});
    ASSERT_EQ(y.dtype(), DType::S32);
    ASSERT_EQ(y.shape(), expected.shape());
    for (int64_t i = 0; i < y.numel(); ++i) ASSERT_EQ(static_cast<float>(y.data<int32_t>()[i]), expected.data<float>()[i]) << "element " << i;
  }
}

TEST(DynamicQuantizeLinear, FollowsOnnxsFormula) {
  Tensor x(DType::F32, {4, 33});
  Rng rng(9);
  for (int64_t i = 0; i < x.numel(); ++i) x.data<float>()[i] = rng.uniform(-0.7f, 2.3f);
  const Node node{"q", "DynamicQuantizeLinear", {"x"}, {"y", "s", "z"}};
  Tensor y, s, z;
  const Tensor* in[] = {&x};
  Tensor* out[] = {&y, &s, &z};
  find_op("DynamicQuantizeLinear").forward(node, in, out);
  float lo = 0.0f, hi = 0.0f;
  for (int64_t i = 0; i < x.numel(); ++i) lo = std::min(lo, x.data<float>()[i]), hi = std::max(hi, x.data<float>()[i]);
  const float scale = (hi - lo) / 255.0f;
  const float zero = std::nearbyint(std::clamp(-lo / scale, 0.0f, 255.0f));
  EXPECT_EQ(s.data<float>()[0], scale);
  EXPECT_EQ(z.data<uint8_t>()[0], static_cast<uint8_t>(zero));
  ASSERT_EQ(y.dtype(), DType::U8);
  for (int64_t i = 0; i < x.numel(); ++i)
    ASSERT_EQ(y.data<uint8_t>()[i], static_cast<uint8_t>(std::clamp(std::nearbyint(x.data<float>()[i] / scale) + zero, 0.0f, 255.0f)));
  Tensor zeros(DType::F32, {5});
  const Tensor* in0[] = {&zeros};
  find_op("DynamicQuantizeLinear").forward(node, in0, out);
  EXPECT_EQ(s.data<float>()[0], 0.0f);
  EXPECT_EQ(z.data<uint8_t>()[0], 0);
  for (int64_t i = 0; i < 5; ++i) EXPECT_EQ(y.data<uint8_t>()[i], 0);
}

}  // namespace
}  // namespace lowbit
