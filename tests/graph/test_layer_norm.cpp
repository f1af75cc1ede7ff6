// LayerNormalization: values against the formula evaluated by hand in double, the optional Mean /
// InvStdDev outputs, a broadcast scale, axes other than the last, gradient checks of X, Scale and
// B, thread-count independence, and shape / attribute errors.
#include <cmath>
#include <cstring>

#include "graph/gradcheck.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::check_gradients;
using testing::random;

std::vector<Tensor> run(const Node& node, std::vector<Tensor> inputs) {
  std::vector<const Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  std::vector<Tensor> outs;
  for (size_t i = 0; i < node.outputs.size(); ++i) outs.emplace_back(DType::F32, Shape{1});  // (copies would share storage)
  std::vector<Tensor*> out;
  for (auto& t : outs) out.push_back(&t);
  find_op(node.op).forward(node, in, out);
  return outs;
}

// y = (x - mean) / sqrt(var + eps) * scale + bias over the trailing `n` values of each row.
std::vector<double> by_hand(const Tensor& x, int64_t n, const Tensor& scale, const Tensor* bias, double eps) {
  std::vector<double> y(static_cast<size_t>(x.numel()));
  for (int64_t r = 0; r < x.numel() / n; ++r) {
    double mean = 0, var = 0;
    for (int64_t i = 0; i < n; ++i) mean += x.data<float>()[r * n + i];
    mean /= n;
    for (int64_t i = 0; i < n; ++i) var += std::pow(x.data<float>()[r * n + i] - mean, 2);
    var /= n;
    for (int64_t i = 0; i < n; ++i) {
      const double s = scale.numel() == 1 ? scale.data<float>()[0] : scale.data<float>()[i];
      const double b = bias ? (bias->numel() == 1 ? bias->data<float>()[0] : bias->data<float>()[i]) : 0.0;
      y[static_cast<size_t>(r * n + i)] = (x.data<float>()[r * n + i] - mean) / std::sqrt(var + eps) * s + b;
    }
  }
  return y;
}

TEST(LayerNormalization, MatchesTheFormulaOnAwkwardShapes) {
  for (int64_t n : {1, 7, 64, 65})
    for (int64_t rows : {1, 3, 17}) {
      const Tensor x = random({rows, n}, static_cast<uint64_t>(n * 100 + rows), -3, 5);
      const Tensor scale = random({n}, 2), bias = random({n}, 3);
      const auto out = run(Node{"ln", "LayerNormalization", {"x", "s", "b"}, {"y", "mean", "inv"}}, {x, scale, bias});
      const std::vector<double> want = by_hand(x, n, scale, &bias, 1e-5);
      ASSERT_EQ(out[0].shape(), x.shape());
      for (int64_t i = 0; i < x.numel(); ++i)
        EXPECT_NEAR(out[0].data<float>()[i], want[static_cast<size_t>(i)], 1e-5 * (1 + std::fabs(want[static_cast<size_t>(i)])))
            << rows << " x " << n << " at " << i;
      EXPECT_EQ(out[1].shape(), (Shape{rows, 1}));
      EXPECT_EQ(out[2].shape(), (Shape{rows, 1}));
      double mean0 = 0;
      for (int64_t i = 0; i < n; ++i) mean0 += x.data<float>()[i];
      EXPECT_NEAR(out[1].data<float>()[0], mean0 / n, 1e-5);
    }
}

TEST(LayerNormalization, LeadingAxisBroadcastScaleNoBiasAndThreads) {
  // axis 1 of [2, 3, 4]: rows of 12 values; one scale for all of them; no bias.
  const Tensor x = random({2, 3, 4}, 5), scale = random({1}, 6);
  const Node node{"ln", "LayerNormalization", {"x", "s"}, {"y"}, {{"axis", int64_t{1}}, {"epsilon", 1e-3}}};
  const auto out = run(node, {x, scale});
  const std::vector<double> want = by_hand(x, 12, scale, nullptr, 1e-3);
  for (int64_t i = 0; i < x.numel(); ++i) EXPECT_NEAR(out[0].data<float>()[i], want[static_cast<size_t>(i)], 1e-5);
  // Rows are independent and summed in order: the same bits on 1 and 2 threads.
  const Tensor big = random({301, 97}, 7), big_scale = random({97}, 8);
  const Node last{"ln", "LayerNormalization", {"x", "s"}, {"y"}};
  set_num_threads(1);
  const auto one = run(last, {big, big_scale});
  set_num_threads(2);
  const auto two = run(last, {big, big_scale});
  EXPECT_EQ(std::memcmp(one[0].raw(), two[0].raw(), one[0].nbytes()), 0);
}

TEST(GradCheck, LayerNormalization) {
  check_gradients(Node{"ln", "LayerNormalization", {"x", "s", "b"}, {"y"}}, {random({4, 7}, 30, -2, 2), random({7}, 31), random({7}, 32)});
  check_gradients(Node{"ln", "LayerNormalization", {"x", "s"}, {"y"}, {{"axis", int64_t{-2}}}},
                  {random({2, 3, 5}, 33, -2, 2), random({3, 5}, 34)});
  check_gradients(Node{"ln", "LayerNormalization", {"x", "s", "b"}, {"y"}}, {random({3, 6}, 35, -2, 2), random({1}, 36), random({1}, 37)});
}

TEST(LayerNormalization, RejectsBadShapesAndAttributes) {
  const auto infer = [](Node node, std::vector<Shape> shapes) { return find_op(node.op).infer_shapes(node, shapes); };
  const Node ln{"ln", "LayerNormalization", {"x", "s"}, {"y"}};
  EXPECT_EQ(infer(ln, {{-1, 8}, {8}}), (std::vector<Shape>{{-1, 8}}));
  EXPECT_LOWBIT_ERROR(infer(ln, {{2, 8}, {7}}), "scale must hold the normalized shape's 8 values ([8]), got [7]");
  EXPECT_LOWBIT_ERROR(infer(Node{"ln", "LayerNormalization", {"x", "s"}, {"y"}, {{"axis", int64_t{2}}}}, {{2, 8}, {8}}),
                      "axis 2 is out of range for input [2, 8]");
  EXPECT_LOWBIT_ERROR(infer(Node{"ln", "LayerNormalization", {"x", "s"}, {"y"}, {{"epsilon", -1.0}}}, {{2, 8}, {8}}),
                      "attribute 'epsilon' must be a finite value >= 0");
  EXPECT_LOWBIT_ERROR(infer(Node{"ln", "LayerNormalization", {"x", "s"}, {"y", "a", "b", "c"}}, {{2, 8}, {8}}),
                      "expects 1 to 3 outputs");
  EXPECT_EQ(infer(Node{"ln", "LayerNormalization", {"x", "s"}, {"y", "m", "i"}, {{"axis", int64_t{1}}}}, {{2, 3, 4}, {3, 4}}),
            (std::vector<Shape>{{2, 3, 4}, {2, 1, 1}, {2, 1, 1}}));
}

}  // namespace
}  // namespace lowbit
