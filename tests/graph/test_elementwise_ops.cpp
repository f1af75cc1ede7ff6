// Gelu and Mul (broadcasting): values against hand-computed references, shape inference and
// errors; their gradient checks are in test_gradcheck.cpp.
#include <cmath>

#include "graph/gradcheck.h"
#include "test_util.h"

namespace lowbit {
namespace {

using testing::random;

std::vector<float> run(const Node& node, std::vector<Tensor> inputs, Shape* shape = nullptr) {
  std::vector<const Tensor*> in;
  for (auto& t : inputs) in.push_back(&t);
  Tensor y(DType::F32, {1});
  Tensor* out[] = {&y};
  find_op(node.op).forward(node, in, out);
  if (shape) *shape = y.shape();
  return std::vector<float>(y.data<float>(), y.data<float>() + y.numel());
}

TEST(Gelu, MatchesTheExactAndTanhForms) {
  Tensor x(DType::F32, {4});
  const float values[] = {1.0f, -0.5f, 0.0f, 3.0f};
  std::copy(values, values + 4, x.data<float>());
  // 0.5 x (1 + erf(x / sqrt 2)) and the tanh form, evaluated in double by hand.
  const auto exact = run(Node{"g", "Gelu", {"x"}, {"y"}}, {x});
  EXPECT_NEAR(exact[0], 0.8413447460685429, 1e-7);
  EXPECT_NEAR(exact[1], -0.15426876936299344, 1e-7);
  EXPECT_EQ(exact[2], 0.0f);
  EXPECT_NEAR(exact[3], 2.9959499254093515, 1e-6);
  const auto tanh_form = run(Node{"g", "Gelu", {"x"}, {"y"}, {{"approximate", "tanh"}}}, {x});
  EXPECT_NEAR(tanh_form[0], 0.8411919906082768, 1e-7);
  EXPECT_NEAR(tanh_form[1], -0.15428599017516657, 1e-7);
  EXPECT_LOWBIT_ERROR(run(Node{"g", "Gelu", {"x"}, {"y"}, {{"approximate", "fast"}}}, {x}),
                      "attribute 'approximate' must be \"none\" or \"tanh\", got \"fast\"");
}

TEST(Mul, BroadcastsLikeNumpy) {
  // [2, 3, 4] * [3, 1]: every (i, j, k) multiplies a[i][j][k] by b[j][0].
  Tensor a = random({2, 3, 4}, 1), b = random({3, 1}, 2);
  Shape shape;
  const auto y = run(Node{"m", "Mul", {"a", "b"}, {"y"}}, {a, b}, &shape);
  ASSERT_EQ(shape, (Shape{2, 3, 4}));
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 3; ++j)
      for (int k = 0; k < 4; ++k)
        EXPECT_EQ(y[(i * 3 + j) * 4 + k], a.data<float>()[(i * 3 + j) * 4 + k] * b.data<float>()[j]);
  // Both sides broadcast: [4, 1] * [1, 5] -> [4, 5]; a scalar [1] against anything.
  Tensor c = random({4, 1}, 3), d = random({1, 5}, 4), s = random({1}, 5);
  const auto outer = run(Node{"m", "Mul", {"c", "d"}, {"y"}}, {c, d}, &shape);
  ASSERT_EQ(shape, (Shape{4, 5}));
  for (int i = 0; i < 4; ++i)
    for (int j = 0; j < 5; ++j) EXPECT_EQ(outer[i * 5 + j], c.data<float>()[i] * d.data<float>()[j]);
  const auto scaled = run(Node{"m", "Mul", {"s", "a"}, {"y"}}, {s, a}, &shape);
  ASSERT_EQ(shape, (Shape{2, 3, 4}));
  for (int i = 0; i < 24; ++i) EXPECT_EQ(scaled[i], s.data<float>()[0] * a.data<float>()[i]);
}

TEST(Mul, InfersShapesWithRunTimeDimensionsAndRejectsMismatches) {
  const Op& mul = find_op("Mul");
  const Node node{"m", "Mul", {"a", "b"}, {"y"}};
  const std::vector<Shape> batch = {{-1, 64}, {64}}, gate = {{-1, 1}, {1, 10}}, both = {{-1, 3}, {-1, 1}};
  EXPECT_EQ(mul.infer_shapes(node, batch)[0], (Shape{-1, 64}));
  EXPECT_EQ(mul.infer_shapes(node, gate)[0], (Shape{-1, 10}));
  EXPECT_EQ(mul.infer_shapes(node, both)[0], (Shape{-1, 3}));
  const std::vector<Shape> bad = {{2, 3}, {4}};
  EXPECT_LOWBIT_ERROR(mul.infer_shapes(node, bad), "inputs [2, 3] and [4] do not broadcast");
}

// In a graph, through the executor: a per-feature scale over a batch whose size is known only
// at run time.
TEST(Mul, RunsInAGraphWithARunTimeBatch) {
  Graph g;
  g.inputs.push_back({"x", DType::F32, {-1, 3}});
  g.initializers["scale"] = random({3}, 7);
  g.add_node({"m", "Mul", {"x", "scale"}, {"y"}});
  g.outputs = {"y"};
  g.validate();
  EXPECT_EQ(g.infer_shapes().at("y").shape, (Shape{-1, 3}));
  Executor run(g);
  run.input("x") = random({5, 3}, 8);
  const Tensor x = run.input("x").clone();
  run.forward();
  const Tensor& y = run.value("y");
  ASSERT_EQ(y.shape(), (Shape{5, 3}));
  for (int i = 0; i < 5; ++i)
    for (int j = 0; j < 3; ++j)
      EXPECT_EQ(y.data<float>()[i * 3 + j], x.data<float>()[i * 3 + j] * g.initializers["scale"].data<float>()[j]);
}

}  // namespace
}  // namespace lowbit
